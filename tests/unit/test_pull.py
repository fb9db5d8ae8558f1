"""The DICOMweb pull's bookkeeping (httpx.MockTransport as the server): an interrupted pull resumes without
re-fetching what was imported, complete studies are skipped, a grown study fetches only its new instances."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pydicom
import pytest
from medsearch_dev.testing import FakeKafkaProducer
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medsearch.dicomnet.pull import DicomwebPuller, PullError
from medsearch.producer import Publisher

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"


def _instances(tmp_path: Path, n: int) -> dict[str, bytes]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    out = {}
    for i in range(n):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["pull", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        p = tmp_path / f"{i}.dcm"
        ds.save_as(p)
        out[str(ds.SOPInstanceUID)] = p.read_bytes()
    return out


class Server:
    def __init__(self, instances: dict[str, bytes]) -> None:
        self.instances = instances
        self.fail_on: str | None = None
        self.fetched: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/dw/studies":
            body = [{"0020000D": {"vr": "UI", "Value": [STUDY]},
                     "00201208": {"vr": "IS", "Value": [len(self.instances)]}}]
            return httpx.Response(200, json=body)
        if path == f"/dw/studies/{STUDY}/instances":
            body = [{"0020000E": {"vr": "UI", "Value": [SERIES]}, "00080018": {"vr": "UI", "Value": [uid]}}
                    for uid in self.instances]
            return httpx.Response(200, json=body)
        uid = path.rsplit("/", 1)[-1]
        if uid == self.fail_on:
            return httpx.Response(503)
        assert request.headers["accept"].startswith('multipart/related; type="application/dicom"')
        self.fetched.append(uid)
        content = b"--bnd\r\nContent-Type: application/dicom\r\n\r\n" + self.instances[uid] + b"\r\n--bnd--\r\n"
        return httpx.Response(200, content=content,
                              headers={"content-type": 'multipart/related; type="application/dicom"; boundary=bnd'})


def test_interrupted_pull_resumes_and_never_refetches(tmp_path: Path) -> None:
    instances = _instances(tmp_path, 3)
    server = Server(instances)
    uids = list(instances)
    server.fail_on = uids[1]
    kafka = FakeKafkaProducer()
    pub = Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/o", index="pl", producer=kafka,
                    deidentifier=None)
    http = httpx.Client(transport=httpx.MockTransport(server))
    puller = DicomwebPuller("http://pacs/dw", pub, http)
    first = puller.run()
    assert first.instances_published == 2 and len(first.failures) == 1 and "HTTP 503" in first.failures[0]
    assert puller.load_state().studies == {}  # incomplete: not remembered as done
    server.fail_on = None
    server.fetched.clear()
    second = puller.run()
    assert server.fetched == [uids[1]] and second.instances_skipped == 2 and second.instances_published == 1
    assert not second.failures
    server.fetched.clear()
    third = puller.run()
    assert third.studies_skipped == 1 and server.fetched == []
    # The state file holds hashes, not UIDs.
    assert STUDY not in json.dumps(json.loads(Path(puller.state_url.removeprefix("file://")).read_text()))
    assert len([t for t, _, _ in kafka.sent if t == "pl.dicom"]) == 3


def test_unusable_answers_name_the_call(tmp_path: Path) -> None:
    pub = Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/o", index="pl", producer=FakeKafkaProducer(),
                    deidentifier=None)
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<html>")))
    with pytest.raises(PullError, match="QIDO-RS http://pacs/dw/studies did not answer DICOM JSON"):
        DicomwebPuller("http://pacs/dw", pub, http).run()
