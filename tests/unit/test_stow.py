"""STOW-RS request parsing and the standard response, as pure functions."""

from __future__ import annotations

import re

import pytest

from medsearch.dicomnet.stow import (
    FAILURE_CANNOT_UNDERSTAND,
    InstanceOutcome,
    StowRequestError,
    parse_multipart_related,
    response_body,
)

CT = 'multipart/related; type="application/dicom"; boundary="b0und"'


def body(*parts: bytes, preamble: bytes = b"", close: bool = True) -> bytes:
    out = preamble
    for p in parts:
        out += b"--b0und\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    return out + (b"--b0und--\r\n" if close else b"")


def test_parts_keep_their_bytes_exactly() -> None:
    tricky = b"\r\n--b0un\r\n\x00\xff" * 3  # CRLFs and a near-boundary inside the content
    parts = parse_multipart_related(CT, body(b"first", tricky, preamble=b"ignored preamble\r\n"))
    assert [p.data for p in parts] == [b"first", tricky]
    assert all(p.content_type == "application/dicom" for p in parts)
    unquoted = parse_multipart_related("Multipart/Related; boundary=b0und; type=application/dicom", body(b"x"))
    assert unquoted[0].data == b"x"


@pytest.mark.parametrize(("ctype", "data", "status", "message"), [
    ("application/dicom", b"x", 415, "multipart/related"),
    ('multipart/related; type="application/dicom+xml"; boundary=b0und', body(b"x"), 415, "application/dicom+xml"),
    ('multipart/related; type="application/dicom"', body(b"x"), 400, "boundary"),
    (CT, b"no delimiter here", 400, "does not start"),
    (CT, body(b"x", close=False), 400, "not terminated"),
    (CT, b"--b0und--\r\n", 400, "no parts"),
])
def test_bad_requests_are_refused_with_the_reason(ctype: str, data: bytes, status: int, message: str) -> None:
    with pytest.raises(StowRequestError, match=re.escape(message)) as err:
        parse_multipart_related(ctype, data)
    assert err.value.status == status


def test_response_lists_stored_and_failed_instances() -> None:
    ok = InstanceOutcome("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")
    bad = InstanceOutcome(None, None, FAILURE_CANNOT_UNDERSTAND)
    status, payload = response_body([ok, bad])
    assert status == 202
    assert payload["00081199"]["Value"] == [{"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                                             "00081155": {"vr": "UI", "Value": ["1.2.3.1"]}}]
    assert payload["00081198"]["Value"] == [{"00081197": {"vr": "US", "Value": [0xC000]}}]
    assert response_body([ok])[0] == 200 and "00081198" not in response_body([ok])[1]
    assert response_body([bad])[0] == 409
