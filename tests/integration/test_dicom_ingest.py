"""DICOM ingest end to end with real processes: Tansu broker, milvus-lite server, the model server
(``--weights random``, small input) and the DICOM worker (``python -m medsearch_workers.dicom_worker``).

Covers: every image indexed exactly once, every non-image / broken file dead-lettered with a reason,
thumbnails that open as PNG, the MONOCHROME1 chest radiograph not inverted, re-ingest adds nothing,
SIGKILL of the worker mid-stream, and the model server going away for a while.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from ingest_env import IndexEnv
from medsearch_dev.localstack import procs
from medsearch_dev.testing import read_dead_letters, wait_for
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medsearch import store
from medsearch.contracts.messages import DeadLetter, Report
from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import MedicalSearchIndexSpec
from medsearch.provision import count_rows, milvus_client

pytestmark = pytest.mark.integration

INPUT_SIZE = 64
# Images that must be indexed: (file, transfer syntax / kind) — includes the real chest CR and its J2K twins.
IMAGES = [
    "RG1_UNCR.dcm",  # CR chest, MONOCHROME1, explicit little endian
    "RG1_J2KR.dcm",  # JPEG 2000 lossless
    "RG1_J2KI.dcm",  # JPEG 2000 lossy
    "CT_small.dcm",
    "MR_small_RLE.dcm",  # RLE
    "US1_J2KR.dcm",  # YBR_RCT colour, JPEG 2000
    "emri_small.dcm",  # multi-frame
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless colour
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "MR_small_bigendian.dcm",  # explicit big endian
    "examples_palette.dcm",  # PALETTE COLOR
]
# DICOM files that must be dead-lettered: file -> (stage, reason prefix)
BROKEN = {
    "rtplan.dcm": ("decode", "no_pixel_data"),
    "JPEG-lossy.dcm": ("decode", "undecodable"),  # 12-bit JPEG Extended with a misplaced marker segment
}
TRUNCATED = ("CT_small_truncated.dcm", "CT_small.dcm", ("decode", "undecodable"))
NOT_DICOM = {"notes.bin": b"\x00\x01binary junk that is not DICOM" * 20, "scan.pdf": b"%PDF-1.4\n" + b"x" * 500}


def _testfile(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    return Path(path)


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class ModelServer:
    url: str
    http_port: int
    cmd: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                self.cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        procs.wait_until(
            lambda: procs.http_ready(f"{self.url}/v2/models/densenet121/ready"),
            timeout=timeout,
            what="model server",
            proc=self.proc,
            interval=0.5,
        )

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop_process(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[ModelServer]:
    http_port, grpc_port = procs.free_port(), procs.free_port()
    cache = tmp_path_factory.mktemp("model-cache")
    cmd = [
        sys.executable, "-m", "medsearch_model_server", "--weights", "random", "--input-size", str(INPUT_SIZE),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--cache-dir", str(cache), "--max-batch-size", "16",
    ]  # fmt: skip
    server = ModelServer(f"http://127.0.0.1:{http_port}", http_port, cmd, service_logs / "model-server.log")
    server.start()
    yield server
    server.stop()


@dataclass
class Env(IndexEnv):
    """The test's index with DICOM workers that embed on ``model``."""

    model: ModelServer | None = None
    worker: str = "dicom"

    def __post_init__(self) -> None:
        assert self.model is not None
        self.extra_env.setdefault("MEDSEARCH_MODEL_SERVER_URL", self.model.url)

    def count(self) -> int:
        client = milvus_client(self.milvus_uri)
        try:
            return count_rows(client, names_for(self.index).images_collection)
        finally:
            client.close()

    def rows(self) -> list[dict[str, Any]]:
        """The images as the system of record (PostgreSQL) holds them."""
        from medsearch import pgstore

        cols = ["sop_instance_uid", "sha256", "thumbnail_uri", "modality", "photometric", "transfer_syntax", "rows",
                "columns", "study_date", "patient_name"]
        with pgstore.connect(self.dsn) as conn:
            return [r for batch in pgstore.iter_rows(conn, self.index, "images", cols) for r in batch]

    def dead_letters(self, expect: int, timeout: float = 30.0) -> list[DeadLetter]:
        return read_dead_letters(self.bootstrap, self.index, expect, timeout)

    def reports(self, expect: int, timeout: float = 20.0) -> list[tuple[bytes | None, Report]]:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            names_for(self.index).reports_topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
            group_id=None,
        )  # fmt: skip
        out: list[tuple[bytes | None, Report]] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.key, Report.from_bytes(r.value)) for r in records)
        consumer.close()
        return out

    def ingest(self, *paths: Path) -> dict[str, Any]:
        from medsearch.cli import app

        result = CliRunner().invoke(
            app,
            ["ingest", *map(str, paths), "--index", self.index, "--bootstrap", self.bootstrap, "--store",
             self.store_url, "--json"], env={"MEDSEARCH_POSTGRES_DSN": self.dsn},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        summary: dict[str, Any] = json.loads(result.stdout)
        return summary


@pytest.fixture()
def env(make_index_env: Callable[..., Env], model_server: ModelServer) -> Env:
    e = make_index_env(Env, model=model_server)
    e.provision(MedicalSearchIndexSpec())
    return e


def _fresh_copies(src: str, n: int, dest: Path, *, seed: str) -> list[str]:
    """``n`` copies of a test file with fresh SOP/Series UIDs; returns their SOPInstanceUIDs."""
    ds = pydicom.dcmread(_testfile(src))
    uids = []
    for i in range(n):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, src, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(dest / f"{seed}-{i:03d}.dcm")
        uids.append(str(ds.SOPInstanceUID))
    return uids


# ------------------------------------------------------------------------------------------------ tests


def test_folder_ingest_indexes_images_once_and_dead_letters_the_rest(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    for name in IMAGES:
        (folder / "nested" / name.replace(".dcm", "")).write_bytes(_testfile(name).read_bytes())  # no extension
    for name in BROKEN:
        (folder / name).write_bytes(_testfile(name).read_bytes())
    ct = _testfile(TRUNCATED[1]).read_bytes()
    (folder / TRUNCATED[0]).write_bytes(ct[: len(ct) - 4000])
    for name, data in NOT_DICOM.items():
        (folder / name).write_bytes(data)
    (folder / "R100.txt").write_text("FINDINGS: No focal consolidation.\n")
    (folder / "more.jsonl").write_text(
        json.dumps({"report_id": "R101", "text": "Small right effusion.", "study_uid": "1.2.3.4"}) + "\n"
    )
    expected_uids = {str(pydicom.dcmread(_testfile(n), stop_before_pixels=True).SOPInstanceUID) for n in IMAGES}
    # The MR_small variants share one SOPInstanceUID (same image, other transfer syntaxes): one row for them.
    assert len(expected_uids) < len(IMAGES)

    summary = env.ingest(folder)
    n_dicom = len(IMAGES) + len(BROKEN) + 1
    assert summary["by_kind"]["dicom:published"] == n_dicom
    assert summary["by_kind"]["report:published"] == 2
    reports = {r.report_id: (key, r) for key, r in env.reports(2)}
    assert store.get_bytes(reports["R100"][1].uri) == b"FINDINGS: No focal consolidation.\n"
    assert reports["R100"][0] == b"R100"
    assert reports["R101"][1].study_uid == "1.2.3.4" and reports["R101"][0] == b"1.2.3.4"
    assert sorted(r["file"].rsplit("/", 1)[-1] for r in summary["rejections"]) == sorted(NOT_DICOM)

    metrics_port = procs.free_port()
    worker = env.start_worker(
        MEDSEARCH_WORKER_METRICS_PORT=str(metrics_port), MEDSEARCH_WORKER_METRICS_HOST="127.0.0.1"
    )
    n_dead = len(BROKEN) + 1
    letters = env.dead_letters(n_dead, timeout=120)
    wait_for(lambda: env.count() == len(expected_uids) or env.count(), 120, "all images indexed")

    rows = env.rows()
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(expected_uids), "every image exactly once"
    by_sha = {store.sha256_hex(_testfile(n).read_bytes()): n for n in [*IMAGES, *BROKEN]}
    by_sha[store.sha256_hex(ct[: len(ct) - 4000])] = TRUNCATED[0]
    got = {by_sha[d.original["sha256"]]: (d.stage, d.error) for d in letters}
    want = {**BROKEN, TRUNCATED[0]: TRUNCATED[2]}
    assert set(got) == set(want), got
    for name, (stage, reason) in want.items():
        assert got[name][0] == stage and got[name][1].startswith(reason), (name, got[name])
    assert all(d.topic == names_for(env.index).dicom_topic and d.attempts >= 1 for d in letters)

    for row in rows:
        assert row["patient_name"] == ""
        with Image.open(io.BytesIO(store.get_bytes(row["thumbnail_uri"]))) as im:
            assert im.format == "PNG" and max(im.size) == min(256, max(row["rows"], row["columns"]))
    rg1 = next(r for r in rows if r["sha256"] == store.sha256_hex(_testfile("RG1_UNCR.dcm").read_bytes()))
    assert (rg1["modality"], rg1["photometric"], rg1["study_date"]) == ("CR", "MONOCHROME1", 20040826)
    assert rg1["thumbnail_uri"] == store.join(env.store_url, env.index, "thumbnails", f"{rg1['sop_instance_uid']}.png")
    with Image.open(io.BytesIO(store.get_bytes(rg1["thumbnail_uri"]))) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    h, w = a.shape
    band = a[h // 3 : 2 * h // 3]
    lungs = np.concatenate([band[:, w // 5 : 2 * w // 5], band[:, 3 * w // 5 : 4 * w // 5]]).mean()
    spine = band[:, 9 * w // 20 : 11 * w // 20].mean()
    assert lungs < spine - 20, f"RG1 thumbnail looks inverted: lungs {lungs:.0f} vs spine {spine:.0f}"

    import httpx

    def scrape() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        return {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln.startswith("medsearch_")}

    indexed_key = 'medsearch_worker_indexed_total{worker="dicom"}'
    wait_for(lambda: scrape().get(indexed_key) == len(IMAGES) or scrape().get(indexed_key), 30, "indexed metric")
    samples = scrape()
    assert samples['medsearch_worker_dead_lettered_total{stage="decode",worker="dicom"}'] == n_dead
    assert samples['medsearch_worker_consumed_total{worker="dicom"}'] == len(IMAGES) + n_dead
    assert samples['medsearch_worker_batch_seconds_count{worker="dicom"}'] >= 1
    assert 'medsearch_worker_consumer_lag{worker="dicom"}' in samples

    # The same folder again: what was indexed is a duplicate (the ingest ledger says so); the dead-lettered objects
    # are published again (re-ingesting retries them, e.g. once a decoder is installed) and dead-lettered again;
    # the reports (no report worker here) are pending, not "already there".
    again = env.ingest(folder)
    print("re-ingest:", again["by_kind"])
    assert again["published"] == n_dead and again["duplicate"] == len(IMAGES) and again["pending"] == 2
    assert len(env.dead_letters(2 * n_dead, timeout=60)) == 2 * n_dead
    time.sleep(2)
    assert env.count() == len(expected_uids)

    # Graceful shutdown on SIGTERM.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_sigkill_mid_stream_then_restart_indexes_each_image_once(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    uids = set(_fresh_copies("CT_small.dcm", 40, folder, seed="kill"))
    # The same SOPInstanceUIDs again with different bytes (a re-export): different sha256, same rows.
    again = tmp_path / "again"
    again.mkdir()
    _fresh_copies("CT_small.dcm", 10, again, seed="kill")
    for p in again.iterdir():
        ds = pydicom.dcmread(p)
        ds.InstitutionName = "re-exported"
        ds.save_as(p)
    summary = env.ingest(folder, again)
    assert summary["published"] == 50

    # One message per batch (a commit each), so the kill lands between commits, mid-stream.
    worker = env.start_worker(batch_size=1)
    deadline = time.monotonic() + 120
    while env.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = env.count()
    assert killed_at < len(uids), "the worker finished before it could be killed; use more files"

    env.start_worker(batch_size=4)
    wait_for(lambda: env.count() == len(uids) or env.count(), 150, "all images after the restart")
    time.sleep(3)  # re-deliveries after the restart must not add rows
    assert env.count() == len(uids)
    assert {r["sop_instance_uid"] for r in env.rows()} == uids
    assert env.dead_letters(0, timeout=3) == []


def test_model_server_outage_loses_nothing(env: Env, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    uids = set(_fresh_copies("MR_small.dcm", 8, first, seed="before"))
    assert env.ingest(first)["published"] == 8
    env.start_worker()
    wait_for(lambda: env.count() == 8 or env.count(), 120, "the first images")

    env.model.stop()
    try:
        uids |= set(_fresh_copies("MR_small.dcm", 12, second, seed="during"))
        assert env.ingest(second)["published"] == 12
        time.sleep(8)  # the worker retries with backoff, committing nothing
        assert env.count() == 8
    finally:
        env.model.start()
    wait_for(lambda: env.count() == len(uids) or env.count(), 120, "ingest to resume")
    assert {r["sop_instance_uid"] for r in env.rows()} == uids
    assert env.dead_letters(0, timeout=3) == []


def test_dead_letter_replay_after_the_cause_is_fixed(env: Env, tmp_path: Path) -> None:
    """An object missing from the store is dead-lettered at `fetch`; once it is back, `medsearch dlq replay`
    sends the original message again and the image is indexed (once, even if replayed twice)."""
    import fsspec

    from medsearch.cli import app

    folder = tmp_path / "in"
    folder.mkdir()
    (uid,) = _fresh_copies("CT_small.dcm", 1, folder, seed="dlq")
    (path,) = folder.iterdir()
    data = path.read_bytes()
    assert env.ingest(folder)["published"] == 1
    uri = store.join(env.store_url, env.index, "dicom", f"{store.sha256_hex(data)}.dcm")
    fs, key = fsspec.core.url_to_fs(uri)
    fs.rm(key)  # lost before the worker fetched it
    env.start_worker()
    (letter,) = env.dead_letters(1)
    assert letter.stage == "fetch"

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(app, ["dlq", *args, "--index", env.index, "--bootstrap", env.bootstrap, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    listed = cli("list")
    assert listed["summary"]["total"] == 1 and listed["summary"]["replayable"] == 1
    (entry,) = listed["entries"]
    assert entry["stage"] == "fetch" and entry["subject"] == uri and entry["replayable"]
    assert entry["topic"] == names_for(env.index).dicom_topic
    assert cli("replay", "--stage", "decode")["selected"] == 0  # nothing of that stage

    store.put_bytes(uri, data)  # the cause is fixed
    assert cli("replay", "--offset", f"{entry['partition']}:{entry['offset']}")["replayed"] == 1
    wait_for(lambda: env.count() == 1 or env.count(), 60, "the replayed image")
    assert cli("replay", "--all")["replayed"] == 1  # repeatable: the worker upserts by SOPInstanceUID
    time.sleep(3)
    assert [r["sop_instance_uid"] for r in env.rows()] == [uid]
    assert cli("list")["summary"]["total"] == 1  # replays that succeed add no dead letters


def test_milvus_outage_loses_nothing(
    make_index_env: Callable[..., Env], model_server: ModelServer, unique_index: str, service_logs: Path,
    tmp_path: Path, postgres_dsn: str,
) -> None:
    """Milvus stops mid-ingest (its own server here, so the session's is untouched): the worker retries without
    committing, nothing is dead-lettered, and once Milvus is back on the same data every image is there."""
    data_dir, port = tmp_path / "milvus-data", procs.free_port()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    before = set(_fresh_copies("CT_small.dcm", 6, first, seed="milvus-before"))
    uids = set(before)
    e = make_index_env(Env, milvus_uri=f"http://127.0.0.1:{port}", model=model_server)
    try:
        with procs.milvus_lite(data_dir, service_logs, port=port):
            e.provision(MedicalSearchIndexSpec())
            assert e.ingest(first)["published"] == 6
            e.start_worker()
            wait_for(lambda: e.count() == 6 or e.count(), 120, "the first images")
        # Milvus is down now.
        uids |= set(_fresh_copies("CT_small.dcm", 8, second, seed="milvus-during"))
        assert e.ingest(second)["published"] == 8
        time.sleep(8)  # the worker backs off and retries, committing nothing
        assert all(p.poll() is None for p in e.workers), "the worker must survive a Milvus outage"
        with procs.milvus_lite(data_dir, service_logs, port=port):
            # The restarted milvus-lite has every collection released; the gateway's repository loads them again
            # (a released collection would answer searches with an error and count(*) with 0).
            from medsearch_api.records import ImageFilterSpec
            from medsearch_api.repository import PgPool, SearchRepository

            client = milvus_client(e.milvus_uri)
            try:
                # indexed before the outage: still there, and found by the gateway's repository's k-NN
                first = sorted(before)[0]

                async def nearest() -> list[str]:
                    repo = SearchRepository(PgPool(postgres_dsn), client, unique_index)
                    try:
                        vector = await repo.image_vector(first)
                        assert vector is not None
                        # k covers every image: the copies of one file have identical vectors, so which of them ranks
                        # first is arbitrary, and images published during the outage may already be indexed again.
                        hits = await repo.similar_images(vector=vector, k=len(uids), filter=ImageFilterSpec(),
                                                         exclude_ids=[])
                        return [h.image.sop_instance_uid for h in hits]
                    finally:
                        await repo.close()

                assert before <= set(asyncio.run(nearest()))  # every pre-outage image is found again
            finally:
                client.close()
            wait_for(lambda: e.count() == len(uids) or e.count(), 120, "ingest to resume after the outage")
            assert {r["sop_instance_uid"] for r in e.rows()} == uids
        assert e.dead_letters(0, timeout=3) == []
    finally:
        e.stop_workers()
