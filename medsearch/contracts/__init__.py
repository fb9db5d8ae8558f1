"""Shared contracts: the index spec, message schemas, collection schemas and settings."""

from medsearch.contracts.messages import DeadLetter, DicomObject, MessageError, Report
from medsearch.contracts.naming import IndexNames, IndexRef, names_for, names_of
from medsearch.contracts.spec import (
    MedicalSearchIndex,
    MedicalSearchIndexSpec,
    SpecError,
    load_index_file,
    parse_index,
    parse_spec,
)

__all__ = [
    "DeadLetter",
    "DicomObject",
    "IndexNames",
    "IndexRef",
    "MedicalSearchIndex",
    "MedicalSearchIndexSpec",
    "MessageError",
    "Report",
    "SpecError",
    "load_index_file",
    "names_for",
    "names_of",
    "parse_index",
    "parse_spec",
]
