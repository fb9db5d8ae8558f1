"""Starting the KServe ModelServer with the embedding model.

The model loads in a background thread: the HTTP/gRPC servers answer liveness at once, readiness
(``/v2/health/ready``, ``/v2/models/<name>/ready``) turns true only after the weights are loaded, and stays false
(with the reason in the logs and in ``GET /v2/models/<name>``) if they cannot be loaded.

Two REST routes are put in front of KServe's own: ``GET /v2/models/<name>`` (adds ``parameters`` — weights kind
and version, backend, input size — and the load state to the OIP metadata) and ``POST /v2/models/<name>/infer``
(a parser that keeps the binary tensor extension binary; see :mod:`.protocol`). Everything else — v1, gRPC,
health, ``/metrics`` — is KServe's.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the handlers' string annotations here
from fastapi.responses import ORJSONResponse, Response

from .config import ServerConfig
from .model import EmbeddingModel

log = logging.getLogger("medsearch_model_server")


def _models_ready_dataplane() -> type:
    from kserve.protocol.dataplane import DataPlane

    class ModelsReadyDataPlane(DataPlane):  # type: ignore[misc]  # kserve is untyped
        """Server readiness = every registered model is ready (KServe's default is "the process is up")."""

        async def ready(self) -> bool:
            models = self.model_registry.get_models()
            if not models:
                return False
            for name in models:
                if not await self.model_registry.is_model_ready(name):
                    return False
            return bool(await super().ready())

    return ModelsReadyDataPlane


def install_routes(app: Any, dataplane: Any, model: EmbeddingModel) -> None:
    """Register the metadata and fast-infer routes on KServe's FastAPI app (before KServe adds its own)."""
    from .model import NotReady
    from .protocol import parse_infer_request

    async def model_metadata(model_name: str) -> Any:
        if model_name == model.name:
            return ORJSONResponse(model.metadata())
        return ORJSONResponse(await dataplane.model_metadata(model_name))

    async def infer(request: Request, model_name: str) -> Response:
        if not await dataplane.model_ready(model_name, True):
            detail = model.load_error if model_name == model.name and model.load_error else "weights still loading"
            raise NotReady(model_name, detail)
        body = await request.body()
        infer_request = parse_infer_request(body, request.headers.get("inference-header-content-length"), model_name)
        response, _ = await dataplane.infer(model_name=model_name, request=infer_request, headers=dict(request.headers))
        payload, json_len = response.to_rest()
        if json_len is not None:
            return Response(
                content=payload,
                media_type="application/octet-stream",
                headers={"inference-header-content-length": str(json_len)},
            )
        return ORJSONResponse(payload)

    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"])


def bind_host(host: str) -> None:
    """Make KServe's REST and gRPC servers listen on ``host`` (KServe 0.21 hard-codes 0.0.0.0 / [::]).

    Both servers are created inside ``ModelServer.start``; the REST one gets its uvicorn config patched after
    construction, the gRPC one gets its ``add_insecure_port`` address rewritten.
    """
    if host in ("0.0.0.0", "::", "[::]"):
        return
    import types

    from grpc import aio
    from kserve import model_server as kserve_model_server
    from kserve.protocol.grpc import server as kserve_grpc_server

    rest_cls = kserve_model_server.RESTServer

    class HostRESTServer(rest_cls):  # type: ignore[misc,valid-type]  # kserve is untyped
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    def make_grpc_server(*args: Any, **kwargs: Any) -> Any:
        srv = aio.server(*args, **kwargs)
        add_port = srv.add_insecure_port
        srv.add_insecure_port = lambda address: add_port(address.replace("[::]", host, 1))
        return srv

    kserve_model_server.RESTServer = HostRESTServer  # type: ignore[misc]  # the class ModelServer.start uses
    kserve_grpc_server.aio = types.SimpleNamespace(server=make_grpc_server)  # only aio.server is used there


def serve(cfg: ServerConfig, host: str = "0.0.0.0") -> None:
    """Run the model server until SIGTERM/SIGINT (blocks)."""
    import kserve
    from kserve import model_server as kserve_model_server

    bind_host(host)

    model = EmbeddingModel(cfg)
    server = kserve.ModelServer(
        http_port=cfg.http_port,
        grpc_port=cfg.grpc_port,
        enable_grpc=True,
        enable_latency_logging=False,
    )
    # KServe's timing middleware logs three INFO lines per request; keep them for --log-level DEBUG only.
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    # KServe's server-level readiness is always true; ours waits for the model (REST /v2/health/ready and gRPC).
    server.dataplane = _models_ready_dataplane()(model_registry=server.registered_models)
    # Registered while still loading: KServe then reports it "not ready" until load() succeeds.
    server.register_model(model)
    install_routes(kserve_model_server.app, server.dataplane, model)

    def load_in_background() -> None:
        if model.load():
            log.info("model %s is ready (HTTP %d, gRPC %d)", model.name, cfg.http_port, cfg.grpc_port)
        elif cfg.exit_on_load_failure:
            # Nothing was served: exit at once (a signal could arrive before the servers handle signals).
            log.error("exiting: --exit-on-load-failure is set")
            logging.shutdown()
            os._exit(3)

    threading.Thread(target=load_in_background, name="model-load", daemon=True).start()
    server.start([])
