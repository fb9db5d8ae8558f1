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

import asyncio
import logging
import os
import threading
from concurrent import futures
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the handlers' string annotations here
from fastapi.responses import ORJSONResponse, Response
from grpc import aio
from kserve import ModelServer
from kserve import model_server as kserve_model_server
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from medsearch.contracts.settings import ModelServerSettings

from .model import EmbeddingModel, NotReady
from .protocol import parse_infer_request

log = logging.getLogger("medsearch_model_server")


class ModelsReadyDataPlane(DataPlane):  # type: ignore[misc]  # kserve is untyped
    """Server readiness = every registered model is ready (KServe's default is "the process is up")."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        ready = [await self.model_registry.is_model_ready(name) for name in models]
        return bool(models) and all(ready) and bool(await super().ready())


def install_routes(app: Any, dataplane: Any, model: EmbeddingModel) -> None:
    """Register the metadata and fast-infer routes on KServe's FastAPI app (before KServe adds its own)."""

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


class EmbeddingServer(ModelServer):  # type: ignore[misc]  # kserve is untyped
    """KServe's ModelServer for one embedding model, listening on ``cfg.host``.

    KServe 0.21 has no listen-address option (its REST server sets ``host="0.0.0.0"`` on its uvicorn config, its
    gRPC server listens on ``[::]``), so :meth:`start` does what ``ModelServer.start`` does with KServe's own
    classes, giving both servers the host: the REST server's public uvicorn ``config`` and a GRPCServer whose
    ``start`` binds the host. Readiness is every registered model's (KServe's default: "the process is up").
    """

    def __init__(self, model: EmbeddingModel, cfg: ModelServerSettings) -> None:
        super().__init__(http_port=cfg.http_port, grpc_port=cfg.grpc_port, enable_latency_logging=False)
        self.host = cfg.host
        self.dataplane = ModelsReadyDataPlane(model_registry=self.registered_models)
        # Registered while still loading: KServe then reports it "not ready" until load() succeeds.
        self.register_model(model)

    def start(self, models: list[Any] | None = None) -> None:
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            grace_period=self.grace_period, event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.host
        self._grpc_server = HostGRPCServer(
            self.host, self.grpc_port, self.dataplane, self.model_repository_extension,
            kwargs=vars(kserve_model_server.args), grace_period=self.grace_period,  # KServe's parsed flags
        )
        self.servers = [self._rest_server.start(), self._grpc_server.start(self.max_threads)]
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


class HostGRPCServer(GRPCServer):  # type: ignore[misc]  # kserve is untyped
    """KServe's gRPC server (its servicer, interceptors, message sizes and stop) listening on ``host``."""

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if host in ("0.0.0.0", "::"):
            host = "::"  # every interface, IPv4 and IPv6, as KServe's own gRPC server listens
        self.address = f"[{host}]:{self._port}" if ":" in host else f"{host}:{self._port}"

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[(f"grpc.{k}", self._kwargs[f"grpc_{k}"])
                     for k in ("max_send_message_length", "max_receive_message_length")],
        )
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(self.address)
        log.info("gRPC server listening on %s", self.address)
        await self._server.start()
        await self._server.wait_for_termination()


def serve(cfg: ModelServerSettings) -> None:
    """Run the model server until SIGTERM/SIGINT (blocks)."""
    model = EmbeddingModel(cfg)
    server = EmbeddingServer(model, cfg)
    # KServe's timing middleware logs three INFO lines per request; keep them for --log-level DEBUG only.
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    install_routes(kserve_model_server.app, server.dataplane, model)

    def load_in_background() -> None:
        if model.load():
            log.info("model %s is ready (HTTP %s:%d, gRPC %d)", model.name, cfg.host, cfg.http_port, cfg.grpc_port)
        elif cfg.exit_on_load_failure:
            # Nothing was served: exit at once (a signal could arrive before the servers handle signals).
            log.error("exiting: --exit-on-load-failure is set")
            logging.shutdown()
            os._exit(3)

    threading.Thread(target=load_in_background, name="model-load", daemon=True).start()
    server.start()
