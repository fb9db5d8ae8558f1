"""GraphQL gateway (FastAPI + strawberry) and web client."""
