"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``, started per test on loopback ports with its own
configuration) as the hospital's PACS: it sends a study to our AE by C-STORE (its ``/modalities/.../store``), and
``medsearch ingest --from-dicomweb`` pulls studies stored only in Orthanc (QIDO-RS + WADO-RS), resumably, never
re-importing, honouring ``--since``."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from medsearch_dev.localstack import procs
from medsearch_dev.testing import wait_for
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_dicom_ingest import Env, env, model_server  # noqa: F401  # the shared real-process fixtures
from test_dicom_receiver import dcmtk, start_receiver  # noqa: F401  # dcmtk: installs the peers (and Orthanc)
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


@dataclass
class Orthanc:
    http: str
    dicom_port: int
    log: Path

    def upload(self, data: bytes) -> dict[str, Any]:
        r = httpx.post(f"{self.http}/instances", content=data, timeout=60)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def count_instances(self) -> int:
        return len(httpx.get(f"{self.http}/instances", timeout=30).json())


def start_orthanc(tmp: Path, modalities: dict[str, list[Any]] | None = None) -> tuple[Orthanc, subprocess.Popen[bytes]]:
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    http_port, dicom_port = procs.free_port(), procs.free_port()
    root = tmp / f"orthanc-{http_port}"
    root.mkdir()
    config = {
        "Name": "medsearch-test-pacs", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "DicomServerEnabled": True,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        "DicomModalities": modalities or {},
    }  # fmt: skip
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    log = root / "orthanc.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([exe, str(root / "config.json")], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    procs.wait_until(lambda: procs.http_ready(f"{url}/system"), timeout=60, what="Orthanc", proc=proc)
    return Orthanc(url, dicom_port, log), proc


@pytest.fixture()
def orthanc_factory(tmp_path: Path, dcmtk: dict[str, str]) -> Iterator[Any]:  # noqa: F811  # imported fixture
    started: list[subprocess.Popen[bytes]] = []

    def make(modalities: dict[str, list[Any]] | None = None) -> Orthanc:
        o, proc = start_orthanc(tmp_path, modalities)
        started.append(proc)
        return o

    yield make
    for proc in started:
        procs.stop_process(proc, timeout=20)


def _study(tmp: Path, src: str, n: int, seed: str) -> list[bytes]:
    """``n`` instances of one new study made from a test file (fresh UIDs)."""
    path = get_testdata_file(src)
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    out = []
    for i in range(n):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        p = tmp / f"{seed}-{i}.dcm"
        ds.save_as(p)
        out.append(p.read_bytes())
    return out


def test_orthanc_sends_a_study_to_our_ae_by_c_store(
    env: Env, orthanc_factory: Any, tmp_path: Path  # noqa: F811  # imported fixture
) -> None:
    receiver = start_receiver(env, tmp_path, "--allow", "ORTHANC")
    try:
        pacs = orthanc_factory({"medsearch": ["MEDSEARCH", "127.0.0.1", receiver.port]})
        study = _study(tmp_path, "RG1_J2KR.dcm", 2, env.index + "cstore")
        ids = {pacs.upload(data)["ParentStudy"] for data in study}
        (study_id,) = ids
        r = httpx.post(f"{pacs.http}/modalities/medsearch/store",
                       json={"Resources": [study_id], "Synchronous": True}, timeout=120)
        assert r.status_code == 200, r.text
        env.start_worker()
        wait_for(lambda: env.count() == 2 or env.count(), 180, "the study sent by Orthanc indexed")
        assert "association from ORTHANC" in receiver.log_text() and "2 stored" in receiver.log_text()
    finally:
        procs.stop_process(receiver.proc, timeout=40)


def _pull(env: Env, url: str, *extra: str) -> dict[str, Any]:  # noqa: F811  # env: the Env of the test
    from medsearch.cli import app

    result = CliRunner().invoke(app, ["ingest", "--from-dicomweb", url, "--index", env.index, "--bootstrap",
                                      env.bootstrap, "--store", env.store_url, "--json", *extra])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_pull_imports_studies_stored_only_in_orthanc_resumably_and_once(
    env: Env, orthanc_factory: Any, tmp_path: Path  # noqa: F811  # imported fixture
) -> None:
    pacs = orthanc_factory()
    chest = _study(tmp_path, "RG1_J2KR.dcm", 3, env.index + "chest")  # StudyDate 2004-08-26, JPEG 2000
    older = _study(tmp_path, "CT_small.dcm", 2, env.index + "old")  # StudyDate 2004-01-19
    for data in chest[:2] + older:
        pacs.upload(data)
    url = f"{pacs.http}/dicom-web"

    first = _pull(env, url, "--since", "2004-06-01")
    assert (first["studies_seen"], first["instances_published"]) == (1, 2), first
    again = _pull(env, url, "--since", "2004-06-01")
    assert (again["studies_skipped"], again["instances_published"]) == (1, 0), again
    # A new instance arrives in the study: only it is fetched; the older study comes with an earlier --since.
    pacs.upload(chest[2])
    more = _pull(env, url)
    assert more["instances_published"] == 3 and more["instances_skipped"] == 2, more
    env.start_worker()
    wait_for(lambda: env.count() == 5 or env.count(), 180, "pulled instances indexed")
    rows = env.rows()
    expected = {str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(d)).SOPInstanceUID) for d in chest + older}
    assert {r["sop_instance_uid"] for r in rows} == expected
    # The stored objects are the bytes Orthanc holds (no transcoding of the JPEG 2000 chest radiograph).
    assert any(r["transfer_syntax"] == "1.2.840.10008.1.2.4.90" for r in rows)
    final = _pull(env, url)
    assert final["instances_published"] == 0 and final["studies_skipped"] == 2, final


def test_follow_mode_imports_new_studies_as_they_arrive_and_stops_cleanly(
    env: Env, orthanc_factory: Any, tmp_path: Path  # noqa: F811  # imported fixture
) -> None:
    import signal
    import sys

    pacs = orthanc_factory()
    first = _study(tmp_path, "CT_small.dcm", 1, env.index + "f1")
    later = _study(tmp_path, "MR_small_RLE.dcm", 2, env.index + "f2")
    pacs.upload(first[0])
    markers = Path(env.store_url.removeprefix("file://")) / env.index / "pull" / "instances"

    def imported() -> int:
        return len(list(markers.glob("*"))) if markers.exists() else 0

    log = tmp_path / "follow.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "medsearch.cli", "ingest", "--from-dicomweb", f"{pacs.http}/dicom-web", "--index",
             env.index, "--bootstrap", env.bootstrap, "--store", env.store_url, "--json", "--follow", "1"],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for(lambda: imported() == 1 or imported(), 60, "the first study imported")
        for data in later:
            pacs.upload(data)
        wait_for(lambda: imported() == 3 or imported(), 60, "the study that arrived later imported")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    env.start_worker()
    wait_for(lambda: env.count() == 3 or env.count(), 180, "followed instances indexed")
