"""Adapters from the gateway to the other components: the text model (query embedding), the model server
(upload embedding) and the publisher (ingest mutations). Each is created lazily and maps the component's
errors onto GraphQL error codes."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from medsearch.contracts.settings import ApiSettings
from medsearch.kafka_security import kafka_security_options
from medsearch_api import blocking, errors
from medsearch_api.context import Ingest
from medsearch_api.lazy import Lazy


async def embed_query_text(text: str) -> list[float]:
    """all-MiniLM-L6-v2 query vector (the same model the report worker indexes with)."""

    def run() -> list[float]:
        try:
            from medsearch.text_embedding import embed_texts
        except ImportError as err:
            raise errors.dependency_unavailable("the text embedding model", err, "; use mode: KEYWORD") from err
        try:
            return [float(x) for x in embed_texts([text])[0]]
        except (ImportError, RuntimeError, OSError) as err:
            raise errors.dependency_unavailable("the text embedding model", err, "; use mode: KEYWORD") from err

    return await blocking.run("text-model", run)


class ImageEmbedder:
    """Embeds uploaded DICOM/PNG/JPEG bytes on the model server (``EmbeddingClient.embed_image_bytes``)."""

    def __init__(self, base_url: str, model_name: str, timeout: float = 60.0) -> None:
        self.base_url = base_url
        self.model_name = model_name
        self.timeout = timeout

        def make() -> Any:
            from medsearch.embedding_client import EmbeddingClient

            return EmbeddingClient(base_url, model_name, timeout=timeout)

        self._client: Lazy[Any] = Lazy(make, lambda c: c.close())

    async def __call__(self, data: bytes) -> list[float]:
        from medsearch.embedding_client import EmbeddingRejected, EmbeddingUnavailable

        def run() -> list[float]:
            try:
                return [float(x) for x in self._client.get().embed_image_bytes(data)]
            except EmbeddingRejected as err:
                raise errors.bad_input(f"the model server rejected the upload: {err}", "upload") from err
            except EmbeddingUnavailable as err:
                raise errors.dependency_unavailable("the model server", err,
                                                    "; similarImages by imageId still works") from err

        return await blocking.run("model-server", run)

    def close(self) -> None:
        self._client.close()


class PublisherIngest(Ingest):
    """The upload mutations over ``medsearch.producer.Publisher`` (one producer, created on first use)."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._publisher: Any = None
        self._lock = threading.Lock()

    def _with_publisher(self, fn: Any) -> Any:
        from medsearch.producer import LedgerUnavailable, Publisher, PublishError
        from medsearch.store import StoreError

        try:
            with self._lock:  # only the shared producer's creation is serialised
                if self._publisher is None:
                    from medsearch.ledger import Ledger

                    names = self.settings.index_names()
                    ledger = Ledger(self.settings.postgres_dsn, names,
                                    password=self.settings.postgres_secret())
                    self._publisher = Publisher(bootstrap=self.settings.kafka_bootstrap,
                                                object_store_url=self.settings.object_store_url,
                                                index=names, source="api",
                                                security=kafka_security_options(self.settings), ledger=ledger,
                                                republish_after=self.settings.ingest_republish_after_seconds)
                base = self._publisher
            # One sibling per upload: it shares the thread-safe Kafka producer but waits only for its own
            # acknowledgements, so concurrent uploads neither queue behind one lock nor behind each other's flush.
            publisher = base.sibling("api")
            try:
                result = fn(publisher)
                publisher.flush(timeout=30)  # the result is acknowledged before we answer
                return result
            finally:
                publisher.close()
        except LedgerUnavailable as err:
            raise errors.dependency_unavailable("the ingest ledger", err, "; search is not affected") from err
        except PublishError as err:
            raise errors.dependency_unavailable("the ingest broker", err, "; search is not affected") from err
        except StoreError as err:
            raise errors.dependency_unavailable("the object store", err) from err

    async def dicom(self, data: bytes, filename: str) -> Any:
        return await blocking.run("ingest", self._with_publisher, lambda p: p.publish_dicom(data, filename=filename))

    async def report(self, report_id: str, text: str, study_uid: str | None, report_date: dt.date | None) -> Any:
        return await blocking.run(
            "ingest", self._with_publisher,
            lambda p: p.publish_report(report_id=report_id, text=text, study_uid=study_uid, report_date=report_date),
        )

    def close(self) -> None:
        with self._lock:
            if self._publisher is not None:
                try:
                    self._publisher.close()
                finally:
                    if self._publisher.ledger is not None:
                        self._publisher.ledger.close()
                    self._publisher = None
