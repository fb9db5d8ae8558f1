"""`medsearch up --detach` / `status --json` / `token` / `down` as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from medsearch_dev.localstack.procs import free_port

pytestmark = pytest.mark.integration


def _medsearch(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medsearch.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_up_status_down_leaves_nothing_behind(stack_data_dir: Path) -> None:
    data_dir = stack_data_dir / "data"
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(data_dir)}
    # Ports far from the defaults so a developer's running stack does not interfere.
    offset = free_port() % 1000 + 30000 - 9092
    up = _medsearch("up", "--detach", "--weights", "random", "--port-offset", str(offset), env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        status = _medsearch("status", "--json", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        st = json.loads(status.stdout)
        names = {s["name"] for s in st["services"]}
        assert {"broker", "milvus", "dicom-receiver"} <= names
        assert all(s["healthy"] for s in st["services"]), st
        # The DICOM receiver of the stack answers C-ECHO as AE MEDSEARCH.
        from pynetdicom import AE

        scu = AE(ae_title="STATUSTEST")
        scu.add_requested_context("1.2.840.10008.1.1")
        assoc = scu.associate("127.0.0.1", 11112 + offset, ae_title="MEDSEARCH")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert st["indexes"][0]["index"] == "demo"
        assert st["indexes"][0]["images"] == 0 and st["indexes"][0]["dead_letters"] == 0
        token = _medsearch("token", env=env).stdout.strip()
        assert token == (data_dir / "token").read_text().strip()
        assert oct((data_dir / "token").stat().st_mode & 0o777) == "0o600"
        # A second `up` on the same data dir refuses clearly.
        again = _medsearch("up", "--detach", "--weights", "random", "--port-offset", str(offset), env=env)
        assert again.returncode != 0 and "already running" in again.stderr
        pid = int((data_dir / "run" / "supervisord.pid").read_text())
        children = _children_of(pid)
        assert len(children) == len(names)
    finally:
        down = _medsearch("down", env=env)
    assert down.returncode == 0, down.stderr
    for child in children:
        assert not Path(f"/proc/{child}").exists(), f"process {child} left behind"
    assert not Path(f"/proc/{pid}").exists()
    assert _medsearch("status", "--json", env=env).returncode == 1


def test_up_refuses_a_taken_port(stack_data_dir: Path) -> None:
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(stack_data_dir / "data")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = _medsearch("up", "--detach", "--weights", "random", "--kafka-port", str(port),
                         "--port-offset", str(free_port() % 1000 + 31000 - 9092), env=env)
    assert res.returncode == 1
    assert f"broker port {port}" in res.stderr and "already in use" in res.stderr
