"""Discovery and publishing logic of ``medsearch.producer`` with a fake Kafka producer (no broker)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from medsearch_dev.testing import FakeKafkaProducer as FakeProducer
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from medsearch import store
from medsearch.contracts.messages import DicomObject, Report, date_to_yyyymmdd, parse_report_date
from medsearch.producer import DicomFile, Publisher, Rejected, ReportItem, discover


def _copy(name: str, dest: Path, as_name: str | None = None) -> Path:
    src = get_testdata_file(name)
    assert src is not None
    out = dest / (as_name or name)
    out.write_bytes(Path(src).read_bytes())
    return out


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    _copy("CT_small.dcm", d, "ct_without_extension")
    _copy("rtplan.dcm", d / "sub")
    (d / "notes.txt").write_text("No acute cardiopulmonary process.\n")
    (d / "r.json").write_text(
        json.dumps({"id": "R2", "text": "Small left effusion.", "study_uid": "1.2.3", "date": "20240131"})
    )
    (d / "many.jsonl").write_text(
        json.dumps({"report_id": "R3", "text": "Normal.", "report_date": "2023-05-06"}) + "\n\n" + "{broken\n"
        + json.dumps({"text": "x"}) + "\n"
        + json.dumps({"report_id": "R4", "text": "Normal.", "report_date": "2023-02-30"}) + "\n"
    )
    (d / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    (d / "empty.dcm").write_bytes(b"")
    (d / ".hidden").write_bytes(b"ignored")
    return d


def test_discover_by_content_not_extension(folder: Path) -> None:
    items = list(discover([folder]))
    dicom = sorted(i.path.name for i in items if isinstance(i, DicomFile))
    reports = sorted(i.report_id for i in items if isinstance(i, ReportItem))
    rejected = {i.path.name: i.reason for i in items if isinstance(i, Rejected)}
    assert dicom == ["ct_without_extension", "rtplan.dcm"]
    assert reports == ["R2", "R3", "notes"]
    assert set(rejected) == {"photo.png", "empty.dcm", "many.jsonl:3", "many.jsonl:4", "many.jsonl:5"}
    assert "not DICOM" in rejected["photo.png"]
    assert "report_id" in rejected["many.jsonl:4"]
    assert "report_date" in rejected["many.jsonl:5"] and "not a calendar date" in rejected["many.jsonl:5"]
    dates = {i.report_id: i.report_date for i in items if isinstance(i, ReportItem)}
    assert dates == {"R2": dt.date(2024, 1, 31), "R3": dt.date(2023, 5, 6), "notes": None}
    assert not any(i.path.name == ".hidden" for i in items)


def test_discover_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        list(discover([tmp_path / "nope"]))


def test_publish_dicom_uploads_keys_by_study_and_skips_duplicates(tmp_path: Path) -> None:
    root = f"file://{tmp_path / 'objects'}"
    fake = FakeProducer()
    pub = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake)
    data = Path(get_testdata_file("CT_small.dcm") or "").read_bytes()
    first = pub.publish_dicom(data, filename="a.dcm")
    assert first.status == "published" and first.uri is not None
    assert store.get_bytes(first.uri) == data
    assert first.uri.endswith(f"/demo/dicom/{store.sha256_hex(data)}.dcm")
    topic, key, value = fake.sent[0]
    msg = DicomObject.from_bytes(value)
    assert topic == "demo.dicom" and msg.uri == first.uri and msg.sha256 == first.sha256
    assert key is not None and key.decode() == msg.study_uid
    assert pub.publish_dicom(data, filename="b.dcm").status == "duplicate"  # same run
    pub.close()

    # A later run: the acknowledged marker makes it a duplicate without publishing again.
    fake2 = FakeProducer()
    pub2 = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake2)
    assert pub2.publish_dicom(data, filename="a.dcm").status == "duplicate"
    assert fake2.sent == []
    assert pub2.publish_dicom(b"not dicom at all", filename="x").status == "rejected"


def test_unacknowledged_publication_is_retried_next_run(tmp_path: Path) -> None:
    root = f"file://{tmp_path / 'objects'}"
    data = Path(get_testdata_file("CT_small.dcm") or "").read_bytes()
    pub = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=FakeProducer())
    pub.publish_dicom(data, filename="a.dcm")  # never flushed: crashed before the broker acknowledged
    fake2 = FakeProducer()
    pub2 = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake2)
    assert pub2.publish_dicom(data, filename="a.dcm").status == "published"
    assert len(fake2.sent) == 1


def test_report_limits_count_utf8_bytes(tmp_path: Path) -> None:
    from medsearch.contracts.collections import MAX_TEXT_BYTES

    fake = FakeProducer()
    pub = Publisher(bootstrap="unused:1", object_store_url=f"file://{tmp_path}", index="demo", producer=fake)
    greek = "πνευμοθώρακας " * (40_000 // 14 + 1)  # 40,000+ characters, 2 bytes each (non-ASCII)
    greek = greek[:40_000]
    assert len(greek) == 40_000 and len(greek.encode()) > 70_000
    assert pub.publish_report(report_id="G", text=greek).status == "published"
    assert store.get_bytes(Report.from_bytes(fake.sent[-1][2]).uri).decode() == greek
    wide = "\U0001f9e0" * (MAX_TEXT_BYTES // 4 + 1)  # fewer characters than the limit, more bytes
    refused = pub.publish_report(report_id="W", text=wide)
    assert refused.status == "rejected" and len(wide) < MAX_TEXT_BYTES
    assert f"{len(wide.encode())} bytes (UTF-8, {len(wide)} characters) exceeds the limit" in (refused.reason or "")
    assert len(fake.sent) == 1  # nothing published, and nothing marked: the same id can be sent once fixed
    assert pub.publish_report(report_id="W", text="Fixed.").status == "published"


def test_a_failed_store_write_marks_nothing_duplicate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProducer()
    pub = Publisher(bootstrap="unused:1", object_store_url=f"file://{tmp_path}", index="demo", producer=fake)

    def down(url: str, data: bytes) -> None:
        raise store.StoreError("store down")

    with monkeypatch.context() as m:
        m.setattr(store, "put_bytes", down)
        with pytest.raises(store.StoreError):
            pub.publish_report(report_id="R1", text="Small effusion.")
    assert pub.publish_report(report_id="R1", text="Small effusion.").status == "published"


def test_publish_report_as_a_claim_check(tmp_path: Path) -> None:
    fake = FakeProducer()
    pub = Publisher(bootstrap="unused:1", object_store_url=f"file://{tmp_path}", index="demo", producer=fake)
    res = pub.publish_report(report_id="R1", text="Mild cardiomegaly.", study_uid="1.2.3")
    assert res.status == "published"
    topic, key, value = fake.sent[0]
    rep = Report.from_bytes(value)
    assert topic == "demo.reports" and key == b"1.2.3" and b"cardiomegaly" not in value
    assert rep.uri == res.uri and rep.uri.startswith(f"file://{tmp_path}/demo/reports/")
    assert store.get_bytes(rep.uri) == b"Mild cardiomegaly." and rep.sha256 == store.sha256_hex(b"Mild cardiomegaly.")
    assert pub.publish_report(report_id="R1", text="Mild cardiomegaly.", study_uid="1.2.3").status == "duplicate"
    # A date is part of the content: the dated version of the same report is published (once) and carries it.
    day = dt.date(2024, 1, 31)
    assert pub.publish_report(report_id="R1", text="Mild cardiomegaly.", study_uid="1.2.3", report_date=day).status \
        == "published"
    assert Report.from_bytes(fake.sent[-1][2]).report_date == day
    assert pub.publish_report(report_id="R1", text="Mild cardiomegaly.", study_uid="1.2.3", report_date=day).status \
        == "duplicate"


@pytest.mark.parametrize(("raw", "want"), [
    ("2024-01-31", dt.date(2024, 1, 31)), ("20240131", dt.date(2024, 1, 31)), (20240131, dt.date(2024, 1, 31)),
    (dt.date(2020, 2, 29), dt.date(2020, 2, 29)), (dt.datetime(2020, 2, 29, 13, 5), dt.date(2020, 2, 29)),
])
def test_parse_report_date_accepts_iso_and_dicom_forms(raw: object, want: dt.date) -> None:
    assert parse_report_date(raw) == want
    assert date_to_yyyymmdd(want) == want.year * 10000 + want.month * 100 + want.day


@pytest.mark.parametrize("raw", ["31/01/2024", "2024-13-01", "2023-02-29", "18000101", True, 3.5, None, "yesterday"])
def test_parse_report_date_rejects_other_forms(raw: object) -> None:
    with pytest.raises(ValueError, match="report date"):
        parse_report_date(raw)


def test_cli_dry_run_lists_without_publishing(folder: Path) -> None:
    from medsearch.cli import app

    result = CliRunner().invoke(app, ["ingest", str(folder), "--index", "demo", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["would_publish"] == 5 and summary["published"] == 0
    assert summary["by_kind"] == {"dicom:would_publish": 2, "file:rejected": 5, "report:would_publish": 3}
    assert "Normal." not in result.output and "effusion" not in result.output


def test_cli_unreachable_broker_is_a_clear_error(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medsearch_dev.localstack.procs import free_port

    from medsearch.cli import app

    result = CliRunner().invoke(
        app, ["ingest", str(folder), "--index", "demo", "--bootstrap", f"127.0.0.1:{free_port()}"]
    )
    assert result.exit_code == 1
    assert "unreachable" in result.output and "--bootstrap" in result.output


def test_failed_acknowledgement_is_not_a_duplicate(tmp_path: Path) -> None:
    from kafka.errors import KafkaTimeoutError

    from medsearch.producer import PublishError

    class Failing(FakeProducer):
        def flush(self, timeout: float | None = None) -> None:
            raise KafkaTimeoutError("no ack")

    root = f"file://{tmp_path / 'objects'}"
    data = Path(get_testdata_file("CT_small.dcm") or "").read_bytes()
    pub = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=Failing())
    assert pub.publish_dicom(data, filename="a.dcm").status == "published"
    with pytest.raises(PublishError, match="did not acknowledge"):
        pub.flush()
    pub._producer = FakeProducer()  # the broker is back
    assert pub.publish_dicom(data, filename="a.dcm").status == "published"
    pub.flush()
    assert pub.publish_dicom(data, filename="a.dcm").status == "duplicate"


def test_a_decompression_bomb_is_rejected_naming_the_limit_not_inflated(tmp_path: Path) -> None:
    import time

    from medsearch_dev.hostile import deflated_dicom_bomb

    from medsearch.producer import classify

    bomb = deflated_dicom_bomb()
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bomb)
    t0 = time.perf_counter()
    (item,) = list(classify(path))
    assert isinstance(item, Rejected) and "too large" in item.reason and "inflates to more than" in item.reason
    fake = FakeProducer()
    pub = Publisher(bootstrap="unused:1", object_store_url=f"file://{tmp_path / 'o'}", index="demo", producer=fake)
    result = pub.publish_dicom(bomb, filename="bomb.dcm")
    assert result.status == "rejected" and "inflates to more than" in (result.reason or "")
    assert fake.sent == [] and time.perf_counter() - t0 < 2.0


class FakeLedger:
    """The ledger's interface over a dict (the real one is tested against PostgreSQL in the integration tier)."""

    def __init__(self) -> None:
        from medsearch.ledger import Status

        self.rows: dict[tuple[str, str], Status] = {}
        self.recorded: list[Any] = []
        self.status_cls = Status

    def status(self, kind: str, key: str) -> Any:
        return self.rows.get((kind, key))

    def record(self, entry: Any) -> None:
        self.recorded.append(entry)
        self.rows[(entry.kind, entry.key)] = self.status_cls("published", 0.0, None, None, 1)


def test_with_a_ledger_only_indexed_content_is_a_duplicate(tmp_path: Path) -> None:
    fake, ledger = FakeProducer(), FakeLedger()
    root = f"file://{tmp_path}"
    pub = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake, ledger=ledger,
                    republish_after=60)
    assert pub.publish_report(report_id="R1", text="Small effusion.").status == "published"
    (entry,) = ledger.recorded  # recorded before it was sent: a claim check, never the text
    assert entry.kind == "report" and entry.subject == "R1" and b"effusion" not in entry.message
    pub.flush()
    assert not (tmp_path / "demo" / "published").exists()  # no markers: the ledger decides
    again = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake, ledger=ledger,
                      republish_after=60)
    res = again.publish_report(report_id="R1", text="Small effusion.")
    assert res.status == "pending" and "not indexed yet" in (res.reason or "")
    key = (entry.kind, entry.key)
    ledger.rows[key] = ledger.status_cls("published", 61.0, None, None, 1)  # stale: published again
    assert again.publish_report(report_id="R1", text="Small effusion.").status == "published"
    later = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake, ledger=ledger)
    ledger.rows[key] = ledger.status_cls("dead", 5.0, "write", "Milvus down", 1)  # re-ingesting a dead one retries
    assert later.publish_report(report_id="R1", text="Small effusion.").status == "published"
    ledger.rows[key] = ledger.status_cls("indexed", 5.0, None, None, 1)
    latest = Publisher(bootstrap="unused:1", object_store_url=root, index="demo", producer=fake, ledger=ledger)
    res = latest.publish_report(report_id="R1", text="Small effusion.")
    assert (res.status, res.reason) == ("duplicate", "already indexed")
    assert len(fake.sent) == 3 and len(ledger.recorded) == 3
