"""Every name an index owns outside Kubernetes, derived in this one module.

An index is identified by its ``metadata.name`` and, in a cluster, its ``metadata.namespace``: the operator watches
all namespaces, so ``demo`` in namespace ``a`` and ``demo`` in namespace ``b`` are two indexes and must never share a
Kafka topic, a consumer group, a Milvus collection, a PostgreSQL schema or an object-store prefix (deleting one with
``deletionPolicy: Delete`` would drop the other's data). The mapping (documented in docs/architecture.md):

=====================  ===============================  ===================================================
name                   local stack (no namespace)       index ``NAME`` in namespace ``NS``
=====================  ===============================  ===================================================
Kafka topics           ``NAME.dicom|reports|dlq|audit`` ``NS.NAME.dicom|reports|dlq|audit``
consumer groups        ``medsearch-NAME-dicom|report``  ``medsearch-NS.NAME-dicom|report``
Milvus collections     ``NAME_images|reports``          ``medsearch_NS__NAME_HASH_images|reports``
PostgreSQL schema      ``medsearch_NAME``               ``medsearch_NS__NAME_HASH`` (at most 63 bytes)
object-store prefix    ``NAME/``                        ``NS/NAME/``
=====================  ===============================  ===================================================

In Milvus and PostgreSQL names ``-`` becomes ``_`` and ``HASH`` is the first 8 hex digits of
``sha256("NS/NAME")``: the ``-``→``_`` mapping alone is not one-to-one (``a--b``/``c`` and ``a``/``b-c``), the hash
keeps two different (namespace, name) pairs apart; a schema name longer than PostgreSQL's 63 bytes keeps the hash
and shortens the readable part. Kafka names allow ``.``, which neither a namespace nor an index name contains, so
they stay readable and one-to-one without a hash (at most 63 + 1 + 40 + 7 characters, under Kafka's 249).
Local names are unchanged from before namespaces were known, so existing local data stays where it is.

A process learns its index's namespace from ``MEDSEARCH_INDEX_NAMESPACE`` (the operator renders it into the index's
ConfigMap; the chart into the gateway's), see :meth:`medsearch.contracts.settings.ServiceSettings.index_names`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TypeAlias

from medsearch.contracts.spec import SpecError, validate_index_name

# A Kubernetes namespace is a DNS-1123 label.
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PG_IDENTIFIER_MAX = 63
MILVUS_NAME_MAX = 255
KAFKA_TOPIC_MAX = 249
_PG_PREFIX = "medsearch_"
_HASH_LEN = 8


def validate_namespace(namespace: str) -> str:
    if not _NAMESPACE_RE.match(namespace):
        raise SpecError(f"metadata.namespace: {namespace!r} is not a Kubernetes namespace (a DNS label of at most "
                        "63 characters)")
    return namespace


@dataclass(frozen=True)
class IndexNames:
    """The external names of index ``index`` in ``namespace`` (``None``: the local stack's unscoped names)."""

    index: str
    namespace: str | None = None

    @property
    def _kafka_base(self) -> str:
        return self.index if self.namespace is None else f"{self.namespace}.{self.index}"

    @property
    def dicom_topic(self) -> str:
        return f"{self._kafka_base}.dicom"

    @property
    def reports_topic(self) -> str:
        return f"{self._kafka_base}.reports"

    @property
    def dlq_topic(self) -> str:
        return f"{self._kafka_base}.dlq"

    @property
    def audit_topic(self) -> str:
        """The optional audit stream (``MEDSEARCH_AUDIT_KAFKA``); not provisioned with the index's topics."""
        return f"{self._kafka_base}.audit"

    @property
    def topics(self) -> tuple[str, str, str]:
        return (self.dicom_topic, self.reports_topic, self.dlq_topic)

    @property
    def dicom_consumer_group(self) -> str:
        return f"medsearch-{self._kafka_base}-dicom"

    @property
    def report_consumer_group(self) -> str:
        return f"medsearch-{self._kafka_base}-report"

    @property
    def _hash(self) -> str:
        return hashlib.sha256(f"{self.namespace}/{self.index}".encode()).hexdigest()[:_HASH_LEN]

    @property
    def _readable(self) -> str:
        # Milvus names allow letters, digits and '_'; PostgreSQL identifiers unquoted the same (lowercase).
        if self.namespace is None:
            return self.index.replace("-", "_")
        return f"{self.namespace.replace('-', '_')}__{self.index.replace('-', '_')}"

    @property
    def _collection_base(self) -> str:
        if self.namespace is None:
            return self._readable
        return f"{_PG_PREFIX}{self._readable}_{self._hash}"

    @property
    def images_collection(self) -> str:
        return f"{self._collection_base}_images"

    @property
    def reports_collection(self) -> str:
        return f"{self._collection_base}_reports"

    @property
    def collections(self) -> tuple[str, str]:
        return (self.images_collection, self.reports_collection)

    @property
    def pg_schema(self) -> str:
        """The PostgreSQL schema holding the index's tables (one schema per index; at most 63 bytes)."""
        if self.namespace is None:
            return f"{_PG_PREFIX}{self._readable}"
        room = PG_IDENTIFIER_MAX - len(_PG_PREFIX) - 1 - _HASH_LEN
        return f"{_PG_PREFIX}{self._readable[:room].rstrip('_')}_{self._hash}"

    @property
    def object_prefix(self) -> str:
        """The index's folder in the object store (uploaded objects, reports, thumbnails, the privacy policy)."""
        return self.index if self.namespace is None else f"{self.namespace}/{self.index}"

    def __str__(self) -> str:
        return self.index if self.namespace is None else f"{self.namespace}/{self.index}"


# What functions that act on an index accept: a bare name (the local stack's unscoped names) or the scoped names.
IndexRef: TypeAlias = "str | IndexNames"


def names_for(index: str, namespace: str | None = None) -> IndexNames:
    """The names of ``index`` in ``namespace``; ``None`` (or empty) gives the local stack's unscoped names."""
    return IndexNames(validate_index_name(index), validate_namespace(namespace) if namespace else None)


def names_of(index: IndexRef) -> IndexNames:
    """``index`` as names: a bare name is the local stack's (unscoped) index."""
    return index if isinstance(index, IndexNames) else names_for(index)
