"""An index provisioned on the session's services, with its ingest workers as processes (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from medsearch_dev.localstack import procs
from medsearch_dev.testing import provision_index

from medsearch.contracts.spec import MedicalSearchIndexSpec

# Small batches and short waits, so that tests see each step quickly.
WORKER_TUNING = {
    "MEDSEARCH_WORKER_BATCH_SIZE": "4",
    "MEDSEARCH_WORKER_MAX_WAIT_MS": "200",
    "MEDSEARCH_WORKER_RETRY_MAX_SECONDS": "2",
    "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000",
    "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000",
}


@dataclass
class IndexEnv:
    """One index on the session's broker, PostgreSQL and Milvus; ``worker`` names the worker it runs
    (``medsearch_workers.<worker>_worker``) and ``extra_env`` what that worker needs beyond the stores."""

    index: str
    store_url: str
    bootstrap: str
    milvus_uri: str
    logs: Path
    dsn: str
    worker: str = "report"
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def provision(self, spec: MedicalSearchIndexSpec) -> None:
        """Topics, the PostgreSQL schema and the Milvus collections of the index."""
        provision_index(self.index, spec, dsn=self.dsn, bootstrap=self.bootstrap, milvus_uri=self.milvus_uri)

    def worker_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MEDSEARCH_INDEX": self.index,
            "MEDSEARCH_KAFKA_BOOTSTRAP": self.bootstrap,
            "MEDSEARCH_MILVUS_URI": self.milvus_uri,
            "MEDSEARCH_POSTGRES_DSN": self.dsn,
            "MEDSEARCH_OBJECT_STORE_URL": self.store_url,
            **WORKER_TUNING,
            **self.extra_env,
        }

    def start_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        """A worker process (its output in ``<logs>/<worker>-worker-<index>.log``); ``extra``: environment."""
        with open(self.logs / f"{self.worker}-worker-{self.index}.log", "ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"medsearch_workers.{self.worker}_worker"],
                env={**self.worker_env(), **extra},
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def stop_workers(self, timeout: float = 15) -> None:
        for proc in self.workers:
            procs.stop_process(proc, timeout=timeout)
