"""``spec.privacy.deidentify: basic`` end to end with real processes: dcmtk's storescu sends to the receiver,
a report is ingested by the CLI, the real DICOM worker indexes into milvus-lite. Then the object store, Milvus
and every log are scanned: no PatientName, PatientID, birth date or original UID is found anywhere, and the
report (linked by the original StudyInstanceUID) still links to its images."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import yaml
from kafka import KafkaConsumer
from medsearch_dev.localstack import procs
from medsearch_dev.testing import read_dead_letters, wait_for
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_dicom_ingest import Env, env, model_server  # noqa: F401  # the shared real-process fixtures
from test_dicom_receiver import dcmtk, sample_folder, start_receiver, storescu  # noqa: F401  # dcmtk: fixture

from medsearch.contracts.messages import Report
from medsearch.contracts.naming import names_for
from medsearch.provision import milvus_client

pytestmark = pytest.mark.integration
SECRET = "integration-deid-secret-0123456789"
FILES = ["CT_small.dcm", "RG1_J2KR.dcm", "MR_small_RLE.dcm"]


def test_nothing_identifying_reaches_the_store_milvus_or_logs(
    dcmtk: dict[str, str], env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    spec = tmp_path / "index.yaml"
    spec.write_text(yaml.safe_dump({"apiVersion": "medsearch.io/v1alpha1", "kind": "MedicalSearchIndex",
                                    "metadata": {"name": env.index}, "spec": {"privacy": {"deidentify": "basic"}}}))
    environ = {"MEDSEARCH_INDEX_SPEC_FILE": str(spec), "MEDSEARCH_DEID_SECRET": SECRET}
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    folder = tmp_path / "study"
    files = [f for f in sample_folder(folder) if f.name in FILES]
    # One more instance whose pixels are flagged as showing identifiers: quarantined, not indexed.
    burned = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    burned.BurnedInAnnotation = "YES"
    burned.SOPInstanceUID = generate_uid(entropy_srcs=[env.index, "burned"])
    burned.file_meta.MediaStorageSOPInstanceUID = burned.SOPInstanceUID
    burned.save_as(folder / "burned.dcm")
    secrets: set[str] = set()
    for f in [*files, folder / "burned.dcm"]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for key in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID"):
            value = str(ds.get(key, "") or "").strip()
            if value:
                secrets.add(value)
    ct_study = str(pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True).StudyInstanceUID)

    receiver = start_receiver(env, tmp_path, environ=environ)
    try:
        res = storescu(dcmtk, receiver.port, [*files, folder / "burned.dcm"], tmp_path / "p.cfg")
        assert res.returncode == 0, res.stderr
        (letter,) = read_dead_letters(env.bootstrap, env.index, 1)
        assert letter.stage == "deidentify" and "BurnedInAnnotation=YES" in letter.error
        assert "/quarantine/" in letter.original["uri"]
        reports = tmp_path / "r.jsonl"
        reports.write_text(json.dumps({"report_id": "RDEID", "text": "No effusion.", "study_uid": ct_study}) + "\n")
        summary = env.ingest(reports)
        assert summary["published"] == 1
        env.start_worker(**environ)
        wait_for(lambda: env.count() == len(files) or env.count(), 180, "de-identified instances indexed")
    finally:
        procs.stop_process(receiver.proc, timeout=40)

    client = milvus_client(env.milvus_uri)
    try:
        rows = client.query(names_for(env.index).images_collection, filter="sop_instance_uid != ''",
                            output_fields=["*"], limit=100)
    finally:
        client.close()
    milvus_text = json.dumps([{k: v for k, v in r.items() if k != "embedding"} for r in rows], default=str)
    milvus_text += json.dumps(env.rows(), default=str)  # the rows as the test environment reads them back
    store_root = Path(env.store_url.removeprefix("file://"))
    blobs = [p.read_bytes() for p in store_root.rglob("*") if p.is_file()]
    logs = receiver.log_text() + "".join(p.read_text(errors="replace") for p in env.logs.glob(f"*{env.index}*"))
    for secret in sorted(secrets):
        assert secret not in milvus_text, f"{secret!r} reached Milvus"
        assert not any(secret.encode() in b for b in blobs), f"{secret!r} reached the object store"
        assert secret not in logs, f"{secret!r} reached a log"
    stored = [pydicom.dcmread(p) for p in (store_root / env.index / "dicom").glob("*.dcm")]
    assert len(stored) == len(files) and all(d.PatientIdentityRemoved == "YES" for d in stored)
    (quarantined,) = [pydicom.dcmread(p) for p in (store_root / env.index / "quarantine").glob("*.dcm")]
    assert quarantined.PatientIdentityRemoved == "YES" and quarantined.BurnedInAnnotation == "YES"

    # The report still links to its images: its StudyInstanceUID was remapped exactly like theirs.
    consumer = KafkaConsumer(names_for(env.index).reports_topic, bootstrap_servers=env.bootstrap,
                             auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=5000)
    try:
        (report,) = [Report.from_bytes(r.value) for r in consumer]
    finally:
        consumer.close()
    assert report.study_uid != ct_study
    assert report.study_uid in {str(r["study_uid"]) for r in rows}
