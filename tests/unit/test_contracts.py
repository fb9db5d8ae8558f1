"""The shared contracts: index spec, names, messages, collection schemas, settings docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsearch.contracts import DeadLetter, DicomObject, MessageError, Report, names_for, parse_index, parse_spec
from medsearch.contracts.collections import (
    IMAGE_ANN_FIELDS,
    IMAGE_FIELDS,
    REPORT_ANN_FIELDS,
    REPORT_FIELDS,
    images_schema,
    reports_schema,
    scalar_indexes,
)
from medsearch.contracts.spec import MedicalSearchIndexSpec, SpecError, load_index_file

ROOT = Path(__file__).resolve().parents[2]


def test_spec_defaults_and_camel_case_round_trip() -> None:
    spec = parse_spec({})
    assert spec.embedding.dimension == 1024 and spec.embedding.input_size == 224
    assert spec.deletion_policy == "Retain"
    dumped = spec.model_dump(by_alias=True)
    assert "deletionPolicy" in dumped and "inputSize" in dumped["embedding"]
    assert parse_spec(dumped) == spec


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kafka": {"partitions": 0}}, "spec.kafka.partitions"),
        ({"embedding": {"dimension": 512}}, "spec.embedding.dimension"),
        ({"images": {"metric": "HAMMING"}}, "spec.images.metric"),
        ({"deletionPolicy": "Destroy"}, "spec.deletionPolicy"),
        ({"predictor": {"minReplicas": 3, "maxReplicas": 2}}, "spec.predictor.maxReplicas"),
        ({"kafka": {"partitons": 3}}, "spec.kafka.partitons"),
        ({"embedding": {"weights": "http://models.example.org/m.pth"}}, "spec.embedding.weights"),
        ({"embedding": {"sha256": "not-a-digest"}}, "spec.embedding.sha256"),
        ({"predictor": {"storageUri": "http://models.example.org/m.onnx"}}, "spec.predictor.storageUri"),
    ],
)
def test_bad_spec_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert field in str(err.value)


@pytest.mark.parametrize("name", ["Demo", "1abc", "a_b", "x" * 41, "", "-a"])
def test_bad_index_names(name: str) -> None:
    with pytest.raises(SpecError, match=r"metadata\.name"):
        parse_index({"kind": "MedicalSearchIndex", "metadata": {"name": name}})


def test_names() -> None:
    n = names_for("chest-xray")
    assert n.topics == ("chest-xray.dicom", "chest-xray.reports", "chest-xray.dlq")
    assert n.collections == ("chest_xray_images", "chest_xray_reports")


def test_load_index_file(tmp_path: Path) -> None:
    p = tmp_path / "i.yaml"
    p.write_text("kind: Other\n---\napiVersion: medsearch.io/v1alpha1\nkind: MedicalSearchIndex\n"
                 "metadata: {name: chest}\nspec: {kafka: {partitions: 2}}\n")
    idx = load_index_file(p)
    assert idx.name == "chest" and idx.spec.kafka.partitions == 2
    p.write_text("kind: MedicalSearchIndex\nmetadata: {name: chest}\nspec: {kafka: {partitions: -1}}\n")
    with pytest.raises(SpecError, match=r"i\.yaml: spec\.kafka\.partitions"):
        load_index_file(p)


def test_messages_round_trip_and_validation() -> None:
    msg = DicomObject(index="demo", uri="file:///x.dcm", sha256="a" * 64, study_uid="1.2")
    assert DicomObject.from_bytes(msg.to_bytes()) == msg
    assert json.loads(msg.to_bytes())["schema_version"] == 1
    with pytest.raises(MessageError, match="sha256"):
        DicomObject.from_bytes(b'{"index":"demo","uri":"u","sha256":"nothex"}')
    with pytest.raises(MessageError):
        Report.from_bytes(b'{"index":"demo","report_id":"r","text":"a","uri":"b"}')
    with pytest.raises(MessageError, match="sha256"):  # a claim check without its hash
        Report.from_bytes(b'{"index":"demo","report_id":"r","uri":"b"}')
    with pytest.raises(MessageError, match="text"):  # version 1 (text inline) is not accepted any more
        Report.from_bytes(b'{"schema_version":1,"index":"demo","report_id":"r","text":"a"}')
    with pytest.raises(MessageError):
        Report.from_bytes(b"\xff\xfe not json")


def test_dead_letter_redacts_text() -> None:
    raw = json.dumps({"index": "demo", "report_id": "r1", "text": "Patient John Doe has effusion"}).encode()
    dl = DeadLetter.for_message(raw, topic="demo.reports", stage="analyze", error="boom", attempts=3)
    assert "John" not in dl.to_bytes().decode()
    assert dl.original["report_id"] == "r1"
    assert DeadLetter.for_message(b"\x00\x01", topic="t", stage="decode_message", error="e",
                                  attempts=1).original == {"raw_bytes": 2}


def test_dead_letter_redacts_every_text_bearing_field() -> None:
    import json

    raw = json.dumps({
        "schema_version": 1, "index": "demo", "report_id": "r1", "uri": "file:///o/r1.txt", "study_uid": "1.2.3",
        "text": "Patient John Doe has effusion",
        "impression": "John Doe: effusion",  # a field a newer producer added
        "sections": {"findings": "John Doe lungs", "extra": ["John Doe", {"note": "Doe"}, 7]},
        "report_id_typo": "Doe", "count": 3, "flag": True, "none": None,
    }).encode()
    dl = DeadLetter.for_message(raw, topic="demo.reports", stage="analyze", error="boom", attempts=1)
    assert "Doe" not in dl.to_bytes().decode()
    o = dl.original
    assert (o["index"], o["report_id"], o["uri"], o["study_uid"]) == ("demo", "r1", "file:///o/r1.txt", "1.2.3")
    assert o["text"] == "<29 characters redacted>" and o["impression"] == "<18 characters redacted>"
    assert o["sections"] == {"findings": "<14 characters redacted>",
                             "extra": ["<8 characters redacted>", {"note": "<3 characters redacted>"}, 7]}
    assert (o["count"], o["flag"], o["none"]) == (3, True, None)
    long_id = DeadLetter.for_message(json.dumps({"report_id": "x" * 5000}).encode(), topic="t", stage="analyze",
                                     error="e", attempts=1)
    assert long_id.original["report_id"] == "<5000 characters redacted>"


def test_collection_schemas_build() -> None:
    spec = MedicalSearchIndexSpec()
    img = images_schema(spec)
    rep = reports_schema(spec)
    assert [f.name for f in img.fields] == list(IMAGE_ANN_FIELDS)  # Milvus: the ANN part of the records only
    assert [f.name for f in rep.fields] == list(REPORT_ANN_FIELDS)
    assert set(IMAGE_ANN_FIELDS) <= {f.name for f in IMAGE_FIELDS}
    assert set(REPORT_ANN_FIELDS) <= {f.name for f in REPORT_FIELDS}
    assert ("icd10_positive", "INVERTED") in scalar_indexes("reports")
    pks = [f.name for f in IMAGE_FIELDS if f.is_primary] + [f.name for f in REPORT_FIELDS if f.is_primary]
    assert pks == ["sop_instance_uid", "report_id"]


def test_configuration_doc_is_current() -> None:
    from medsearch.configdoc import render

    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed.strip() == render().strip(), "run: medsearch config docs > docs/configuration.md"
