"""Pure parts of the DICOM receiver: admission decisions, accepted syntaxes, the file written, the dcmtk profile."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file

from medsearch.dicomnet.dcmtk import storescu_profile
from medsearch.dicomnet.receiver import (
    REJECT_CALLED_AET,
    REJECT_CALLING_AET,
    REJECT_CONGESTION,
    REJECT_LIMIT,
    admission,
    free_bytes,
    local_path,
    part10,
    readable_transfer_syntaxes,
    storage_sop_classes,
)

ADMIT = {"calling_aet": "CT1", "called_aet": "MEDSEARCH", "ae_title": "MEDSEARCH", "allowed_aets": [],
         "require_called_aet": True, "free": 10 * 2**30, "min_free": 2**30}


def test_admission_accepts_by_default_and_refuses_with_the_standard_triples() -> None:
    assert admission(**ADMIT) is None
    assert admission(**{**ADMIT, "calling_aet": "CT1  ", "allowed_aets": ["CT1", "MR2"]}) is None
    r = admission(**{**ADMIT, "allowed_aets": ["MR2"]})
    assert r is not None and (r.result, r.source, r.diagnostic) == REJECT_CALLING_AET and "CT1" in r.reason
    r = admission(**{**ADMIT, "called_aet": "PACS"})
    assert r is not None and (r.result, r.source, r.diagnostic) == REJECT_CALLED_AET
    assert admission(**{**ADMIT, "called_aet": "PACS", "require_called_aet": False}) is None
    r = admission(**{**ADMIT, "free": 2**29})
    assert r is not None and (r.result, r.source, r.diagnostic) == REJECT_CONGESTION
    assert "512 MB free" in r.reason and "1024 MB" in r.reason
    assert admission(**{**ADMIT, "free": None}) is None  # remote store: no disk to check
    r = admission(**{**ADMIT, "draining": True})
    assert r is not None and r.result == 0x02 and "shutting down" in r.reason
    assert admission(**{**ADMIT, "active": 15, "max_associations": 16}) is None
    r = admission(**{**ADMIT, "active": 16, "max_associations": 16})
    assert r is not None and (r.result, r.source, r.diagnostic) == REJECT_LIMIT and r.code == "limit"


def test_accepted_syntaxes_are_exactly_the_decodable_ones() -> None:
    ts = readable_transfer_syntaxes()
    assert ts[0] == "1.2.840.10008.1.2"
    for uid in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"):
        assert uid in ts
    assert "1.2.840.10008.1.2.4.100" not in ts  # MPEG2: no decoder, the worker could not read it
    classes = storage_sop_classes()
    assert "1.2.840.10008.5.1.4.1.1.1" in classes and "1.2.840.10008.5.1.4.1.1.2" in classes and len(classes) > 100


def test_part10_keeps_the_data_set_bytes_as_received() -> None:
    src = Path(get_testdata_file("RG1_J2KR.dcm"))  # type: ignore[arg-type]
    ds = pydicom.dcmread(src)
    raw = src.read_bytes()
    # The data set starts after the preamble, "DICM", the group length element (12 bytes) and the meta group.
    body_start = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    data = part10(ds.file_meta, raw[body_start:])
    assert data[128:132] == b"DICM" and data.endswith(raw[body_start:])
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_free_bytes_local_and_remote(tmp_path: Path) -> None:
    assert local_path(f"file://{tmp_path}") == tmp_path
    assert local_path("s3://bucket/x") is None and free_bytes("s3://bucket/x") is None
    n = free_bytes(f"file://{tmp_path}/not/yet/created")
    assert isinstance(n, int) and n > 0


def test_storescu_profile_proposes_each_files_own_syntax() -> None:
    files = [get_testdata_file(n) for n in ("RG1_J2KR.dcm", "CT_small.dcm", "MR_small_RLE.dcm")]
    text = storescu_profile([f for f in files if f])
    assert "TransferSyntax1 = 1.2.840.10008.1.2.4.90" in text and "TransferSyntax1 = 1.2.840.10008.1.2.5" in text
    assert "1.2.840.10008.5.1.4.1.1.1\\" in text and "[Medsearch]" in text


def test_concurrent_writers_of_one_object_all_succeed(tmp_path: Path) -> None:
    """Two associations may store the same instance at the same moment: neither write may fail."""
    import os
    import threading

    from medsearch import store

    url = f"file://{tmp_path}/idx/dicom/x.dcm"
    data = os.urandom(1_000_000)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(15):
                store.put_bytes(url, data)
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and store.get_bytes(url) == data
    assert os.listdir(tmp_path / "idx" / "dicom") == ["x.dcm"]


# ------------------------------------------------------------------------------------- C-STORE handler statuses


class _Assoc:
    def __init__(self) -> None:
        class _Rq:
            ae_title = "CT1"
            address = "127.0.0.1"
            port = 40000

        self.requestor = _Rq()


class _Event:
    def __init__(self, assoc: _Assoc, data: bytes, name: str = "EVT_C_STORE") -> None:
        import io as _io

        ds = pydicom.dcmread(io.BytesIO(data))
        meta = ds.file_meta
        body_start = 132 + 12 + int(meta.FileMetaInformationGroupLength)

        class _Req:
            DataSet = _io.BytesIO(data[body_start:])

        class _Evt:
            pass

        self.assoc = assoc
        self.file_meta = meta
        self.request = _Req()
        self.event = _Evt()
        self.event.name = name  # type: ignore[attr-defined]


def _receiver(tmp_path: Path, producer: object, free: int | None = 10 * 2**30) -> object:
    from medsearch.contracts.settings import ReceiverSettings
    from medsearch.dicomnet.receiver import Receiver
    from medsearch.producer import Publisher

    pub = Publisher(bootstrap="x", object_store_url=f"file://{tmp_path}/o", index="rx", producer=producer,
                    deidentifier=None)
    return Receiver(ReceiverSettings(index="rx"), pub, free_space=lambda url: free)


def test_store_statuses_success_duplicate_disk_full_and_broker_failure(tmp_path: Path) -> None:
    from kafka.errors import KafkaTimeoutError
    from medsearch_dev.testing import FakeKafkaProducer

    from medsearch.dicomnet.receiver import STATUS_OUT_OF_RESOURCES, STATUS_PROCESSING_FAILURE, STATUS_SUCCESS

    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    kafka = FakeKafkaProducer()
    rx: Any = _receiver(tmp_path, kafka)
    assoc = _Assoc()
    rx._on_accepted(_Event(assoc, raw, "EVT_ACCEPTED"))
    assert rx._on_store(_Event(assoc, raw)) == STATUS_SUCCESS
    assert rx._on_store(_Event(assoc, raw)) == STATUS_SUCCESS  # a duplicate is still a success
    assert [t for t, _, _ in kafka.sent] == ["rx.dicom"]
    assert rx.metrics.value("medsearch_receiver_active_associations") == 1
    rx._on_closed(_Event(assoc, raw, "EVT_RELEASED"))
    assert (rx.totals["stored"], rx.totals["duplicates"]) == (1, 1)
    m = rx.metrics
    assert m.value("medsearch_receiver_instances_total", outcome="stored") == 1
    assert m.value("medsearch_receiver_instances_total", outcome="duplicate") == 1
    assert m.value("medsearch_receiver_associations_total", outcome="accepted") == 1
    assert m.value("medsearch_receiver_active_associations") == 0
    assert m.value("medsearch_receiver_bytes_total") == 2 * len(raw)
    assert m.value("medsearch_receiver_store_seconds_count") == 2
    # The disk fills up during an association: the instance is refused with "out of resources".
    full: Any = _receiver(tmp_path / "full", FakeKafkaProducer(), free=1)
    full._on_accepted(_Event(assoc, raw, "EVT_ACCEPTED"))
    assert full._on_store(_Event(assoc, raw)) == STATUS_OUT_OF_RESOURCES
    assert full.metrics.value("medsearch_receiver_instances_total", outcome="failed") == 1

    # The broker does not acknowledge: processing failure (the sender retries), nothing counted as published.
    class NoAck(FakeKafkaProducer):
        def flush(self, timeout: float | None = None) -> None:
            raise KafkaTimeoutError("no ack")

    broken: Any = _receiver(tmp_path / "broken", NoAck())
    broken._on_accepted(_Event(assoc, raw, "EVT_ACCEPTED"))
    assert broken._on_store(_Event(assoc, raw)) == STATUS_PROCESSING_FAILURE
    assert not list((tmp_path / "broken").rglob("published/dicom/*"))
