"""STOW-RS route of the gateway (TestClient, fake publisher): roles, per-instance outcomes, bad requests."""

from __future__ import annotations

from pathlib import Path

from api_fakes import FakeIngest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from test_app import INGESTER, READER, make_app

CT = 'multipart/related; type="application/dicom"; boundary=XyZ'


def _body(*parts: bytes) -> bytes:
    out = b""
    for p in parts:
        out += b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    return out + b"--XyZ--\r\n"


def _ct() -> bytes:
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]


def test_stow_needs_the_ingester_role() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        assert c.post("/dicomweb/studies", content=_body(_ct()), headers={"Content-Type": CT}).status_code == 401
        r = c.post("/dicomweb/studies", content=_body(_ct()),
                   headers={"Content-Type": CT, "Authorization": f"Bearer {READER}"})
        assert r.status_code == 403 and "ingester" in r.text


def test_stow_stores_good_parts_and_fails_the_bad_one_alone() -> None:
    app, _ = make_app()
    ingest = app.state.services.ingest
    assert isinstance(ingest, FakeIngest)
    with TestClient(app) as c:
        r = c.post("/dicomweb/studies", content=_body(_ct(), b"this is not DICOM at all" * 10),
                   headers={"Content-Type": CT, "Authorization": f"Bearer {INGESTER}"})
        assert r.status_code == 202, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        body = r.json()
        (ok,) = body["00081199"]["Value"]
        assert ok["00081155"]["Value"] == ["1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"]
        (failed,) = body["00081198"]["Value"]
        assert failed["00081197"]["Value"] == [0xC000]
        assert [kind for kind, _ in ingest.published] == ["dicom"]  # the bad part never reached the publisher
        # The study in the URL must match: another study's instance fails with A900.
        r = c.post("/dicomweb/studies/1.2.3.999", content=_body(_ct()),
                   headers={"Content-Type": CT, "Authorization": f"Bearer {INGESTER}"})
        assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
        r = c.post("/dicomweb/studies", content=b"{}",
                   headers={"Content-Type": "application/json", "Authorization": f"Bearer {INGESTER}"})
        assert r.status_code == 415


def test_dicomweb_reads_need_a_token_and_refuse_bad_parameters_before_any_store_call() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        assert c.get("/dicomweb/studies").status_code == 401
        auth = {"Authorization": f"Bearer {READER}"}
        r = c.get("/dicomweb/studies?StudyDate=yesterday", headers=auth)
        assert r.status_code == 400 and "StudyDate" in r.text
        r = c.get("/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/rendered?window=40", headers=auth)
        assert r.status_code == 400 and "window" in r.text
        r = c.get("/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/rendered",
                  headers={**auth, "Accept": "application/pdf"})
        assert r.status_code == 406
        r = c.get("/web-settings.json")
        assert r.status_code == 200 and "{study}" in r.json()["viewerUrlTemplate"]
