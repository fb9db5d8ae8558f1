"""Milvus collection schemas for ``<index>_images`` and ``<index>_reports``.

The field lists are plain data (names, types, lengths) so that the gateway, the workers and the operator
agree on them; :func:`images_schema` / :func:`reports_schema` turn them into pymilvus schemas and
:func:`index_params_for` into index parameters. Every attribute a query filters on is a typed scalar
field (JSON-path filters cost seconds in milvus-lite).
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
MAX_TEXT_CHARS = 60_000  # a report longer than this is dead-lettered as oversized (Milvus VARCHAR <= 65535)
MAX_CODES = 256
MAX_TERMS = 256
TERM_LEN = 256

# Image collection
IMAGE_PK = "sop_instance_uid"
IMAGE_VECTOR = "embedding"
# Report collection
REPORT_PK = "report_id"
REPORT_TEXT = "text"
REPORT_SPARSE = "text_sparse"
REPORT_VECTOR = "text_vector"
BM25_FUNCTION = "text_bm25"


@dataclass(frozen=True)
class FieldDef:
    name: str
    dtype: str  # a pymilvus DataType member name
    max_length: int | None = None
    element_type: str | None = None
    max_capacity: int | None = None
    dim: int | None = None
    is_primary: bool = False
    analyzer: bool = False
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
    FieldDef(REPORT_TEXT, "VARCHAR", max_length=65535, analyzer=True, description="full text, BM25"),
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
    FieldDef(REPORT_SPARSE, "SPARSE_FLOAT_VECTOR", description="BM25 output of text"),
    FieldDef(REPORT_VECTOR, "FLOAT_VECTOR", dim=TEXT_EMBEDDING_DIMENSION),
)

IMAGE_SCALAR_FIELDS = tuple(f.name for f in IMAGE_FIELDS if f.dtype != "FLOAT_VECTOR")
REPORT_OUTPUT_FIELDS = tuple(
    f.name for f in REPORT_FIELDS if f.dtype not in ("FLOAT_VECTOR", "SPARSE_FLOAT_VECTOR")
)


def _add_fields(schema: Any, fields: tuple[FieldDef, ...], analyzer: str) -> None:
    from pymilvus import DataType

    for f in fields:
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
        if f.analyzer:
            kwargs["enable_analyzer"] = True
            kwargs["enable_match"] = True
            kwargs["analyzer_params"] = {"type": analyzer}
        if f.nullable:
            kwargs["nullable"] = True
        schema.add_field(f.name, getattr(DataType, f.dtype), description=f.description, **kwargs)


def images_schema(spec: MedicalSearchIndexSpec) -> Any:
    """The pymilvus ``CollectionSchema`` of ``<index>_images``."""
    from pymilvus import MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    _add_fields(schema, IMAGE_FIELDS, "standard")
    return schema


def reports_schema(spec: MedicalSearchIndexSpec) -> Any:
    """The pymilvus ``CollectionSchema`` of ``<index>_reports`` (text feeds a BM25 function)."""
    from pymilvus import Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    _add_fields(schema, REPORT_FIELDS, spec.reports.analyzer)
    schema.add_function(
        Function(
            name=BM25_FUNCTION,
            function_type=FunctionType.BM25,
            input_field_names=[REPORT_TEXT],
            output_field_names=[REPORT_SPARSE],
        )
    )
    return schema


def _vector_index(index_params: Any, field: str, index_type: str, metric: str, params: dict[str, int]) -> None:
    index_params.add_index(field_name=field, index_type=index_type, metric_type=metric, params=dict(params))


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
    ip.add_index(
        field_name=REPORT_SPARSE,
        index_type="SPARSE_INVERTED_INDEX",
        metric_type="BM25",
        params={"inverted_index_algo": "DAAT_MAXSCORE"},
    )
    return ip
