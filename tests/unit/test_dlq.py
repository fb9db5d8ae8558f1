"""Dead-letter tooling (medsearch.dlq): replay plans, selection, summaries, and the CLI's guard rails."""

from __future__ import annotations

import json
from typing import Any

import pytest
from medsearch_dev.testing import FakeKafkaProducer
from typer.testing import CliRunner

from medsearch.contracts.messages import DeadLetter, DicomObject, Report
from medsearch.dlq import DlqEntry, plan, replay, select, summarize
from medsearch.producer import Publisher, message_key

SHA = "ab" * 32


def letter(message: DicomObject | Report | bytes, topic: str, stage: str, error: str) -> DeadLetter:
    raw = message if isinstance(message, bytes) else message.to_bytes()
    return DeadLetter.for_message(raw, topic=topic, stage=stage, error=error, attempts=1, worker="w")


def entries() -> list[DlqEntry]:
    dicom = DicomObject(index="demo", uri="file:///s/demo/dicom/x.dcm", sha256=SHA, study_uid="1.2.3")
    # a version-1 report (text inline) as older producers sent it: its dead letter cannot be replayed
    inline = json.dumps({"schema_version": 1, "index": "demo", "report_id": "R9", "text": "Small left effusion.",
                         "study_uid": "1.2.3"}).encode()
    by_uri = Report(index="demo", report_id="R8", uri="file:///s/r8.txt", sha256=SHA)
    return [
        DlqEntry(0, 0, letter(dicom, "demo.dicom", "fetch", "object not found: file:///s/demo/dicom/x.dcm")),
        DlqEntry(0, 1, letter(inline, "demo.reports", "decode", "empty report")),
        DlqEntry(0, 2, letter(by_uri, "demo.reports", "fetch", "object not found: file:///s/r8.txt")),
        DlqEntry(1, 0, letter(b"not json", "demo.dicom", "decode_message", "DicomObject: invalid message")),
        DlqEntry(1, 1, letter(dicom, "other.dicom", "decode", "undecodable: bad")),
        DlqEntry(1, 2, None, "DeadLetter: invalid message (fields: topic)"),
    ]


def test_plans_rebuild_replayable_messages_and_say_why_not() -> None:
    plans = [plan(e, "demo") for e in entries()]
    assert isinstance(plans[0].message, DicomObject) and plans[0].message.sha256 == SHA
    assert plans[1].message is None and "redacted" in (plans[1].reason or "")
    assert isinstance(plans[2].message, Report) and plans[2].message.uri == "file:///s/r8.txt"
    assert plans[3].message is None and "not a valid demo.dicom message" in (plans[3].reason or "")
    assert plans[4].message is None and "other.dicom" in (plans[4].reason or "")
    assert plans[5].message is None and "unreadable" in (plans[5].reason or "")


def test_dead_letters_never_hold_report_text() -> None:
    e = entries()[1]
    assert e.letter is not None and "effusion" not in e.letter.model_dump_json()
    assert e.subject == "R9"


def test_select_by_stage_error_text_and_offset() -> None:
    all_ = entries()
    assert [e.ref for e in select(all_, stages=["fetch"])] == ["0:0", "0:2"]
    assert [e.ref for e in select(all_, match="OBJECT NOT FOUND")] == ["0:0", "0:2"]
    assert [e.ref for e in select(all_, refs=["1:1", "2"])] == ["0:2", "1:1", "1:2"]
    assert [e.ref for e in select(all_, stages=["fetch"], refs=["0"])] == ["0:0"]
    assert select(all_) == all_


def test_summary_groups_by_topic_stage_and_reason() -> None:
    s = summarize(entries(), "demo")
    assert s["total"] == 6 and s["replayable"] == 2
    groups = {(g["topic"], g["stage"], g["reason"]): g["count"] for g in s["groups"]}
    assert groups[("demo.dicom", "fetch", "object not found")] == 1
    assert groups[("?", "?", "unreadable record")] == 1
    assert sum(groups.values()) == 6


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.flushed = 0

    def republish(self, message: Any) -> str:
        self.sent.append(message)
        return "t"

    def flush(self) -> None:
        self.flushed += 1


def test_replay_sends_only_replayable_plans_then_flushes() -> None:
    pub = FakePublisher()
    assert replay([plan(e, "demo") for e in entries()], pub) == 2
    assert [type(m).__name__ for m in pub.sent] == ["DicomObject", "Report"] and pub.flushed == 1


def test_republish_uses_the_original_topic_and_key_and_writes_no_marker(tmp_path: Any) -> None:
    fake = FakeKafkaProducer()
    pub = Publisher(bootstrap="unused:1", object_store_url=f"file://{tmp_path}", index="demo", producer=fake)
    dicom = DicomObject(index="demo", uri="file:///x.dcm", sha256=SHA, study_uid="1.2.3")
    report = Report(index="demo", report_id="R8", uri="file:///r8.txt", sha256=SHA)
    assert pub.republish(dicom) == "demo.dicom" and pub.republish(report) == "demo.reports"
    pub.flush()
    assert fake.sent == [("demo.dicom", b"1.2.3", dicom.to_bytes()), ("demo.reports", b"R8", report.to_bytes())]
    assert message_key(dicom) == "1.2.3" and message_key(report) == "R8"
    assert not any(tmp_path.rglob("*"))  # no duplicate markers for replays
    with pytest.raises(Exception, match="cannot be republished"):
        pub.republish(DicomObject(index="other", uri="file:///x.dcm", sha256=SHA))


def test_cli_replay_needs_a_selection() -> None:
    from medsearch.cli import app

    result = CliRunner().invoke(app, ["dlq", "replay", "--index", "demo", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2 and "--all" in result.output


def test_cli_unreachable_broker_is_a_clear_error() -> None:
    from medsearch_dev.localstack.procs import free_port

    from medsearch.cli import app

    result = CliRunner().invoke(app, ["dlq", "list", "--index", "demo", "--bootstrap", f"127.0.0.1:{free_port()}",
                                      "--timeout", "5"])
    assert result.exit_code == 1 and "unreachable" in result.output
    json.dumps(result.output)
