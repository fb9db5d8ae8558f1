"""The shared contracts: index spec, names, messages, collection schemas, settings docs."""

from __future__ import annotations

import hashlib
import json
import re
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
from medsearch.contracts.naming import KAFKA_TOPIC_MAX, MILVUS_NAME_MAX, PG_IDENTIFIER_MAX, IndexNames
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
    # The local stack's names are those written before namespaces were known: its data stays where it is.
    assert (n.pg_schema, n.dicom_consumer_group, n.report_consumer_group, n.audit_topic, n.object_prefix) == (
        "medsearch_chest_xray", "medsearch-chest-xray-dicom", "medsearch-chest-xray-report", "chest-xray.audit",
        "chest-xray")
    assert names_for("chest-xray", None) == names_for("chest-xray", "") == n


def _external(n: IndexNames) -> set[str]:
    return {*n.topics, n.audit_topic, n.dicom_consumer_group, n.report_consumer_group, *n.collections, n.pg_schema,
            n.object_prefix}


def test_names_are_scoped_by_namespace() -> None:
    n = names_for("demo", "radiology")
    assert n.topics == ("radiology.demo.dicom", "radiology.demo.reports", "radiology.demo.dlq")
    assert n.dicom_consumer_group == "medsearch-radiology.demo-dicom"
    assert n.object_prefix == "radiology/demo"
    h = hashlib.sha256(b"radiology/demo").hexdigest()[:8]
    assert n.pg_schema == f"medsearch_radiology__demo_{h}"
    assert n.collections == (f"medsearch_radiology__demo_{h}_images", f"medsearch_radiology__demo_{h}_reports")
    # Two same-named indexes in two namespaces, and the local one, share no external name.
    other, local = names_for("demo", "cardiology"), names_for("demo")
    assert not _external(n) & _external(other)
    assert not _external(n) & _external(local) and not _external(other) & _external(local)


@pytest.mark.parametrize(("a", "b"), [
    (("a--b", "c"), ("a", "b--c")),      # both read a__b__c once '-' becomes '_': the hash tells them apart
    (("a-b", "c-d"), ("a-b-c", "d")),
])
def test_scoped_names_tell_apart_pairs_that_read_alike(a: tuple[str, str], b: tuple[str, str]) -> None:
    na, nb = names_for(a[1], a[0]), names_for(b[1], b[0])
    assert not _external(na) & _external(nb)


def test_scoped_names_fit_the_stores_limits() -> None:
    n = names_for("x" + "y" * 39, "n" * 63)   # the longest index name in the longest namespace
    assert all(len(t) <= KAFKA_TOPIC_MAX and re.fullmatch(r"[a-zA-Z0-9._-]+", t) for t in (*n.topics, n.audit_topic))
    assert all(len(c) <= MILVUS_NAME_MAX and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c) for c in n.collections)
    assert len(n.pg_schema.encode()) == PG_IDENTIFIER_MAX and re.fullmatch(r"[a-z_][a-z0-9_]*", n.pg_schema)
    # A shortened schema keeps the hash: two long namespaces differing only at the end stay apart.
    assert names_for("demo", "n" * 62 + "a").pg_schema != names_for("demo", "n" * 62 + "b").pg_schema
    # A namespace that starts with a digit still gives valid Milvus and PostgreSQL names.
    d = names_for("demo", "1team")
    assert d.collections[0].startswith("medsearch_1team__demo_") and d.pg_schema.startswith("medsearch_1team__demo_")


@pytest.mark.parametrize("namespace", ["Team", "team_a", "-a", "a" * 64, "a.b"])
def test_bad_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(SpecError, match=r"metadata\.namespace"):
        names_for("demo", namespace)


def test_settings_carry_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsearch.contracts.settings import WorkerSettings

    monkeypatch.setenv("MEDSEARCH_INDEX", "demo")
    monkeypatch.delenv("MEDSEARCH_INDEX_NAMESPACE", raising=False)
    assert WorkerSettings().index_names() == names_for("demo")
    monkeypatch.setenv("MEDSEARCH_INDEX_NAMESPACE", "radiology")
    assert WorkerSettings().index_names() == names_for("demo", "radiology")


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
