"""Typed metadata from real DICOM test files."""

from __future__ import annotations

import pydicom
import pytest
from medsearch_workers.dicom_meta import MetadataError, extract_metadata, parse_date
from pydicom.data import get_testdata_file

from medsearch.contracts.collections import IMAGE_FIELDS


def _ds(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path, stop_before_pixels=True)


def test_chest_radiograph_fields() -> None:
    meta = extract_metadata(_ds("RG1_J2KR.dcm"))
    assert meta["sop_instance_uid"] == "1.3.6.1.4.1.5962.1.1.9.1.2.20040826185059.5457"
    assert meta["modality"] == "CR"
    assert meta["view_position"] == "PA"
    assert meta["body_part"] == "CHEST"
    assert (meta["rows"], meta["columns"], meta["frames"]) == (1955, 1841, 1)
    assert meta["photometric"] == "MONOCHROME1"
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    assert meta["study_date"] == 20040826
    assert meta["patient_id"] == "" and meta["patient_name"] == ""


def test_every_key_is_an_image_field_with_the_right_python_type() -> None:
    types = {f.name: f.dtype for f in IMAGE_FIELDS}
    meta = extract_metadata(_ds("CT_small.dcm"), store_patient_identifiers=True)
    for key, value in meta.items():
        assert key in types, key
        assert isinstance(value, int if types[key].startswith("INT") else str), key
        max_len = next(f.max_length for f in IMAGE_FIELDS if f.name == key)
        if max_len is not None:
            assert len(value) <= max_len


def test_patient_identifiers_only_when_allowed() -> None:
    ds = _ds("CT_small.dcm")
    assert ds.PatientName
    assert extract_metadata(ds)["patient_name"] == ""
    allowed = extract_metadata(ds, store_patient_identifiers=True)
    assert allowed["patient_name"] == str(ds.PatientName)
    assert allowed["patient_id"] == str(ds.PatientID)


def test_multi_frame_count() -> None:
    assert extract_metadata(_ds("emri_small.dcm"))["frames"] == 10


def test_missing_sop_instance_uid_is_a_metadata_error() -> None:
    ds = _ds("CT_small.dcm")
    del ds.SOPInstanceUID
    with pytest.raises(MetadataError, match="SOPInstanceUID"):
        extract_metadata(ds)


def test_long_values_are_truncated_to_the_column() -> None:
    ds = _ds("CT_small.dcm")
    ds.BodyPartExamined = "X" * 200
    assert len(extract_metadata(ds)["body_part"]) == 64


@pytest.mark.parametrize(
    ("raw", "want"),
    [("20040826", 20040826), ("20040826101010.5", 20040826), ("", 0), (None, 0), ("2004", 0), ("20041326", 0)],
)
def test_parse_date(raw: str | None, want: int) -> None:
    assert parse_date(raw) == want


# One test file per transfer syntax (pydicom + pydicom-data), decoded as the worker decodes them.
TRANSFER_SYNTAX_SAMPLES = {
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",
    "1.2.840.10008.1.2.1": "CT_small.dcm",
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",
    "1.2.840.10008.1.2.4.50": "SC_jpeg_no_color_transform.dcm",
    "1.2.840.10008.1.2.4.51": "JPGExtended.dcm",
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm",
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless_08.dcm",
    "1.2.840.10008.1.2.4.90": "RG1_J2KR.dcm",
    "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
    "1.2.840.10008.1.2.5": "MR_small_RLE.dcm",
}


@pytest.mark.parametrize(("syntax", "name"), sorted(TRANSFER_SYNTAX_SAMPLES.items()))
def test_every_transfer_syntax_decodes_and_yields_metadata(syntax: str, name: str) -> None:
    from pathlib import Path

    import numpy as np

    from medsearch.imaging import decode_dicom, preprocess

    path = get_testdata_file(name)
    assert path is not None, name
    decoded = decode_dicom(Path(path).read_bytes(), source=name)
    meta = extract_metadata(decoded.dataset)
    assert meta["transfer_syntax"] == syntax
    assert meta["sop_instance_uid"] and meta["rows"] > 0
    assert float(decoded.image.max()) > float(decoded.image.min())
    assert preprocess(decoded.image, 64).shape == (3, 64, 64)
    assert np.isfinite(decoded.image).all()
