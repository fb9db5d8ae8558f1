"""medsearch development tools: the local stack and the test helpers. No deployable imports this package."""
