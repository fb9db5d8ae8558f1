"""DICOMweb reads (QIDO-RS, WADO-RS) of the real gateway process (``python -m medsearch_api``) over the real
PostgreSQL store and a ``file://`` object store, with a real DICOMweb client (``dicomweb-client``) and a real
DICOMweb client of another project (Orthanc + its DICOMweb plugin, from Debian) that lists and retrieves a study.

The index holds public test files (pydicom / pydicom-data): the RG1 chest study (CR, two encodings), CT_small,
MR_small and three copies of CT_small as studies of their own (for paging). Objects are stored where the
producer stores them (``<store>/<index>/dicom/<sha256>.dcm``) and rows are the DICOM worker's metadata
(``medsearch_workers.dicom_meta.extract_metadata``) written with ``medsearch.pgstore``, as the worker writes them.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from medsearch_dev.localstack import procs
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_dicom_receiver import dcmtk  # noqa: F401  # installs the DICOM peers (Orthanc) when missing

from medsearch import store

pytestmark = pytest.mark.integration
TOKEN = "dicomweb-reader-token-0123456789"
FILES = ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "CT_small.dcm", "MR_small.dcm")


@dataclass
class Gateway:
    url: str
    index: str
    datasets: dict[str, bytes]  # SOPInstanceUID -> the stored bytes

    def client(self) -> Any:
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=f"{self.url}/dicomweb", headers={"Authorization": f"Bearer {TOKEN}"})

    def ds(self, sop: str) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(self.datasets[sop]))


def _objects(tmp: Path) -> list[bytes]:
    out = [Path(str(get_testdata_file(n, download=False))).read_bytes() for n in FILES]
    ct = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    for i in range(3):  # three more CT studies, one instance each
        ct.StudyInstanceUID = generate_uid(entropy_srcs=["dicomweb-read", "study", str(i)])
        ct.SeriesInstanceUID = generate_uid(entropy_srcs=["dicomweb-read", "series", str(i)])
        ct.SOPInstanceUID = generate_uid(entropy_srcs=["dicomweb-read", "sop", str(i)])
        ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
        buf = io.BytesIO()
        ct.save_as(buf)
        out.append(buf.getvalue())
    return out


@pytest.fixture()
def gateway(postgres_dsn: str, object_store_url: str, unique_index: str, tmp_path: Path,
            service_logs: Path) -> Iterator[Gateway]:
    from medsearch_workers.dicom_meta import extract_metadata

    from medsearch import pgstore
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import drop_schema, ensure_schema

    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    rows, datasets = [], {}
    for data in _objects(tmp_path):
        sha = store.sha256_hex(data)
        uri = store.join(object_store_url, unique_index, "dicom", f"{sha}.dcm")
        store.put_bytes(uri, data)
        meta = extract_metadata(pydicom.dcmread(io.BytesIO(data)), store_patient_identifiers=True)
        rows.append({**meta, "report_id": "", "source_uri": uri, "sha256": sha, "thumbnail_uri": "",
                     "model_name": "", "model_version": "", "indexed_at": int(time.time() * 1000)})
        datasets[meta["sop_instance_uid"]] = data
    with pgstore.connect(postgres_dsn) as conn:
        pgstore.upsert_images(conn, unique_index, rows)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} reader dicomweb-test\n", encoding="utf-8")
    port = procs.free_port()
    environ = {"MEDSEARCH_INDEX": unique_index, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
               "MEDSEARCH_OBJECT_STORE_URL": object_store_url, "MEDSEARCH_API_HOST": "127.0.0.1",
               "MEDSEARCH_API_PORT": str(port), "MEDSEARCH_API_TOKENS_FILE": str(tokens),
               "MEDSEARCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{procs.free_port()}",
               "MEDSEARCH_MILVUS_URI": f"http://127.0.0.1:{procs.free_port()}"}
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "medsearch_api"]
    with procs.running(cmd, ready=lambda: procs.http_ready(f"{url}/healthz"), what="gateway",
                       log_path=service_logs / f"gateway-{unique_index}.log", timeout=120, env=environ):
        yield Gateway(url, unique_index, datasets)
    drop_schema(postgres_dsn, unique_index)


def _studies(g: Gateway, **filters: str) -> set[str]:
    return {str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).StudyInstanceUID)
            for d in g.datasets.values()
            if all(str(getattr(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True), k)) == v
                   for k, v in filters.items())}


def test_qido_finds_studies_by_date_and_modality_with_counts_and_paging(gateway: Gateway) -> None:
    g = gateway
    client = g.client()
    every = client.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in every} == _studies(g)
    ct_studies = _studies(g, Modality="CT")
    assert len(ct_studies) == 4
    ct = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    assert {s["0020000D"]["Value"][0] for s in ct} == ct_studies
    august = client.search_for_studies(search_filters={"StudyDate": "20040801-20040831"})
    assert {s["0020000D"]["Value"][0] for s in august} == _studies(g, StudyDate="20040826")  # the CR and MR
    assert len(august) == 2 and client.search_for_studies(search_filters={"StudyDate": "-20040131"}) != []
    chest = client.search_for_studies(search_filters={"StudyDate": "20040801-20040831", "ModalitiesInStudy": "CR"})
    (rg1,) = chest
    rg1_uid = rg1["0020000D"]["Value"][0]
    assert {rg1_uid} == _studies(g, Modality="CR")
    assert rg1["00080061"]["Value"] == ["CR"] and rg1["00201208"]["Value"] == [2]
    assert rg1["00080020"]["Value"] == ["20040826"]
    assert client.search_for_studies(search_filters={"StudyDate": "20040801-20040831", "ModalitiesInStudy": "CT"}) \
        == []
    # paging: 4 CT studies, 3 pages of at most 2 (the last one empty); a cut page says so in Warning
    pages = [client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"}, limit=2, offset=o)
             for o in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 0]
    assert {s["0020000D"]["Value"][0] for p in pages for s in p} == ct_studies
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.get(f"{g.url}/dicomweb/studies", params={"ModalitiesInStudy": "CT", "limit": 2}, headers=auth)
    assert r.status_code == 200 and "299" in r.headers["warning"]
    r = httpx.get(f"{g.url}/dicomweb/studies", params={"ModalitiesInStudy": "CT", "limit": 4}, headers=auth)
    assert "warning" not in r.headers and len(r.json()) == 4
    # PatientID as stored (this index stores identifiers); bad keys and missing tokens refused
    pid = str(g.ds(next(iter(g.datasets))).PatientID)
    by_pid = client.search_for_studies(search_filters={"PatientID": pid})
    assert {s["00100020"]["Value"][0] for s in by_pid} == {pid}
    assert httpx.get(f"{g.url}/dicomweb/studies", params={"AccessionNumber": "1"}, headers=auth).status_code == 400
    assert httpx.get(f"{g.url}/dicomweb/studies").status_code == 401

    series = client.search_for_series(rg1_uid)
    rg1_series = {str(g.ds(s).SeriesInstanceUID) for s in g.datasets if g.ds(s).StudyInstanceUID == rg1_uid}
    assert {s["0020000E"]["Value"][0] for s in series} == rg1_series
    instances = [i for se in rg1_series for i in client.search_for_instances(rg1_uid, se)]
    rg1_sops = {s for s in g.datasets if g.ds(s).StudyInstanceUID == rg1_uid}
    assert {i["00080018"]["Value"][0] for i in instances} == rg1_sops
    assert {i["00080018"]["Value"][0] for i in client.search_for_instances(rg1_uid)} == rg1_sops
    assert [len(client.search_for_instances(rg1_uid, limit=1, offset=o)) for o in range(3)] == [1, 1, 0]
    for i in instances:
        ds = g.ds(i["00080018"]["Value"][0])
        assert i["00280010"]["Value"] == [ds.Rows] and i["00083002"]["Value"] == [ds.file_meta.TransferSyntaxUID]


def test_wado_instances_are_byte_identical_metadata_readable_rendered_windows_differ(gateway: Gateway) -> None:
    from medsearch.dicomnet.stow import parse_multipart_related
    from medsearch.imaging import Window, decode_dicom, to_uint8

    g = gateway
    client = g.client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for sop, data in g.datasets.items():
        ds = g.ds(sop)
        study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        r = httpx.get(f"{g.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                      headers={**auth, "Accept": 'multipart/related; type="application/dicom"'}, timeout=60)
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
        (part,) = parse_multipart_related(r.headers["content-type"], r.content)
        assert hashlib.sha256(part.data).hexdigest() == hashlib.sha256(data).hexdigest(), sop
        assert client.retrieve_instance(study, series, sop).SOPInstanceUID == sop
        meta = pydicom.Dataset.from_json(client.retrieve_instance_metadata(study, series, sop))
        assert meta.SOPInstanceUID == sop and meta.Rows == ds.Rows and "PixelData" not in meta
    # a whole study: every instance of it, each as stored
    rg1 = next(s for s in g.datasets if g.ds(s).Modality == "CR")
    study = str(g.ds(rg1).StudyInstanceUID)
    got = client.retrieve_study(study)
    assert {str(d.SOPInstanceUID) for d in got} == {s for s in g.datasets if g.ds(s).StudyInstanceUID == study}
    assert len(client.retrieve_study_metadata(study)) == len(got)

    ct = next(s for s in g.datasets if g.ds(s).Modality == "CT")
    ds = g.ds(ct)
    args = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), ct)
    # raw frames (what OHIF's image loader asks for): native pixel data, and a JPEG 2000 frame as stored
    (native,) = client.retrieve_instance_frames(*args, frame_numbers=[1])
    assert native == ds.PixelData
    from pydicom.encaps import get_frame

    j2k = next(s for s in g.datasets if g.ds(s).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90")
    jds = g.ds(j2k)
    (frame,) = client.retrieve_instance_frames(str(jds.StudyInstanceUID), str(jds.SeriesInstanceUID), j2k,
                                               frame_numbers=[1], media_types=(("image/jp2",),))
    assert frame == get_frame(jds.PixelData, 0, number_of_frames=1)

    def rendered(window: str | None) -> np.ndarray[Any, Any]:
        params = {"window": window} if window else None
        body = client.retrieve_instance_rendered(*args, media_types=("image/png",), params=params)
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "PNG" and im.size == (ds.Columns, ds.Rows)
            return np.asarray(im.convert("L"), dtype=np.int16)

    default, lung, bone = rendered(None), rendered("-600,1500"), rendered("400,1800,linear")
    # the same pixels as the decode pipeline gives for the same window
    assert np.array_equal(bone, to_uint8(decode_dicom(g.datasets[ct], window=Window(400, 1800)).image))
    assert np.array_equal(default, to_uint8(decode_dicom(g.datasets[ct]).image))
    assert float(np.abs(default - bone).mean()) > 10  # a window differs from the default
    assert lung.mean() > bone.mean() + 10  # a lower centre shows the same tissue brighter
    jpeg = client.retrieve_instance_frames_rendered(*args, frame_numbers=[1], media_types=("image/jpeg",))
    assert jpeg[:3] == b"\xff\xd8\xff"
    r = httpx.get(f"{g.url}/dicomweb/studies/{args[0]}/series/{args[1]}/instances/{ct}/frames/2/rendered",
                  headers=auth)
    assert r.status_code == 404 and "frame 2" in r.text


def test_orthanc_lists_and_retrieves_a_study_from_the_gateway(gateway: Gateway, tmp_path: Path,
                                                                dcmtk: dict[str, str]) -> None:  # noqa: F811  # imported fixture
    from test_orthanc import start_orthanc

    g = gateway
    orthanc, proc = start_orthanc(tmp_path)
    try:
        r = httpx.put(f"{orthanc.http}/dicom-web/servers/medsearch",
                      json={"Url": f"{g.url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {TOKEN}"}},
                      timeout=30)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{orthanc.http}/dicom-web/servers/medsearch/qido",
                       json={"Uri": "/studies", "Arguments": {"ModalitiesInStudy": "CR"}}, timeout=60)
        assert r.status_code == 200, r.text
        # Orthanc answers its own simplified shape: {"0020000D": {"Name": "StudyInstanceUID", "Value": "1.2..."}}
        (study,) = [s["0020000D"]["Value"] for s in r.json()]
        assert {study} == _studies(g, Modality="CR")
        sops = {s for s in g.datasets if str(g.ds(s).StudyInstanceUID) == study}
        r = httpx.post(f"{orthanc.http}/dicom-web/servers/medsearch/retrieve",
                       json={"Resources": [{"Study": study}]}, timeout=120)
        assert r.status_code == 200, r.text
        got: dict[str, bytes] = {}
        for oid in httpx.get(f"{orthanc.http}/instances", timeout=30).json():
            tags = httpx.get(f"{orthanc.http}/instances/{oid}/simplified-tags", timeout=30).json()
            got[tags["SOPInstanceUID"]] = httpx.get(f"{orthanc.http}/instances/{oid}/file", timeout=60).content
        assert set(got) == sops
        for sop, data in got.items():  # Orthanc stored what it received: the gateway's objects, byte for byte
            assert hashlib.sha256(data).hexdigest() == hashlib.sha256(g.datasets[sop]).hexdigest(), sop
    finally:
        procs.stop_process(proc, timeout=20)
