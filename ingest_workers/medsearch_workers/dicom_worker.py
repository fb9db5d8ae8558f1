"""The DICOM worker: ``<index>.dicom`` → fetch, decode, metadata, thumbnail, embed (one request per batch) →
upsert into PostgreSQL (the ``images`` table of the index's schema, one transaction per batch, the vector
included), then into the Milvus collection ``<index>_images``, both keyed by SOPInstanceUID; offsets are
committed after both.

Run it as ``python -m medsearch_workers.dicom_worker`` (or ``medsearch-dicom-worker``), configured by
``MEDSEARCH_*`` variables (:class:`~medsearch.contracts.settings.WorkerSettings`) and, when set,
``MEDSEARCH_INDEX_SPEC_FILE`` (a ``MedicalSearchIndex`` YAML).

Error classes (see :mod:`medsearch_workers.consumer`): the object store, the model server, PostgreSQL or
Milvus being unavailable is *transient* (``TransientError``: the batch is retried, nothing is committed); input that can
never succeed (bad message, missing object, not DICOM, no pixel data, undecodable, no SOPInstanceUID, an input
the model server rejects) is *permanent* and returned as a :class:`~medsearch_workers.consumer.Failure`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, Unpack

import numpy as np
from numpy.typing import NDArray

from medsearch import store
from medsearch.contracts.messages import DicomObject, MessageError
from medsearch.contracts.naming import IndexRef, names_of
from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import EmbeddingModelSpec, MedicalSearchIndexSpec
from medsearch.imaging import ImageDecodeError, decode_dicom, looks_like_dicom, preprocess, thumbnail_png
from medsearch.ledger import LEDGER_PAIRS
from medsearch_workers.consumer import Failure, Incoming, TransientError, reached
from medsearch_workers.dicom_meta import MetadataError, extract_metadata
from medsearch_workers.runtime import RuntimeParts, WorkerRuntime, worker_runtime
from medsearch_workers.runtime import main as runtime_main
from medsearch_workers.writers import RowWriter

log = logging.getLogger("medsearch.workers.dicom")

STAGES = ("fetch", "decode", "metadata", "thumbnail", "preprocess", "embed", "write")
_SAFE_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")


class Embedder(Protocol):
    def embed_tensors(self, batch: NDArray[np.float32]) -> NDArray[np.float32]: ...


@dataclass
class StageTimes:
    """Seconds spent per stage (summed over messages), for logs and ``bench/ingest.py``."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        reached(name)  # recorded in the ingest ledger when the message is handled alone (after a crash)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def thumbnail_url(object_store_url: str, index: IndexRef, sop_uid: str) -> str:
    """``<store>/<index prefix>/thumbnails/<SOPInstanceUID>.png`` (a hash for UIDs that are not file-name safe; the
    prefix is :attr:`~medsearch.contracts.naming.IndexNames.object_prefix`)."""
    name = sop_uid if _SAFE_NAME.match(sop_uid) and ".." not in sop_uid else store.sha256_hex(sop_uid.encode())
    return store.join(object_store_url, names_of(index).object_prefix, "thumbnails", f"{name}.png")


def _default_embedding_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    from medsearch.embedding_client import EmbeddingRejected, EmbeddingUnavailable

    return (EmbeddingUnavailable,), (EmbeddingRejected,)


@dataclass
class _Prepared:
    message: Incoming
    obj: DicomObject
    row: dict[str, Any]
    tensor: NDArray[np.float32]


class DicomBatchHandler:
    """The batch handler (a :data:`~medsearch_workers.consumer.Handler`); all I/O goes through injected parts."""

    def __init__(
        self,
        *,
        index: IndexRef,
        spec: MedicalSearchIndexSpec,
        object_store_url: str,
        embedder: Embedder,
        writer: RowWriter,
        input_size: int,
        model_name: str,
        model_version: str,
        unavailable_errors: tuple[type[BaseException], ...] | None = None,
        rejected_errors: tuple[type[BaseException], ...] | None = None,
        times: StageTimes | None = None,
        on_indexed: Callable[[int], None] | None = None,
        model_info: Callable[[], tuple[int, str]] | None = None,
    ) -> None:
        self.names = names_of(index)
        self.index = self.names.index  # what its messages must carry
        self.spec = spec
        self.object_store_url = object_store_url
        self.embedder = embedder
        self.writer = writer
        self.input_size = input_size
        self.model_name = model_name
        self.model_version = model_version
        if unavailable_errors is None or rejected_errors is None:
            default_unavailable, default_rejected = _default_embedding_errors()
            unavailable_errors = unavailable_errors or default_unavailable
            rejected_errors = rejected_errors or default_rejected
        self.unavailable_errors = unavailable_errors
        self.rejected_errors = rejected_errors
        self.times = times or StageTimes()
        self.on_indexed = on_indexed
        self.model_info = model_info

    # ------------------------------------------------------------------------------------------- per message

    def _prepare(self, msg: Incoming) -> _Prepared | Failure:
        try:
            obj: DicomObject = DicomObject.from_bytes(msg.raw)
        except MessageError as err:
            return Failure(msg, "decode_message", str(err))
        if obj.index != self.index:
            return Failure(msg, "decode_message", f"message for index {obj.index!r} on the topic of {self.index!r}")

        with self.times.stage("fetch"):
            try:
                data = store.get_bytes(obj.uri, within=self.object_store_url)
            except store.PermanentStoreError as err:
                return Failure(msg, "fetch", str(err))
            except store.StoreError as err:
                raise TransientError(f"object store: {err}", stage="fetch") from err
        if store.sha256_hex(data) != obj.sha256:
            return Failure(msg, "fetch", f"{obj.uri}: content does not match the message's sha256")

        with self.times.stage("decode"):
            if not looks_like_dicom(data):
                return Failure(msg, "decode", f"{obj.uri}: not an image: not a DICOM file")
            try:
                decoded = decode_dicom(data, source=obj.uri)
            except ImageDecodeError as err:
                return Failure(msg, "decode", f"{err.reason}: {err}")

        with self.times.stage("metadata"):
            try:
                meta = extract_metadata(
                    decoded.dataset, store_patient_identifiers=self.spec.privacy.store_patient_identifiers
                )
            except MetadataError as err:
                return Failure(msg, "metadata", f"{obj.uri}: {err}")

        with self.times.stage("thumbnail"):
            thumb = thumbnail_url(self.object_store_url, self.names, meta["sop_instance_uid"])
            png = thumbnail_png(decoded.image)
            try:
                store.put_bytes(thumb, png)
            except store.StoreError as err:
                raise TransientError(f"object store: {err}", stage="thumbnail") from err

        with self.times.stage("preprocess"):
            tensor = preprocess(decoded.image, self.input_size)

        row = {
            **meta,
            "report_id": "",
            "source_uri": obj.uri[:1024],
            "sha256": obj.sha256,
            "thumbnail_uri": thumb[:1024],
            "model_name": self.model_name[:64],
            "model_version": self.model_version[:32],
        }
        return _Prepared(msg, obj, row, tensor)

    # ------------------------------------------------------------------------------------------- per batch

    def _embed(self, prepared: list[_Prepared]) -> tuple[list[_Prepared], list[Failure]]:
        """One request for the batch; when the server rejects it, find the rejected inputs one by one."""
        batch = np.stack([p.tensor for p in prepared]).astype(np.float32, copy=False)
        try:
            vectors = self.embedder.embed_tensors(batch)
        except self.unavailable_errors as err:
            raise TransientError(f"model server: {err}", stage="embed") from err
        except self.rejected_errors as err:
            self._check_model_changed()
            if len(prepared) == 1:
                return [], [Failure(prepared[0].message, "embed", f"model server rejected the input: {err}")]
            log.warning("model server rejected a batch of %d (%s); retrying one by one", len(prepared), err)
            kept: list[_Prepared] = []
            failures: list[Failure] = []
            for p in prepared:
                ok, bad = self._embed([p])
                kept.extend(ok)
                failures.extend(bad)
            return kept, failures
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(prepared) or vectors.ndim != 2:
            raise TransientError(f"model server returned {vectors.shape} for a batch of {len(prepared)}", stage="embed")
        for p, vec in zip(prepared, vectors, strict=True):
            p.row["embedding"] = vec.tolist()
        return prepared, []

    def _check_model_changed(self) -> None:
        """After a rejection: if the model server now expects another input size (redeployed), adopt it and retry
        the batch (TransientError) instead of dead-lettering inputs that were only preprocessed for the old one."""
        if self.model_info is None:
            return
        try:
            size, version = self.model_info()
        except Exception as err:
            raise TransientError(f"model server metadata: {err}", stage="embed") from err
        if size != self.input_size or (version and version != self.model_version):
            log.warning(
                "model server changed (input %d -> %d, version %r -> %r): retrying the batch",
                self.input_size,
                size,
                self.model_version,
                version,
            )
            self.input_size = size
            self.model_version = version or self.model_version
            raise TransientError("the model server's input size or version changed", stage="embed")

    def __call__(self, batch: list[Incoming]) -> list[Failure]:
        failures: list[Failure] = []
        by_sop: dict[str, _Prepared] = {}
        superseded: dict[str, list[tuple[str, str]]] = {}
        for msg in batch:
            got = self._prepare(msg)
            if isinstance(got, Failure):
                failures.append(got)
            else:
                # The same image twice in a batch: one row (the last), one vector.
                sop = got.row["sop_instance_uid"]
                if sop in by_sop:
                    old = by_sop[sop].obj.sha256
                    superseded.setdefault(sop, []).append((old, old))
                by_sop[sop] = got
        if not by_sop:
            return failures
        with self.times.stage("embed"):
            prepared, rejected = self._embed(list(by_sop.values()))
        failures.extend(rejected)
        if prepared:
            now_ms = int(time.time() * 1000)
            rows = [{**p.row, "indexed_at": now_ms, LEDGER_PAIRS: superseded.get(p.row["sop_instance_uid"], [])}
                    for p in prepared]
            with self.times.stage("write"):
                self.writer.upsert(rows)
            if self.on_indexed is not None:
                self.on_indexed(len(rows))
        return failures


# ------------------------------------------------------------------------------------------------- wiring


class ModelMismatch(RuntimeError):
    """The model server does not state its input size, or states another than the index spec's."""


def model_input(metadata: dict[str, Any]) -> tuple[int | None, str]:
    """Input size (None when it states none) and model version from the model server's v2 metadata (defensive
    about its exact shape)."""
    size: int | None = None
    params = metadata.get("parameters") if isinstance(metadata.get("parameters"), dict) else {}
    for source in (metadata, params):
        for key in ("input_size", "inputSize"):
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, (int, str)) and str(value).isdigit():
                size = int(value)
                break
        else:
            continue
        break
    else:
        for inp in metadata.get("inputs") or []:
            shape = inp.get("shape") if isinstance(inp, dict) else None
            if inp.get("name") == "pixel_values" and isinstance(shape, list) and len(shape) == 4:
                if isinstance(shape[-1], int) and shape[-1] > 0:
                    size = shape[-1]
    version = ""
    versions = metadata.get("versions")
    if isinstance(versions, list) and versions:
        version = str(versions[0])
    for source in (metadata, params):
        if not version and isinstance(source, dict) and source.get("version"):
            version = str(source["version"])
    return size, version


def served_input(metadata: dict[str, Any], embedding: EmbeddingModelSpec | None = None) -> tuple[int, str]:
    """The input size the model server states (its metadata owns it) and its version. At start, ``embedding``
    (the spec's ``embedding``) checks it when the spec states ``inputSize``, and gives the version the server
    does not state. Raises :class:`ModelMismatch` when the server states no size or another than the spec's."""
    size, version = model_input(metadata)
    if size is None:
        raise ModelMismatch("the model server's metadata states no input size (parameters.input_size, or the shape "
                            "of its pixel_values input)")
    if embedding is not None:
        if "input_size" in embedding.model_fields_set and size != embedding.input_size:
            raise ModelMismatch(f"the model server takes {size}x{size} images but spec.embedding.inputSize is "
                                f"{embedding.input_size}: serve the spec's size or correct the spec")
        version = version or embedding.version
    return size, version


def _wait_for_model(client: Any, stop: threading.Event, ceiling: float) -> dict[str, Any] | None:
    from medsearch_workers.consumer import backoff_seconds

    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            meta = client.metadata()
            return dict(meta)
        except Exception as err:  # noqa: BLE001 - any failure here means "not there yet": wait
            delay = backoff_seconds(attempt, ceiling)
            log.warning("model server not ready (%s); retrying in %.1fs", err, delay)
            stop.wait(delay)
    return None


def _model_info(client: Any, fallback_version: str) -> tuple[int, str]:
    size, version = served_input(dict(client.metadata()))
    return size, version or fallback_version


def run(settings: WorkerSettings | None = None, *, times: StageTimes | None = None,
        **parts: Unpack[RuntimeParts]) -> None:
    """Run the worker until stopped (SIGTERM/SIGINT or ``stop``); ``times`` collects per-stage seconds."""
    with worker_runtime("dicom", settings, **parts) as rt:
        handler = _handler(rt, times)
        if handler is not None:
            rt.consume(handler)


def _handler(rt: WorkerRuntime, times: StageTimes | None) -> DicomBatchHandler | None:
    """The worker's handler, once the model server answers (None: stopped while waiting for it); its input size
    is the server's, checked against the spec's (:func:`served_input`)."""
    from medsearch.embedding_client import EmbeddingClient

    embedding = rt.spec.embedding
    client = EmbeddingClient(rt.settings.model_server_url, embedding.name)
    rt.closing(client.close)
    meta = _wait_for_model(client, rt.stop, rt.settings.worker_retry_max_seconds)
    if meta is None:
        return None
    input_size, version = served_input(meta, embedding)
    log.info("model %s version %s, input %dx%d", embedding.name, version, input_size, input_size)
    writer = rt.index_writer()
    return DicomBatchHandler(
        index=rt.names,
        spec=rt.spec,
        object_store_url=rt.settings.object_store_url,
        embedder=client,
        writer=writer,
        input_size=input_size,
        model_name=embedding.name,
        model_version=version,
        times=times,
        model_info=lambda: _model_info(client, version),
    )


def main(argv: Sequence[str] | None = None) -> None:
    runtime_main(run)


if __name__ == "__main__":
    main()
