"""Names derived from an index name: Kafka topics, Milvus collections, the PostgreSQL schema, Kubernetes children."""

from __future__ import annotations

from dataclasses import dataclass

from medsearch.contracts.spec import validate_index_name


@dataclass(frozen=True)
class IndexNames:
    index: str

    @property
    def dicom_topic(self) -> str:
        return f"{self.index}.dicom"

    @property
    def reports_topic(self) -> str:
        return f"{self.index}.reports"

    @property
    def dlq_topic(self) -> str:
        return f"{self.index}.dlq"

    @property
    def topics(self) -> tuple[str, str, str]:
        return (self.dicom_topic, self.reports_topic, self.dlq_topic)

    @property
    def _collection_base(self) -> str:
        # Milvus collection names allow letters, digits and '_', not '-'.
        return self.index.replace("-", "_")

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
        """The PostgreSQL schema holding the index's tables (one schema per index; lowercase, '_' for '-')."""
        return f"medsearch_{self._collection_base}"

    @property
    def dicom_consumer_group(self) -> str:
        return f"medsearch-{self.index}-dicom"

    @property
    def report_consumer_group(self) -> str:
        return f"medsearch-{self.index}-report"


def names_for(index: str) -> IndexNames:
    return IndexNames(validate_index_name(index))
