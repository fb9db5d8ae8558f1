"""The readiness probes shared by the gateway's /readyz and the local stack answer True or False, never raise."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medsearch.health import http_ready, milvus_ready


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_ready_is_a_200(server: str) -> None:
    assert http_ready(f"{server}/ready") is True
    assert http_ready(f"{server}/other") is False
    assert http_ready(f"http://127.0.0.1:{_closed_port()}/ready", timeout=1) is False


def test_milvus_not_answering_is_not_ready() -> None:
    assert milvus_ready(f"http://127.0.0.1:{_closed_port()}") is False
