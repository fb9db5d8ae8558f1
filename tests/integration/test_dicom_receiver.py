"""The DICOM receiver against real peers: dcmtk's ``echoscu`` and ``storescu`` (Debian's dcmtk, installed by
``scripts/ensure-dicom-peers.sh``) talk to ``medsearch receive`` (a real process), which publishes to a real Tansu
broker; the real DICOM worker indexes into milvus-lite with the model server (fixtures of test_dicom_ingest).

Covers: C-ECHO; a folder of sample files (the JPEG 2000 chest radiograph among them, every transfer syntax sent
as-is) searchable exactly once; the same folder again adds nothing; four storescu processes at once all succeed;
refused calling AE titles; a nearly full disk refuses associations with a transient status; logs carry no
patient identifiers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from medsearch_dev.localstack import procs
from medsearch_dev.testing import wait_for
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_dicom_ingest import Env, env, model_server  # noqa: F401  # the shared real-process fixtures

from medsearch.dicomnet.dcmtk import PROFILE_NAME, dcmtk_tool, storescu_profile

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    "RG1_J2KR.dcm",  # the real chest radiograph, JPEG 2000 lossless
    "RG1_UNCR.dcm",
    "CT_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "US1_J2KR.dcm",
    "emri_small.dcm",
    "examples_palette.dcm",
]


@pytest.fixture(scope="module")
def dcmtk() -> dict[str, str]:
    script = ROOT / "scripts" / "ensure-dicom-peers.sh"
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{script} failed: {res.stderr[-2000:]}"
    tools = {name: dcmtk_tool(name) for name in ("echoscu", "storescu")}
    missing = [n for n, p in tools.items() if p is None]
    assert not missing, f"dcmtk {missing} not found after {script}"
    return {k: v for k, v in tools.items() if v}


@dataclass
class Receiver:
    port: int
    ae_title: str
    log: Path
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_receiver(e: Env, tmp: Path, *extra: str, store_url: str | None = None,
                   environ: dict[str, str] | None = None) -> Receiver:
    port = procs.free_port()
    log = tmp / f"receiver-{port}.log"
    cmd = [sys.executable, "-m", "medsearch.cli", "receive", "--index", e.index, "--port", str(port),
           "--host", "127.0.0.1", "--bootstrap", e.bootstrap, "--store", store_url or e.store_url, *extra]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(environ or {})}, start_new_session=True)
    procs.wait_until(lambda: procs.port_in_use(port), timeout=60, what="medsearch receive", proc=proc)
    return Receiver(port, "MEDSEARCH", log, proc)


@pytest.fixture()
def receiver(env: Env, tmp_path: Path) -> Iterator[Receiver]:  # noqa: F811  # env is the imported fixture
    r = start_receiver(env, tmp_path)
    yield r
    procs.stop_process(r.proc, timeout=40)


def sample_folder(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SAMPLES:
        src = get_testdata_file(name)
        assert src is not None, name
        out.append(dest / name)
        out[-1].write_bytes(Path(src).read_bytes())
    return out


def storescu(tools: dict[str, str], port: int, files: list[Path], cfg: Path, *extra: str,
             aet: str = "STORESCU") -> subprocess.CompletedProcess[str]:
    cfg.write_text(storescu_profile(files), encoding="utf-8")
    return subprocess.run(
        [tools["storescu"], "-xf", str(cfg), PROFILE_NAME, "-aet", aet, "-aec", "MEDSEARCH", *extra,
         "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=300,
    )


def test_echoscu_gets_success(dcmtk: dict[str, str], receiver: Receiver) -> None:
    res = subprocess.run([dcmtk["echoscu"], "-aec", "MEDSEARCH", "127.0.0.1", str(receiver.port)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # The called AE title is checked: a wrong one is refused with the standard reason.
    res = subprocess.run([dcmtk["echoscu"], "-aec", "SOMEONE", "127.0.0.1", str(receiver.port)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "Called AE Title Not Recognized" in res.stderr


def test_storescu_folder_searchable_once_and_resend_adds_nothing(
    dcmtk: dict[str, str], env: Env, receiver: Receiver, tmp_path: Path  # noqa: F811  # imported fixture
) -> None:
    files = sample_folder(tmp_path / "study")
    expected = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    identifiers = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        identifiers |= {str(ds.get(k, "")) for k in ("PatientName", "PatientID") if str(ds.get(k, "")).strip()}
    res = storescu(dcmtk, receiver.port, files, tmp_path / "p.cfg")
    assert res.returncode == 0, res.stderr
    env.start_worker()
    wait_for(lambda: env.count() == len(expected) or env.count(), 180, "every received instance indexed")
    assert sorted(r["sop_instance_uid"] for r in env.rows()) == sorted(expected), "every instance exactly once"

    res = storescu(dcmtk, receiver.port, files, tmp_path / "p.cfg")
    assert res.returncode == 0, res.stderr
    time.sleep(5)
    assert env.count() == len(expected)
    # Logs: associations and counts, no patient identifiers and no instance UIDs.
    text = receiver.log_text()
    assert f"{len(files)} stored" in text and f"{len(files)} duplicates" in text, text
    for secret in identifiers | expected:
        assert secret not in text, "a patient identifier or UID reached the receiver's log"


def test_four_storescu_at_once_all_succeed(
    dcmtk: dict[str, str], env: Env, receiver: Receiver, tmp_path: Path  # noqa: F811  # imported fixture
) -> None:
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    batches: list[list[Path]] = []
    uids: set[str] = set()
    for b in range(4):
        folder = tmp_path / f"sender{b}"
        folder.mkdir()
        study = generate_uid(entropy_srcs=[env.index, str(b)])
        files = []
        for i in range(15):
            src.StudyInstanceUID = study
            src.SOPInstanceUID = generate_uid(entropy_srcs=[env.index, str(b), str(i)])
            src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
            uids.add(str(src.SOPInstanceUID))
            files.append(folder / f"{i}.dcm")
            src.save_as(files[-1])
        batches.append(files)
    senders = []
    for b, files in enumerate(batches):
        cfg = tmp_path / f"p{b}.cfg"
        cfg.write_text(storescu_profile(files), encoding="utf-8")
        senders.append(subprocess.Popen(
            [dcmtk["storescu"], "-xf", str(cfg), PROFILE_NAME, "-aet", f"MODALITY{b}", "-aec", "MEDSEARCH",
             "127.0.0.1", str(receiver.port), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    for p in senders:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    text = receiver.log_text()
    assert all(f"association from MODALITY{b}" in text for b in range(4))
    env.start_worker()
    wait_for(lambda: env.count() == len(uids) or env.count(), 180, "all 60 instances indexed")
    assert {r["sop_instance_uid"] for r in env.rows()} == uids


def test_refusals_name_the_reason(dcmtk: dict[str, str], env: Env, tmp_path: Path) -> None:  # noqa: F811
    # Only MODALITY1 is allowed: another calling AE title is refused permanently. Metrics count both.
    metrics_port = procs.free_port()
    r = start_receiver(env, tmp_path, "--allow", "MODALITY1",
                       environ={"MEDSEARCH_RECEIVER_METRICS_PORT": str(metrics_port),
                                "MEDSEARCH_RECEIVER_METRICS_HOST": "127.0.0.1",
                                "MEDSEARCH_RECEIVER_MAX_ASSOCIATIONS": "1"})
    try:
        res = subprocess.run([dcmtk["echoscu"], "-aet", "INTRUDER", "-aec", "MEDSEARCH", "127.0.0.1", str(r.port)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and "Calling AE Title Not Recognized" in res.stderr
        res = subprocess.run([dcmtk["echoscu"], "-aet", "MODALITY1", "-aec", "MEDSEARCH", "127.0.0.1", str(r.port)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        # One association open (the limit here): another is refused transiently, "local limit exceeded".
        from pynetdicom import AE

        scu = AE(ae_title="MODALITY1")
        scu.add_requested_context("1.2.840.10008.1.1")
        held = scu.associate("127.0.0.1", r.port, ae_title="MEDSEARCH")
        assert held.is_established
        try:
            res = subprocess.run([dcmtk["echoscu"], "-aet", "MODALITY1", "-aec", "MEDSEARCH", "127.0.0.1",
                                  str(r.port)], capture_output=True, text=True, timeout=60)
            assert res.returncode != 0 and "Local Limit Exceeded" in res.stderr, res.stderr
        finally:
            held.release()
        import httpx

        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'medsearch_receiver_associations_total{outcome="calling_aet"} 1.0' in text
        assert 'medsearch_receiver_associations_total{outcome="accepted"} 2.0' in text
        assert 'medsearch_receiver_associations_total{outcome="limit"} 1.0' in text
    finally:
        procs.stop_process(r.proc, timeout=40)
    # A disk that is "nearly full" (more free space demanded than any disk has): transient refusal, nothing stored.
    r = start_receiver(env, tmp_path, environ={"MEDSEARCH_RECEIVER_MIN_FREE_MB": str(2**40)})
    try:
        files = sample_folder(tmp_path / "full")[:1]
        res = storescu(dcmtk, r.port, files, tmp_path / "full.cfg")
        assert res.returncode != 0
        assert "Rejected Transient" in res.stderr and "Temporary Congestion" in res.stderr, res.stderr
        assert "disk is nearly full" in r.log_text()
    finally:
        procs.stop_process(r.proc, timeout=40)
