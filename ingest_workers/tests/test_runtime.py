"""The worker runtime: the spec is the only source of a worker's index-level options, the signal handlers are
installed once for the whole process life, what was registered is closed on leaving."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from medsearch_workers import runtime
from medsearch_workers.runtime import load_spec, worker_runtime

from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import MedicalSearchIndexSpec, parse_spec


def _spec_file(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / "index.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "medsearch.io/v1alpha1", "kind": "MedicalSearchIndex",
                                    "metadata": {"name": name}, "spec": spec}))
    return path


def test_index_level_options_come_from_the_spec_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _spec_file(tmp_path, "chest", {"workers": {"dicom": {"batchSize": 5, "maxAttempts": 4}},
                                          "nlp": {"backend": "transformers", "model": "/models/ner"}})
    # What used to override the spec from the environment is no setting any more.
    for name, value in {"MEDSEARCH_WORKER_BATCH_SIZE": "64", "MEDSEARCH_WORKER_MAX_ATTEMPTS": "9",
                        "MEDSEARCH_NLP_BACKEND": "lexicon", "MEDSEARCH_NLP_MODEL": "other"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MEDSEARCH_INDEX_SPEC_FILE", str(path))
    settings = WorkerSettings(index="chest")
    assert not {"worker_batch_size", "worker_max_attempts", "nlp_backend", "nlp_model"} & set(settings.model_dump())
    rt = worker_runtime("dicom", settings)
    assert (rt.worker.batch_size, rt.worker.max_attempts) == (5, 4)
    assert (rt.spec.nlp.backend, rt.spec.nlp.model) == ("transformers", "/models/ner")
    assert worker_runtime("report", settings).worker.batch_size == 32  # the report worker's default
    # Without a file: the defaults of the index.
    assert load_spec(WorkerSettings(index="chest", index_spec_file=None)) == MedicalSearchIndexSpec()


def test_consume_runs_the_loop_with_the_spec_options_on_the_kinds_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    closed: list[str] = []

    class _Ledger:
        def close(self) -> None:
            closed.append("ledger")

    monkeypatch.setattr(runtime, "run_consumer", lambda **kw: calls.append(kw))
    monkeypatch.setattr(runtime, "worker_ledger", lambda settings: _Ledger())
    spec = parse_spec({"workers": {"dicom": {"batchSize": 3, "maxAttempts": 5, "maxPollIntervalSeconds": 45},
                                   "report": {"batchSize": 7}}})
    settings = WorkerSettings(index="chest", index_namespace="radiology")
    for kind in ("dicom", "report"):
        with worker_runtime(kind, settings, spec=spec, consumer_options={"x": 1}) as rt:
            rt.consume(lambda batch: [])
    dicom, report = calls
    assert (dicom["topic"], dicom["group_id"]) == (rt.names.dicom_topic, rt.names.dicom_consumer_group)
    assert (dicom["batch_size"], dicom["max_attempts"], dicom["consumer_options"]) == (3, 5, {"x": 1})
    assert (report["topic"], report["group_id"]) == (rt.names.reports_topic, rt.names.report_consumer_group)
    assert (report["batch_size"], report["max_attempts"]) == (7, 3)
    assert (dicom["max_poll_interval_seconds"], report["max_poll_interval_seconds"]) == (45, 300)
    assert report["dlq_topic"] == rt.names.dlq_topic and report["dicom_topic"] == rt.names.dicom_topic
    assert report["worker_name"] == f"report-worker-{os.getpid()}" and report["stop"] is rt.stop
    assert closed == ["ledger", "ledger"]


def test_signals_stop_the_worker_from_entering_the_runtime_to_leaving_it() -> None:
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM)
    closed: list[str] = []
    rt = worker_runtime("dicom", WorkerSettings(), spec=MedicalSearchIndexSpec())
    assert signal.getsignal(signal.SIGTERM) is before  # nothing installed by building it
    with rt:
        rt.closing(lambda: closed.append("client"))
        rt.closing(lambda: closed.append("writer"))
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. while waiting for the model server
        assert rt.stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before
    assert closed == ["writer", "client"]


def test_a_signal_handler_is_not_installed_outside_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def enter() -> None:
        with worker_runtime("report", WorkerSettings(), spec=MedicalSearchIndexSpec()):
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=enter)
    t.start()
    t.join(10)
    assert seen == [before]
