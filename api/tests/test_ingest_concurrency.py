"""Concurrent uploads through the gateway's ingest adapter do not queue behind one lock: each waits only for its
own broker acknowledgement (a sibling publisher per upload on the one shared producer)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from medsearch.contracts.settings import ApiSettings
from medsearch.producer import Publisher


class _Ack:
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def get(self, timeout: float | None = None) -> None:
        if not self.release.wait(timeout):
            raise TimeoutError("no acknowledgement")


class SlowFirstProducer:
    """Acknowledges every send at once, except the first report's, which waits for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sends = 0
        self._lock = threading.Lock()

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> Any:
        with self._lock:
            self.sends += 1
            first = self.sends == 1
        done = threading.Event()
        if not first:
            done.set()
        return _Ack(self.release if first else done)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_a_slow_acknowledgement_does_not_hold_up_other_uploads(tmp_path: Path) -> None:
    from medsearch_api.adapters import PublisherIngest

    store_url = f"file://{tmp_path}"
    producer = SlowFirstProducer()
    ingest = PublisherIngest(ApiSettings(object_store_url=store_url, index="demo"))
    ingest._publisher = Publisher(bootstrap="unused:1", object_store_url=store_url, index="demo", producer=producer,
                                  deidentifier=None)
    results: dict[str, Any] = {}

    def upload(name: str) -> None:
        results[name] = ingest._with_publisher(lambda p: p.publish_report(report_id=name, text=f"{name} text"))

    slow = threading.Thread(target=upload, args=("r-slow",))
    slow.start()
    deadline = time.monotonic() + 5
    while producer.sends < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    fast = threading.Thread(target=upload, args=("r-fast",))
    fast.start()
    fast.join(timeout=5)
    try:
        assert not fast.is_alive(), "the second upload waited for the first one's acknowledgement"
        assert "r-fast" in results and slow.is_alive()
    finally:
        producer.release.set()
        slow.join(timeout=10)
    assert "r-slow" in results
