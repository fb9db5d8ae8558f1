"""An index provisioned on the session's services, with its ingest workers as processes (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from medsearch_dev.localstack import procs
from medsearch_dev.testing import provision_index

from medsearch.contracts.spec import API_GROUP, API_VERSION, KIND, MedicalSearchIndexSpec

# Small batches (the spec's, see ``spec_file``) and short waits, so that tests see each step quickly.
BATCH_SIZE = 4
WORKER_TUNING = {
    "MEDSEARCH_WORKER_MAX_WAIT_MS": "200",
    "MEDSEARCH_WORKER_RETRY_MAX_SECONDS": "2",
    "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000",
    "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000",
}


def spec_file(path: Path, index: str, spec: MedicalSearchIndexSpec, **batch_sizes: int) -> Path:
    """Write what the test's spec states (as ``MEDSEARCH_INDEX_SPEC_FILE`` holds it) to ``path``, with the batch size
    of each kind of worker in ``batch_sizes`` (``dicom=1``) unless the spec states one."""
    body = spec.model_dump(by_alias=True, mode="json", exclude_unset=True)
    for kind, size in batch_sizes.items():
        body.setdefault("workers", {}).setdefault(kind, {}).setdefault("batchSize", size)
    doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": index}, "spec": body}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


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
    spec: MedicalSearchIndexSpec = field(default_factory=MedicalSearchIndexSpec)

    def provision(self, spec: MedicalSearchIndexSpec) -> None:
        """Topics, the PostgreSQL schema and the Milvus collections of the index; its workers read ``spec``."""
        self.spec = spec
        provision_index(self.index, spec, dsn=self.dsn, bootstrap=self.bootstrap, milvus_uri=self.milvus_uri)

    def worker_env(self, batch_size: int = BATCH_SIZE) -> dict[str, str]:
        spec = spec_file(self.logs / f"{self.index}-spec-b{batch_size}.yaml", self.index, self.spec,
                         dicom=batch_size, report=batch_size)
        return {
            **os.environ,
            "MEDSEARCH_INDEX": self.index,
            "MEDSEARCH_INDEX_SPEC_FILE": str(spec),
            "MEDSEARCH_KAFKA_BOOTSTRAP": self.bootstrap,
            "MEDSEARCH_MILVUS_URI": self.milvus_uri,
            "MEDSEARCH_POSTGRES_DSN": self.dsn,
            "MEDSEARCH_OBJECT_STORE_URL": self.store_url,
            **WORKER_TUNING,
            **self.extra_env,
        }

    def start_worker(self, batch_size: int = BATCH_SIZE, **extra: str) -> subprocess.Popen[bytes]:
        """A worker process (its output in ``<logs>/<worker>-worker-<index>.log``) taking ``batch_size`` messages
        at a time unless the spec states another; ``extra``: environment."""
        with open(self.logs / f"{self.worker}-worker-{self.index}.log", "ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"medsearch_workers.{self.worker}_worker"],
                env={**self.worker_env(batch_size), **extra},
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
