"""De-identification (spec.privacy.deidentify: basic): the profile's effects, consistent UID remapping,
burned-in annotation quarantine, and the Publisher applying it before anything is stored."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
import yaml
from medsearch_dev.testing import FakeKafkaProducer
from pydicom.data import get_testdata_file

from medsearch import store
from medsearch.contracts.messages import DeadLetter, DicomObject, Report
from medsearch.dicomnet.deid import Deidentifier, Quarantined, deidentifier_for
from medsearch.producer import Publisher, PublishError

SECRET = "a-test-secret-of-enough-length"


def _raw(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]


def test_basic_profile_removes_identifiers_and_remaps_uids_consistently() -> None:
    src = pydicom.dcmread(io.BytesIO(_raw("CT_small.dcm")))
    d = Deidentifier(SECRET)
    out = d.apply(_raw("CT_small.dcm"))
    ds = pydicom.dcmread(io.BytesIO(out))
    assert str(ds.PatientName) != str(src.PatientName) and ds.PatientID != src.PatientID
    assert not ds.get("PatientBirthDate")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert ds[key].value != src[key].value
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PatientIdentityRemoved == "YES" and "Basic Application Level" in ds.DeidentificationMethod
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID and ds.PixelData == src.PixelData
    assert not any(e.tag.is_private for e in ds)
    # Same secret: same bytes and UIDs (re-sends deduplicate; studies stay together); reports map alike.
    assert Deidentifier(SECRET).apply(_raw("CT_small.dcm")) == out
    assert d.map_uid(str(src.StudyInstanceUID)) == ds.StudyInstanceUID
    # Another secret (another index): other UIDs.
    other = pydicom.dcmread(io.BytesIO(Deidentifier("another-secret-0123456789").apply(_raw("CT_small.dcm"))))
    assert other.StudyInstanceUID != ds.StudyInstanceUID
    # Compressed pixel data (JPEG 2000) is carried over untouched.
    j2k = pydicom.dcmread(io.BytesIO(d.apply(_raw("RG1_J2KR.dcm"))))
    assert j2k.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"


def test_burned_in_annotation_is_quarantined_unless_configured_otherwise() -> None:
    ds = pydicom.dcmread(io.BytesIO(_raw("CT_small.dcm")))
    ds.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(Quarantined, match="BurnedInAnnotation=YES") as q:
        Deidentifier(SECRET).apply(buf.getvalue())
    assert pydicom.dcmread(io.BytesIO(q.value.data)).PatientIdentityRemoved == "YES"
    assert Deidentifier(SECRET, quarantine_burned_in_annotation=False).apply(buf.getvalue())


def _spec_file(tmp_path: Path, index: str, mode: str) -> Path:
    path = tmp_path / "index.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "medsearch.io/v1alpha1", "kind": "MedicalSearchIndex",
                                    "metadata": {"name": index}, "spec": {"privacy": {"deidentify": mode}}}))
    return path


def test_publisher_deidentifies_before_storing_and_quarantines(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEARCH_INDEX_SPEC_FILE", str(_spec_file(tmp_path, "priv", "basic")))
    monkeypatch.delenv("MEDSEARCH_DEID_SECRET", raising=False)
    monkeypatch.setenv("MEDSEARCH_DATA_DIR", str(tmp_path / "nodata"))
    with pytest.raises(PublishError, match="MEDSEARCH_DEID_SECRET"):
        Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/o", index="priv", producer=FakeKafkaProducer())
    monkeypatch.setenv("MEDSEARCH_DEID_SECRET", SECRET)
    kafka = FakeKafkaProducer()
    pub = Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/o", index="priv", producer=kafka)
    src = pydicom.dcmread(io.BytesIO(_raw("CT_small.dcm")))
    res = pub.publish_dicom(_raw("CT_small.dcm"), filename="ct")
    assert res.status == "published" and res.uri
    stored = store.get_bytes(res.uri)
    for secret in (str(src.PatientName), str(src.PatientID), str(src.StudyInstanceUID), str(src.SOPInstanceUID)):
        assert secret.encode() not in stored
    ds = pydicom.dcmread(io.BytesIO(stored))
    pub.publish_report(report_id="R1", text="Normal.", study_uid=str(src.StudyInstanceUID))
    burned = pydicom.dcmread(io.BytesIO(_raw("MR_small.dcm")))
    burned.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    burned.save_as(buf)
    q = pub.publish_dicom(buf.getvalue(), filename="burned")
    assert q.status == "quarantined" and q.uri and "/priv/quarantine/" in q.uri
    pub.flush()
    topics = [t for t, _, _ in kafka.sent]
    assert topics == ["priv.dicom", "priv.reports", "priv.dlq"]
    msg = DicomObject.from_bytes(kafka.sent[0][2])
    assert msg.study_uid == ds.StudyInstanceUID
    assert Report.from_bytes(kafka.sent[1][2]).study_uid == ds.StudyInstanceUID  # the report still links
    letter = DeadLetter.from_bytes(kafka.sent[2][2])
    assert letter.stage == "deidentify" and "BurnedInAnnotation" in letter.error and letter.topic == "priv.dicom"
    assert json.dumps(letter.original).find(str(burned.SOPInstanceUID)) == -1
    # Another index name in the spec file: no de-identification for this one.
    assert deidentifier_for("other", data_dir=None) is None
    # A publisher that was not given the spec (a gateway, a hand-run CLI) applies the policy recorded in the store.
    monkeypatch.delenv("MEDSEARCH_INDEX_SPEC_FILE")
    blind = Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/o", index="priv", producer=kafka)
    assert blind.deidentifier is not None
    assert Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/other", index="priv",
                     producer=kafka).deidentifier is None
