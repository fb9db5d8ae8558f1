"""The DICOM receiver (``medsearch receive``): a C-ECHO and C-STORE SCP in front of the ingest path.

Modalities and PACS send studies here by C-STORE. Every storage SOP class is accepted, in every transfer syntax
the decoders read (:func:`readable_transfer_syntaxes`), as-is: no pixel data is decoded on the receive path. Each
instance is written as a DICOM file (preamble, file meta information, the data set exactly as received) and handed
to :meth:`medsearch.producer.Publisher.publish_dicom`, the code path of ``medsearch ingest``: same object key, same
duplicate ledger, same message. Success is answered only after the object is stored and the broker acknowledged
the message, so a sender that got success can forget the instance.

Associations are refused with a standard A-ASSOCIATE-RJ when the calling AE title is not allowed (permanent,
"calling AE title not recognised"), when the called AE title is not ours, when too many are open ("local limit
exceeded"), or when the object store's disk is nearly full (transient, "temporary congestion"); an instance that
arrives while the disk fills up is answered 0xA700 (out of resources). Log lines name AE titles, addresses, SOP
classes and counts, never patient identifiers or instance UIDs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from medsearch.contracts.settings import ReceiverSettings
from medsearch.producer import Publisher, PublishError
from medsearch.store import StoreError

log = logging.getLogger("medsearch.receiver")

# DIMSE statuses (PS3.4 annex B / PS3.7 annex C)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AET = (0x01, 0x01, 0x03)  # rejected-permanent, service user, calling AE title not recognised
REJECT_CALLED_AET = (0x01, 0x01, 0x07)  # rejected-permanent, service user, called AE title not recognised
REJECT_CONGESTION = (0x02, 0x03, 0x01)  # rejected-transient, service provider (presentation), temporary congestion
REJECT_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, service provider (presentation), local limit exceeded

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


# ------------------------------------------------------------------------------------------------ pure parts


def readable_transfer_syntaxes() -> list[str]:
    """Every transfer syntax whose pixel data this installation can decode (pydicom plus the pylibjpeg plugins):
    what the receiver accepts, so that nothing is accepted that the DICOM worker could not read."""
    import pydicom.uid
    from pydicom.pixels.decoders.base import get_decoder

    out: list[str] = []
    for uid in pydicom.uid.AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                out.append(str(uid))
        except NotImplementedError:
            continue
    # The default transfer syntax first: offered contexts are matched in order of preference.
    out.sort(key=lambda u: (u != pydicom.uid.ImplicitVRLittleEndian, u != pydicom.uid.ExplicitVRLittleEndian))
    return out


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom knows."""
    from pynetdicom import AllStoragePresentationContexts

    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


def local_path(url: str) -> Path | None:
    """The local directory of a ``file://`` object store URL (None for remote stores)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else url))
    return None


def free_bytes(url: str) -> int | None:
    """Free bytes on the disk holding a ``file://`` object store (its nearest existing folder); None when remote."""
    path = local_path(url)
    if path is None:
        return None
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free)


@dataclass(frozen=True)
class Refusal:
    """Why an association is refused: the A-ASSOCIATE-RJ triple and a log message."""

    result: int
    source: int
    diagnostic: int
    reason: str
    code: str = "refused"  # metrics label: calling_aet | called_aet | shutting_down | limit | disk_full


def admission(
    *,
    calling_aet: str,
    called_aet: str,
    ae_title: str,
    allowed_aets: list[str],
    require_called_aet: bool,
    free: int | None,
    min_free: int,
    draining: bool = False,
    active: int = 0,
    max_associations: int = 0,
) -> Refusal | None:
    """Whether a new association is admitted (None) or refused, and how."""
    calling, called = calling_aet.strip(), called_aet.strip()
    if allowed_aets and calling not in {a.strip() for a in allowed_aets}:
        return Refusal(*REJECT_CALLING_AET, f"calling AE title {calling!r} is not in the allowed list", "calling_aet")
    if require_called_aet and called != ae_title.strip():
        return Refusal(*REJECT_CALLED_AET, f"called AE title {called!r} is not {ae_title.strip()!r}", "called_aet")
    if draining:
        return Refusal(*REJECT_CONGESTION, "the receiver is shutting down", "shutting_down")
    if max_associations and active >= max_associations:
        return Refusal(*REJECT_LIMIT, f"{active} associations already open (at most {max_associations})", "limit")
    if free is not None and free < min_free:
        return Refusal(
            *REJECT_CONGESTION,
            f"the object store's disk is nearly full ({free // 2**20} MB free, at least {min_free // 2**20} MB "
            "required)",
            "disk_full",
        )
    return None


def part10(file_meta: Any, dataset_bytes: bytes) -> bytes:
    """A DICOM file: preamble, ``DICM``, the file meta information, then the data set bytes as received."""
    import io

    from pydicom.filewriter import write_file_meta_info

    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, file_meta, enforce_standard=True)  # type: ignore[arg-type]  # pydicom accepts BytesIO
    buf.write(dataset_bytes)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- the service


class ReceiverMetrics:
    """Prometheus metrics of one receiver process (own registry, so tests can create several)."""

    def __init__(self, registry: Any | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self.associations = Counter("medsearch_receiver_associations_total",
                                    "Associations by outcome (accepted, or the refusal reason)", ["outcome"],
                                    registry=self.registry)
        self.instances = Counter("medsearch_receiver_instances_total",
                                 "C-STORE instances by outcome (stored, duplicate, quarantined, failed)", ["outcome"],
                                 registry=self.registry)
        self.bytes = Counter("medsearch_receiver_bytes_total", "Bytes of instances received",
                             registry=self.registry)
        self.active = Gauge("medsearch_receiver_active_associations", "Open associations", registry=self.registry)
        self.store_seconds = Histogram("medsearch_receiver_store_seconds",
                                       "Time to store and publish one instance (until the broker acknowledged)",
                                       registry=self.registry,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def value(self, name: str, **labels: str) -> float:
        got = self.registry.get_sample_value(name, labels)
        return float(got or 0.0)


@dataclass
class AssociationStats:
    calling_aet: str
    address: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    failed: int = 0


class Receiver:
    """C-ECHO + C-STORE SCP publishing every received instance through ``publisher`` (one sibling publisher per
    association, sharing the broker connection)."""

    def __init__(
        self,
        settings: ReceiverSettings,
        publisher: Publisher,
        *,
        free_space: Callable[[str], int | None] = free_bytes,
        metrics: ReceiverMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.free_space = free_space
        self.metrics = metrics or ReceiverMetrics()
        self._server: Any = None
        self._lock = threading.Lock()
        self._assocs: dict[int, tuple[Publisher, AssociationStats]] = {}
        self._draining = False
        self.totals = {"associations": 0, "refused": 0, "stored": 0, "duplicates": 0, "quarantined": 0, "failed": 0}

    # -------------------------------------------------------------------------------------------- set-up

    def _ae(self) -> Any:
        from pynetdicom import AE, _config

        # pynetdicom's standard handlers log request details (UIDs) at DEBUG: ours log what is safe.
        _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_REQUEST_IDENTIFIERS = False
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)

        ae = AE(ae_title=self.settings.receiver_ae_title)
        # Admission is decided in the EVT_REQUESTED handler (one place, with the reason logged).
        ae.require_called_aet = False
        # Admission refuses beyond receiver_max_associations (logged, counted); pynetdicom's own limit is a backstop.
        ae.maximum_associations = self.settings.receiver_max_associations + 1
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs for big images
        syntaxes = readable_transfer_syntaxes()
        ae.add_supported_context(VERIFICATION_SOP_CLASS, syntaxes)
        for uid in storage_sop_classes():
            ae.add_supported_context(uid, syntaxes)
        return ae

    def start(self, *, block: bool = False) -> None:
        """Listen on ``receiver_host:receiver_port``; with ``block`` serve until :meth:`stop` (another thread)."""
        from pynetdicom import evt

        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        ae = self._ae()
        address = (self.settings.receiver_host, self.settings.receiver_port)
        self._server = ae.start_server(address, block=False, evt_handlers=handlers)
        log.info(
            "DICOM receiver %s listening on %s:%d for index %s (%d storage SOP classes, %d transfer syntaxes)",
            self.settings.receiver_ae_title, *address, self.publisher.index, len(storage_sop_classes()),
            len(readable_transfer_syntaxes()),
        )
        if block:
            while self._server is not None:
                time.sleep(0.2)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._server is None:
            return self.settings.receiver_port
        return int(self._server.server_address[1])

    def active(self) -> int:
        with self._lock:
            return len(self._assocs)

    def stop(self, grace: float = 30.0) -> None:
        """Refuse new associations, let open ones finish (up to ``grace`` seconds), then close."""
        self._draining = True
        deadline = time.monotonic() + grace
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.1)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
        self.publisher.close()
        log.info("DICOM receiver stopped: %s", self.totals)

    # ------------------------------------------------------------------------------------------- handlers

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor
        refusal = admission(
            calling_aet=str(rq.primitive.calling_ae_title),
            called_aet=str(rq.primitive.called_ae_title),
            ae_title=self.settings.receiver_ae_title,
            allowed_aets=self.settings.receiver_allowed_aets,
            require_called_aet=self.settings.receiver_require_called_aet,
            free=self.free_space(self.publisher.object_store_url),
            min_free=self.settings.receiver_min_free_mb * 2**20,
            draining=self._draining,
            active=self.active(),
            max_associations=self.settings.receiver_max_associations,
        )
        if refusal is None:
            return
        self.metrics.associations.labels(refusal.code).inc()
        with self._lock:
            self.totals["refused"] += 1
        log.warning("refused association from %s (%s:%s): %s", str(rq.primitive.calling_ae_title).strip(),
                    rq.address, rq.port, refusal.reason)
        assoc.acse.send_reject(refusal.result, refusal.source, refusal.diagnostic)
        assoc.kill()

    def _on_accepted(self, event: Any) -> None:
        rq = event.assoc.requestor
        stats = AssociationStats(str(rq.ae_title).strip(), f"{rq.address}:{rq.port}")
        with self._lock:
            self._assocs[id(event.assoc)] = (self.publisher.sibling("dicom-receiver"), stats)
            self.totals["associations"] += 1
        self.metrics.associations.labels("accepted").inc()
        self.metrics.active.inc()
        log.info("association from %s (%s) accepted", stats.calling_aet, stats.address)

    def _on_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int | tuple[int, Any]:
        t0 = time.perf_counter()
        status, outcome = self._store(event)
        self.metrics.instances.labels(outcome).inc()
        if outcome != "failed":
            self.metrics.store_seconds.observe(time.perf_counter() - t0)
        return status

    def _store(self, event: Any) -> tuple[int, str]:
        with self._lock:
            entry = self._assocs.get(id(event.assoc))
        if entry is None:  # (cannot happen: stores arrive only on accepted associations)
            return STATUS_PROCESSING_FAILURE, "failed"
        publisher, stats = entry
        free = self.free_space(publisher.object_store_url)
        if free is not None and free < self.settings.receiver_min_free_mb * 2**20:
            stats.failed += 1
            log.error("refused an instance from %s: the object store's disk is nearly full (%d MB free)",
                      stats.calling_aet, free // 2**20)
            return STATUS_OUT_OF_RESOURCES, "failed"
        try:
            data = part10(event.file_meta, event.request.DataSet.getvalue())
        except (ValueError, AttributeError, TypeError) as err:
            stats.failed += 1
            log.warning("cannot encode an instance from %s: %s", stats.calling_aet, type(err).__name__)
            return STATUS_CANNOT_UNDERSTAND, "failed"
        self.metrics.bytes.inc(len(data))
        try:
            result = publisher.publish_dicom(data, filename=f"c-store from {stats.calling_aet}")
            publisher.flush()
        except StoreError as err:
            stats.failed += 1
            log.error("object store failed for an instance from %s: %s", stats.calling_aet, type(err).__name__)
            return STATUS_OUT_OF_RESOURCES, "failed"
        except PublishError as err:
            stats.failed += 1
            log.error("broker failed for an instance from %s: %s", stats.calling_aet, err)
            return STATUS_PROCESSING_FAILURE, "failed"
        if result.status == "rejected":
            stats.failed += 1
            log.warning("rejected an instance from %s: %s", stats.calling_aet, result.reason)
            return STATUS_CANNOT_UNDERSTAND, "failed"
        if result.status == "duplicate":
            stats.duplicates += 1
            return STATUS_SUCCESS, "duplicate"
        if result.status == "quarantined":
            stats.quarantined += 1
            log.warning("quarantined an instance from %s: %s", stats.calling_aet, result.reason)
            return STATUS_SUCCESS, "quarantined"
        stats.stored += 1
        return STATUS_SUCCESS, "stored"

    def _on_closed(self, event: Any) -> None:
        with self._lock:
            entry = self._assocs.pop(id(event.assoc), None)
        if entry is None:
            return
        self.metrics.active.dec()
        publisher, stats = entry
        try:
            publisher.close()
        except PublishError as err:
            log.error("broker failed while closing the association from %s: %s", stats.calling_aet, err)
        with self._lock:
            self.totals["stored"] += stats.stored
            self.totals["duplicates"] += stats.duplicates
            self.totals["quarantined"] += stats.quarantined
            self.totals["failed"] += stats.failed
        how = {"EVT_RELEASED": "released", "EVT_ABORTED": "aborted"}.get(event.event.name, "closed")
        log.info(
            "association from %s (%s) %s after %.1fs: %d stored, %d duplicates, %d quarantined, %d failed",
            stats.calling_aet, stats.address, how, time.monotonic() - stats.started, stats.stored,
            stats.duplicates, stats.quarantined, stats.failed,
        )
