"""QIDO-RS / WADO-RS pure parts: matching keys, SQL, DICOM JSON, window and media type parameters."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from medsearch_api import dicomweb_read as dw
from medsearch_api.sql import Tables
from pydicom.data import get_testdata_file

from medsearch.imaging import Window, apply_window, decode_dicom

T = Tables("demo")


def test_study_level_keys_become_sql_conditions_with_parameters() -> None:
    q = dw.parse_qido("study", [("StudyDate", "20040101-20041231"), ("ModalitiesInStudy", "CR,DX"),
                                ("limit", "5"), ("offset", "10"), ("includefield", "all")])
    assert (q.date_from, q.date_to, q.modalities, q.limit, q.offset) == (20040101, 20041231, ("CR", "DX"), 5, 10)
    stmt = dw.qido_sql(T, q)
    text = stmt.render()
    assert "i.study_date >= %s" in text and "i.study_date <= %s" in text
    assert "bool_or(i.modality = ANY(%s))" in text and "GROUP BY i.study_uid" in text
    assert stmt.params == [20040101, 20041231, ["CR", "DX"], 6, 10]  # one row more than the page
    assert "demo" not in str(stmt.params)


def test_tags_work_as_keys_and_uid_lists_and_open_ranges() -> None:
    q = dw.parse_qido("study", [("0020000D", "1.2.3,1.2.4"), ("00080020", "-20040826")])
    assert q.uids == {"study_uid": ("1.2.3", "1.2.4")} and (q.date_from, q.date_to) == (None, 20040826)
    assert dw.parse_date_range("20040826-") == (20040826, None)
    assert dw.parse_date_range("2004-08-26") == (20040826, 20040826)


@pytest.mark.parametrize(("params", "message"), [
    ([("StudyDate", "2004")], "StudyDate"),
    ([("StudyDate", "20041231-20040101")], "starts after"),
    ([("StudyInstanceUID", "1.2.x")], "UID"),
    ([("limit", "0")], "limit"),
    ([("limit", "100000")], "limit"),
    ([("offset", "-1")], "offset"),
    ([("AccessionNumber", "A1")], "AccessionNumber: not a matching key"),
    ([("Modality", "C'R")], "Modality"),
])
def test_bad_keys_are_refused_naming_them(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(dw.QidoError, match=message):
        dw.parse_qido("study", params)


def test_series_and_instance_levels_are_scoped_by_the_path() -> None:
    q = dw.parse_qido("series", [("Modality", "CT")], study_uid="1.2.3")
    stmt = dw.qido_sql(T, q)
    assert "i.study_uid = %s" in stmt.render() and "GROUP BY i.study_uid, i.series_uid" in stmt.render()
    assert stmt.params[:2] == ["1.2.3", ["CT"]]
    q = dw.parse_qido("instance", [("SOPInstanceUID", "1.2.3.4.5")], study_uid="1.2.3", series_uid="1.2.3.4")
    stmt = dw.qido_sql(T, q)
    assert stmt.params[:3] == ["1.2.3", "1.2.3.4", ["1.2.3.4.5"]]
    with pytest.raises(dw.QidoError, match="path"):
        dw.parse_qido("series", [], study_uid="../etc")
    with pytest.raises(dw.QidoError, match="not a matching key"):
        dw.parse_qido("study", [("SOPInstanceUID", "1.2")])


def test_patient_id_wildcards_become_escaped_like_patterns() -> None:
    q = dw.parse_qido("study", [("PatientID", "AB_1*?")])
    stmt = dw.qido_sql(T, q)
    assert "i.patient_id LIKE %s" in stmt.render() and "AB\\_1%_" in stmt.params
    assert "i.patient_id = %s" in dw.qido_sql(T, dw.parse_qido("study", [("PatientID", "P1")])).render()


def test_rows_render_as_dicom_json() -> None:
    study = dw.to_dicom_json("study", {"study_uid": "1.2.3", "study_date": 20040826, "modalities": ["CR", "DX"],
                                       "n_series": 2, "n_instances": 3, "patient_id": "", "patient_name": ""},
                             "http://gw/dicomweb")
    assert study["0020000D"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert study["00080020"] == {"vr": "DA", "Value": ["20040826"]}
    assert study["00080061"]["Value"] == ["CR", "DX"] and study["00201208"] == {"vr": "IS", "Value": [3]}
    assert study["00100020"] == {"vr": "LO"}  # not stored: present, empty
    assert study["00081190"]["Value"] == ["http://gw/dicomweb/studies/1.2.3"]
    row = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_instance_uid": "1.2.3.4.5", "rows": 512,
           "columns": 256, "frames": 0, "transfer_syntax": "1.2.840.10008.1.2.1", "patient_name": "Doe^Jane",
           "modality": "CT"}
    inst = dw.to_dicom_json("instance", row, "http://gw/dicomweb")
    assert inst["00280010"] == {"vr": "US", "Value": [512]} and inst["00280008"]["Value"] == [1]
    assert inst["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert inst["00081190"]["Value"][0].endswith("/series/1.2.3.4/instances/1.2.3.4.5")
    assert list(inst) == sorted(inst)


def test_page_tells_whether_more_rows_exist() -> None:
    assert dw.page([{"a": 1}, {"a": 2}, {"a": 3}], 2) == ([{"a": 1}, {"a": 2}], True)
    assert dw.page([{"a": 1}], 2) == ([{"a": 1}], False)


def test_window_parameter() -> None:
    assert dw.parse_window("40,400") == Window(40.0, 400.0, "linear")
    assert dw.parse_window("-600, 1500, SIGMOID") == Window(-600.0, 1500.0, "sigmoid")
    assert dw.parse_window(None) is None
    for bad in ("40", "a,b", "40,0", "40,400,cubic", "1,2,3,4"):
        with pytest.raises(dw.QidoError):
            dw.parse_window(bad)


def test_rendered_media_type_negotiation() -> None:
    assert dw.rendered_media_type(None) == "image/png"
    assert dw.rendered_media_type("image/jpeg") == "image/jpeg"
    assert dw.rendered_media_type("text/html, */*") == "image/png"
    assert dw.rendered_media_type("image/png", "image/jpeg") == "image/jpeg"
    with pytest.raises(dw.QidoError):
        dw.rendered_media_type("application/dicom")


def test_apply_window_follows_the_standard_formulas() -> None:
    v = np.array([-1000.0, 39.5, 40.0, 240.0, 1000.0], dtype=np.float32)
    out = apply_window(v, Window(40, 400))
    assert out[0] == 0.0 and out[-1] == 1.0 and abs(out[1] - 0.5) < 1e-6
    exact = apply_window(v, Window(40, 400, "linear-exact"))
    assert abs(exact[2] - 0.5) < 1e-6 and abs(exact[3] - 1.0) < 1e-6
    sig = apply_window(v, Window(40, 400, "sigmoid"))
    assert abs(sig[2] - 0.5) < 1e-6 and 0 < sig[0] < 0.01 and 0.99 < sig[-1] < 1


def test_decode_with_a_window_differs_from_the_default_and_checks_the_frame() -> None:
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    default = decode_dicom(data).image
    bone = decode_dicom(data, window=Window(400, 1800)).image
    lung = decode_dicom(data, window=Window(-600, 1500)).image
    assert default.shape == bone.shape == lung.shape
    assert float(np.abs(default - bone).mean()) > 0.05 and float(lung.mean()) > float(bone.mean())
    from medsearch.imaging import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="frame 2"):
        decode_dicom(data, frame=1)


def test_metadata_json_leaves_out_pixel_data_and_is_read_back_by_pydicom() -> None:
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    meta = dw.metadata_json(data)
    assert "7FE00010" not in meta and meta["00080018"]["Value"] == ["1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"]
    ds = pydicom.Dataset.from_json(meta)
    assert ds.Rows == 128 and "PixelData" not in ds
    assert pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID == ds.StudyInstanceUID


def test_multipart_framing() -> None:
    b = dw.multipart_boundary("x")
    head = dw.part_header(b, "1.2.840.10008.1.2.1", "http://gw/dicomweb/studies/1")
    ct = "Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert head.startswith(f"--{b}\r\n{ct}\r\n".encode())
    assert head.endswith(b"\r\n\r\n") and dw.multipart_end(b) == f"\r\n--{b}--\r\n".encode()


def _file(name: str) -> bytes:
    return Path(str(get_testdata_file(name, download=False))).read_bytes()


def test_native_frames_are_the_stored_pixel_bytes_in_little_endian() -> None:
    ct = _file("CT_small.dcm")
    got = dw.frame_bytes(ct, [1], stored_ok=False)
    assert (got.media_type, got.transfer_syntax) == ("application/octet-stream", "1.2.840.10008.1.2.1")
    assert got.data == [pydicom.dcmread(io.BytesIO(ct)).PixelData]
    big = dw.frame_bytes(_file("MR_small_bigendian.dcm"), [1], stored_ok=True).data[0]
    assert big == pydicom.dcmread(io.BytesIO(_file("MR_small.dcm"))).PixelData
    multi = _file("emri_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(multi))
    size = ds.Rows * ds.Columns * ds.BitsAllocated // 8
    assert dw.frame_bytes(multi, [3, 1], stored_ok=False).data == [ds.PixelData[2 * size:3 * size],
                                                                   ds.PixelData[:size]]
    with pytest.raises(dw.QidoError, match="frame 99"):
        dw.frame_bytes(multi, [99], stored_ok=True)


def test_compressed_frames_are_served_as_stored_or_refused_without_transcoding() -> None:
    from pydicom.encaps import get_frame

    j2k = _file("RG1_J2KR.dcm")
    got = dw.frame_bytes(j2k, [1], stored_ok=True)
    assert got.media_type == "image/jp2" and got.transfer_syntax == "1.2.840.10008.1.2.4.90"
    assert got.data == [get_frame(pydicom.dcmread(io.BytesIO(j2k)).PixelData, 0, number_of_frames=1)]
    with pytest.raises(dw.QidoError, match="transcode"):
        dw.frame_bytes(j2k, [1], stored_ok=False)
    assert dw.accepts_stored_syntax('multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert not dw.accepts_stored_syntax('multipart/related; type="application/octet-stream"')
    assert dw.parse_frame_list("1, 3") == [1, 3]
    for bad in ("0", "a", "1,,2"):
        with pytest.raises(dw.QidoError):
            dw.parse_frame_list(bad)
