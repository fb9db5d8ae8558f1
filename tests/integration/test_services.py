"""The integration fixtures start real services: Tansu (Kafka protocol) and a milvus-lite server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medsearch.contracts import names_for
from medsearch.contracts.collections import IMAGE_ANN_FIELDS, IMAGE_VECTOR, REPORT_ANN_FIELDS, REPORT_VECTOR, ann_row
from medsearch.contracts.spec import MedicalSearchIndexSpec, parse_spec
from medsearch.provision import (
    count_rows,
    delete_topics,
    drop_collections,
    ensure_collections,
    ensure_topics,
    kafka_admin,
    milvus_client,
    topic_partitions,
)

pytestmark = pytest.mark.integration


def test_produce_consume_with_consumer_group(kafka_bootstrap: str, unique_index: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    admin = kafka_admin(kafka_bootstrap)
    ensure_topics(admin, unique_index, MedicalSearchIndexSpec())
    topic = names_for(unique_index).dicom_topic
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(10):
        producer.send(topic, key=f"study-{i % 3}".encode(), value=f"m{i}".encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{unique_index}", auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < 10 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            seen.extend(r.value for r in records)
    consumer.commit()
    consumer.close()
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(10))
    admin.close()


def test_ensure_topics_grows_and_refuses_shrink(kafka_bootstrap: str, unique_index: str) -> None:
    admin = kafka_admin(kafka_bootstrap)
    names = names_for(unique_index)
    first = ensure_topics(admin, unique_index, parse_spec({"kafka": {"partitions": 2}}))
    assert sorted(first.created) == sorted(names.topics)
    again = ensure_topics(admin, unique_index, parse_spec({"kafka": {"partitions": 2}}))
    assert again.created == [] and sorted(again.unchanged) == sorted(names.topics)
    grown = ensure_topics(admin, unique_index, parse_spec({"kafka": {"partitions": 4}}))
    if grown.ok:
        assert sorted(grown.updated) == sorted(names.topics)
        assert set(topic_partitions(admin, list(names.topics)).values()) == {4}
    else:  # Tansu 0.6 has no CreatePartitions: said as a condition, partitions unchanged
        assert [p.reason for p in grown.problems] == ["PartitionGrowthUnsupported"]
        assert set(topic_partitions(admin, list(names.topics)).values()) == {2}
    shrink = ensure_topics(admin, unique_index, parse_spec({"kafka": {"partitions": 1}}))
    assert not shrink.ok and {p.reason for p in shrink.problems} == {"PartitionShrinkRefused"}
    assert {p.field for p in shrink.problems} == {"spec.kafka.partitions"}
    assert delete_topics(admin, unique_index)
    admin.close()


def test_collections_create_insert_search(milvus_uri: str, unique_index: str) -> None:
    client = milvus_client(milvus_uri)
    spec = MedicalSearchIndexSpec()
    res = ensure_collections(client, unique_index, spec)
    names = names_for(unique_index)
    assert sorted(res.created) == sorted(names.collections)
    assert ensure_collections(client, unique_index, spec).unchanged == list(names.collections)

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(5, 1024)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [
        {"sop_instance_uid": f"1.2.{i}", "study_uid": "1.2", "series_uid": "1.2.3", "report_id": "", "modality": "CR",
         "view_position": "PA", "body_part": "CHEST", "laterality": "", "rows": 10, "columns": 10, "frames": 1,
         "photometric": "MONOCHROME2", "transfer_syntax": "1.2.840.10008.1.2.1", "study_date": 20200101,
         "acquisition_date": 0, "patient_id": "", "patient_name": "", "source_uri": "file:///x", "sha256": "0" * 64,
         "thumbnail_uri": "", "model_name": "densenet121", "model_version": "1", "indexed_at": 0,
         IMAGE_VECTOR: vecs[i].tolist()}
        for i in range(5)
    ]
    rows = [ann_row(r, IMAGE_ANN_FIELDS) for r in rows]  # Milvus holds the ANN part of a record
    client.upsert(names.images_collection, rows)
    client.upsert(names.images_collection, rows[:2])  # upsert: no duplicates
    assert count_rows(client, names.images_collection) == 5
    hits = client.search(names.images_collection, data=[vecs[3].tolist()], limit=2, filter='modality == "CR"',
                         output_fields=["sop_instance_uid"], anns_field=IMAGE_VECTOR)
    assert hits[0][0]["entity"]["sop_instance_uid"] == "1.2.3"

    report = {
        "report_id": "r1", "study_uid": "1.2", "text": "Small left pleural effusion. No pneumothorax.",
        "findings": "", "impression": "", "indication": "", "sections": {}, "report_date": 0,
        "icd10_positive": ["J91.8"], "icd10_negative": ["J93.9"], "icd10_uncertain": [],
        "positive_signs": [], "negative_signs": [], "positive_diagnoses": [], "negative_diagnoses": [],
        "positive_symptoms": [], "negative_symptoms": [], "entities": [], "nlp_backend": "test", "ingested_at": 0,
        "text_vector": [0.0] * 383 + [1.0],
    }
    client.upsert(names.reports_collection, [ann_row(report, REPORT_ANN_FIELDS)])
    dense = client.search(names.reports_collection, data=[[0.0] * 383 + [1.0]], anns_field=REPORT_VECTOR, limit=3,
                          output_fields=["report_id"], filter='ARRAY_CONTAINS(icd10_positive, "J91.8")')
    assert dense[0][0]["entity"]["report_id"] == "r1"
    assert sorted(drop_collections(client, unique_index)) == sorted(names.collections)
