"""STOW-RS route of the gateway (TestClient, fake publisher): roles, per-instance outcomes, bad requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_fakes import FakeIngest, FakeRepository, sample_data
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


def test_dicomweb_reads_share_the_per_principal_rate_limit() -> None:
    app, _ = make_app(rate_limit_per_second=0.5, rate_limit_burst=2)
    with TestClient(app) as c:
        auth = {"Authorization": f"Bearer {READER}"}
        codes = [c.get("/dicomweb/studies?StudyDate=bad", headers=auth).status_code for _ in range(3)]
        assert codes == [400, 400, 429]


class _SqlRepo(FakeRepository):
    """The fake repository plus the one method the DICOMweb reads use (rows of an instances statement)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        reports, images, rv, iv = sample_data()
        super().__init__(reports, images, rv, iv)
        self.sql: list[str] = []
        self._sql_rows = rows

    async def sql_rows(self, query: Any) -> list[dict[str, Any]]:
        self.sql.append(query.render())
        return self._sql_rows


def _wado_app(tmp_path: Path, source_uri: str) -> Any:
    from medsearch_api.app import create_app
    from medsearch_api.auth import Authenticator, StaticToken

    from medsearch.contracts.settings import ApiSettings

    row = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_instance_uid": "1.2.3.4.5",
           "transfer_syntax": "1.2.840.10008.1.2.1", "source_uri": source_uri, "frames": 1}
    return create_app(ApiSettings(object_store_url=f"file://{tmp_path / 'objects'}"), repo=_SqlRepo([row]),
                      authenticator=Authenticator(tokens=[StaticToken(READER, "reader", "r")]),
                      ingest=FakeIngest(), readiness={}, web_dist=tmp_path / "none")


def test_wado_retrieve_streams_the_stored_bytes_and_refuses_objects_outside_the_store(tmp_path: Path) -> None:
    from medsearch.dicomnet.stow import parse_multipart_related

    (tmp_path / "objects" / "demo").mkdir(parents=True)
    (tmp_path / "objects" / "demo" / "a.dcm").write_bytes(_ct())
    (tmp_path / "secret.dcm").write_bytes(_ct())
    auth = {"Authorization": f"Bearer {READER}"}
    url = "/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    with TestClient(_wado_app(tmp_path, f"file://{tmp_path / 'objects' / 'demo' / 'a.dcm'}")) as c:
        r = c.get(url, headers=auth)
        assert r.status_code == 200 and 'type="application/dicom"' in r.headers["content-type"]
        (part,) = parse_multipart_related(r.headers["content-type"], r.content)
        assert part.data == _ct()
        r = c.get(url + "/rendered", headers={**auth, "Accept": "image/jpeg"})
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
        assert c.get("/dicomweb/studies/1.2.3/series/x..y/instances/1", headers=auth).status_code == 400
    with TestClient(_wado_app(tmp_path, f"file://{tmp_path / 'objects'}/../secret.dcm")) as c:
        r = c.get(url, headers=auth)
        assert r.status_code == 404 and "not in the object store" in r.text
