"""``python -m medsearch_operator`` / ``medsearch-operator``: run the kopf operator."""

from __future__ import annotations

import logging


def main() -> None:
    import kopf

    from medsearch_operator import handlers  # registers the handlers with kopf's default registry
    from medsearch_operator.settings import OperatorSettings

    settings = OperatorSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespaces = [settings.operator_namespace] if settings.operator_namespace else []
    liveness = (f"http://{settings.operator_health_host}:{settings.operator_health_port}/healthz"
                if settings.operator_health_port else None)
    logging.getLogger(__name__).info("watching %s", namespaces or "all namespaces")
    del handlers
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness)


if __name__ == "__main__":
    main()
