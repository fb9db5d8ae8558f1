"""Prometheus metrics of the embedding server, registered in the default registry that KServe's ``/metrics``
serves (beside KServe's own ``request_*_seconds`` histograms)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LABELS = ["model_name"]

REQUEST_SECONDS = Histogram(
    "medsearch_embedding_request_seconds",
    "End-to-end latency of an inference request inside the model (decode, queue, inference), by protocol/outcome.",
    [*LABELS, "protocol", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
REQUEST_IMAGES = Histogram(
    "medsearch_embedding_request_images",
    "Images per inference request.",
    LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_SIZE = Histogram(
    "medsearch_embedding_batch_size",
    "Images per backend call after dynamic batching.",
    LABELS,
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256),
)
BATCH_SECONDS = Histogram(
    "medsearch_embedding_batch_seconds",
    "Backend inference time per batch.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IMAGES_TOTAL = Counter("medsearch_embedding_images", "Images embedded.", LABELS)
REJECTED_TOTAL = Counter(
    "medsearch_embedding_rejected", "Requests rejected as invalid input (4xx), by reason.", [*LABELS, "reason"]
)
