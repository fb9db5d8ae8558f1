"""The records of an index, declared once: image and report fields, and which of them the Milvus collections hold.

The field lists are plain data (names, types, lengths) so that the gateway, the workers and the operator agree on
them. Every field is a column of the index's PostgreSQL tables (``medsearch/contracts/sql``; PostgreSQL is the
system of record). The Milvus collections ``<index>_images`` / ``<index>_reports`` are the ANN engine: they hold
the vectors and only the scalar fields their filtered k-NN needs (:data:`IMAGE_ANN_FIELDS`,
:data:`REPORT_ANN_FIELDS`), each a typed scalar field with a scalar index; :func:`images_schema` /
:func:`reports_schema` turn them into pymilvus schemas. The collections can be rebuilt from PostgreSQL
(``medsearch reindex``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medsearch.contracts.spec import (
    EMBEDDING_DIMENSION,
    TEXT_EMBEDDING_DIMENSION,
    MedicalSearchIndexSpec,
)

UID_LEN = 128
# A report's text is limited in UTF-8 bytes, the unit its stores count (the object store's claim check, PostgreSQL's
# text column): checked at ingest (refused there) and again by the worker (dead-lettered at decode).
MAX_TEXT_BYTES = 200_000
MAX_CODES = 256
MAX_TERMS = 256
TERM_LEN = 256

# Image collection
IMAGE_PK = "sop_instance_uid"
IMAGE_VECTOR = "embedding"
# Report collection
REPORT_PK = "report_id"
REPORT_TEXT = "text"
REPORT_VECTOR = "text_vector"


@dataclass(frozen=True)
class FieldDef:
    name: str
    dtype: str  # a pymilvus DataType member name
    max_length: int | None = None
    element_type: str | None = None
    max_capacity: int | None = None
    dim: int | None = None
    is_primary: bool = False
    nullable: bool = False
    description: str = ""


IMAGE_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(IMAGE_PK, "VARCHAR", max_length=UID_LEN, is_primary=True, description="SOPInstanceUID"),
    FieldDef("study_uid", "VARCHAR", max_length=UID_LEN),
    FieldDef("series_uid", "VARCHAR", max_length=UID_LEN),
    FieldDef("report_id", "VARCHAR", max_length=256, description="'' until a report is linked"),
    FieldDef("modality", "VARCHAR", max_length=16),
    FieldDef("view_position", "VARCHAR", max_length=16),
    FieldDef("body_part", "VARCHAR", max_length=64),
    FieldDef("laterality", "VARCHAR", max_length=8),
    FieldDef("rows", "INT32"),
    FieldDef("columns", "INT32"),
    FieldDef("frames", "INT32"),
    FieldDef("photometric", "VARCHAR", max_length=32),
    FieldDef("transfer_syntax", "VARCHAR", max_length=UID_LEN),
    FieldDef("study_date", "INT32", description="YYYYMMDD, 0 when unknown"),
    FieldDef("acquisition_date", "INT32", description="YYYYMMDD, 0 when unknown"),
    FieldDef("patient_id", "VARCHAR", max_length=64, description="'' unless spec.privacy allows it"),
    FieldDef("patient_name", "VARCHAR", max_length=256, description="'' unless spec.privacy allows it"),
    FieldDef("source_uri", "VARCHAR", max_length=1024),
    FieldDef("sha256", "VARCHAR", max_length=64),
    FieldDef("thumbnail_uri", "VARCHAR", max_length=1024),
    FieldDef("model_name", "VARCHAR", max_length=64),
    FieldDef("model_version", "VARCHAR", max_length=32),
    FieldDef("indexed_at", "INT64", description="epoch milliseconds"),
    FieldDef(IMAGE_VECTOR, "FLOAT_VECTOR", dim=EMBEDDING_DIMENSION),
)

_TERMS = dict(element_type="VARCHAR", max_length=TERM_LEN, max_capacity=MAX_TERMS)
_CODES = dict(element_type="VARCHAR", max_length=16, max_capacity=MAX_CODES)

REPORT_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(REPORT_PK, "VARCHAR", max_length=256, is_primary=True),
    FieldDef("study_uid", "VARCHAR", max_length=UID_LEN),
    FieldDef(REPORT_TEXT, "VARCHAR", max_length=65535, description="full text (PostgreSQL full-text search)"),
    FieldDef("findings", "VARCHAR", max_length=65535),
    FieldDef("impression", "VARCHAR", max_length=65535),
    FieldDef("indication", "VARCHAR", max_length=65535),
    FieldDef("sections", "JSON", description="{section name: text}"),
    FieldDef("report_date", "INT32", description="YYYYMMDD, 0 when unknown"),
    FieldDef("icd10_positive", "ARRAY", **_CODES),  # type: ignore[arg-type]  # dict of typed kwargs
    FieldDef("icd10_negative", "ARRAY", **_CODES),  # type: ignore[arg-type]
    FieldDef("icd10_uncertain", "ARRAY", **_CODES),  # type: ignore[arg-type]
    FieldDef("positive_signs", "ARRAY", **_TERMS),  # type: ignore[arg-type]
    FieldDef("negative_signs", "ARRAY", **_TERMS),  # type: ignore[arg-type]
    FieldDef("positive_diagnoses", "ARRAY", **_TERMS),  # type: ignore[arg-type]
    FieldDef("negative_diagnoses", "ARRAY", **_TERMS),  # type: ignore[arg-type]
    FieldDef("positive_symptoms", "ARRAY", **_TERMS),  # type: ignore[arg-type]
    FieldDef("negative_symptoms", "ARRAY", **_TERMS),  # type: ignore[arg-type]
    FieldDef("entities", "JSON", description="entities for display: text, span, category, traits, codes"),
    FieldDef("nlp_backend", "VARCHAR", max_length=64),
    FieldDef("ingested_at", "INT64", description="epoch milliseconds"),
    FieldDef(REPORT_VECTOR, "FLOAT_VECTOR", dim=TEXT_EMBEDDING_DIMENSION),
)

IMAGE_SCALAR_FIELDS = tuple(f.name for f in IMAGE_FIELDS if f.dtype != "FLOAT_VECTOR")
REPORT_OUTPUT_FIELDS = tuple(f.name for f in REPORT_FIELDS if f.dtype != "FLOAT_VECTOR")

# What the Milvus collections hold: the key, the vector and the scalar fields a filtered k-NN needs.
IMAGE_ANN_FIELDS: tuple[str, ...] = (
    IMAGE_PK, "study_uid", "modality", "view_position", "body_part", "laterality", "study_date", IMAGE_VECTOR,
)
REPORT_ANN_FIELDS: tuple[str, ...] = (
    REPORT_PK, "study_uid", "report_date", "icd10_positive", "icd10_negative", "icd10_uncertain", REPORT_VECTOR,
)
_SCALAR_INDEX = {"VARCHAR": "INVERTED", "INT32": "INVERTED", "INT64": "INVERTED", "ARRAY": "INVERTED"}


def ann_row(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The part of a record a Milvus collection holds."""
    return {name: row[name] for name in fields}


def _add_fields(schema: Any, fields: tuple[FieldDef, ...], names: tuple[str, ...]) -> None:
    from pymilvus import DataType

    for f in (f for f in fields if f.name in names):
        kwargs: dict[str, Any] = {}
        if f.max_length is not None:
            kwargs["max_length"] = f.max_length
        if f.element_type is not None:
            kwargs["element_type"] = getattr(DataType, f.element_type)
        if f.max_capacity is not None:
            kwargs["max_capacity"] = f.max_capacity
        if f.dim is not None:
            kwargs["dim"] = f.dim
        if f.is_primary:
            kwargs["is_primary"] = True
        if f.nullable:
            kwargs["nullable"] = True
        schema.add_field(f.name, getattr(DataType, f.dtype), description=f.description, **kwargs)


def images_schema(spec: MedicalSearchIndexSpec) -> Any:
    """The pymilvus ``CollectionSchema`` of ``<index>_images``."""
    from pymilvus import MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    _add_fields(schema, IMAGE_FIELDS, IMAGE_ANN_FIELDS)
    return schema


def reports_schema(spec: MedicalSearchIndexSpec) -> Any:
    """The pymilvus ``CollectionSchema`` of ``<index>_reports`` (text vectors; keyword search is PostgreSQL's)."""
    from pymilvus import MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    _add_fields(schema, REPORT_FIELDS, REPORT_ANN_FIELDS)
    return schema


def _vector_index(index_params: Any, field: str, index_type: str, metric: str, params: dict[str, int]) -> None:
    index_params.add_index(field_name=field, index_type=index_type, metric_type=metric, params=dict(params))


def scalar_indexes(collection: str) -> list[tuple[str, str]]:
    """(field, index type) of the scalar indexes on a collection's filter fields (``"images"`` / ``"reports"``);
    Milvus 2.5+ serves filtered k-NN from them. Created after the collection, each on its own: a Milvus that
    does not support one (milvus-lite has none on ARRAY fields) filters without it."""
    fields, names = (IMAGE_FIELDS, IMAGE_ANN_FIELDS) if collection == "images" else (REPORT_FIELDS, REPORT_ANN_FIELDS)
    return [(f.name, _SCALAR_INDEX[f.dtype]) for f in fields
            if f.name in names and not f.is_primary and f.dtype in _SCALAR_INDEX]


def images_index_params(spec: MedicalSearchIndexSpec) -> Any:
    from pymilvus import MilvusClient

    ip = MilvusClient.prepare_index_params()
    img = spec.images
    _vector_index(ip, IMAGE_VECTOR, img.index_type, img.metric, img.params)
    return ip


def reports_index_params(spec: MedicalSearchIndexSpec) -> Any:
    from pymilvus import MilvusClient

    ip = MilvusClient.prepare_index_params()
    rep = spec.reports
    _vector_index(ip, REPORT_VECTOR, rep.index_type, rep.metric, rep.params)
    return ip
