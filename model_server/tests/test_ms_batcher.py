"""The dynamic batcher groups concurrent requests, keeps results in order and isolates failures."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from medsearch_model_server.batcher import DynamicBatcher


def tagged(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def test_concurrent_requests_are_batched_and_answered_in_order() -> None:
    sizes: list[int] = []
    threads: set[str] = set()

    def infer(x: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        time.sleep(0.02)
        return x * 2

    async def main() -> list[np.ndarray]:
        b = DynamicBatcher(infer, max_batch_size=8, max_latency_ms=50, on_batch=lambda n, s: sizes.append(n))
        try:
            return await asyncio.gather(*(b.submit(tagged(10 * i, 1 + i % 3)) for i in range(12)))
        finally:
            b.close()

    results = asyncio.run(main())
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out, tagged(10 * i, 1 + i % 3) * 2)
    assert sum(sizes) == sum(1 + i % 3 for i in range(12))
    assert max(sizes) <= 8 and len(sizes) < 12  # grouped, never above the limit
    assert len(threads) == 1 and next(iter(threads)).startswith("inference")


def test_lone_request_waits_at_most_max_latency() -> None:
    async def main() -> float:
        b = DynamicBatcher(lambda x: x, max_batch_size=32, max_latency_ms=30)
        t0 = time.monotonic()
        await b.submit(tagged(0, 1))
        b.close()
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0


def test_oversized_request_is_split() -> None:
    sizes: list[int] = []

    async def main() -> np.ndarray:
        b = DynamicBatcher(lambda x: x + 1, max_batch_size=4, max_latency_ms=1, on_batch=lambda n, s: sizes.append(n))
        out = await b.submit(tagged(0, 10))
        b.close()
        return out

    np.testing.assert_array_equal(asyncio.run(main()), tagged(0, 10) + 1)
    assert max(sizes) == 4 and sum(sizes) == 10


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_going() -> None:
    calls = {"n": 0}

    def infer(x: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return x

    async def main() -> np.ndarray:
        b = DynamicBatcher(infer, max_batch_size=4, max_latency_ms=0)
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(tagged(0, 1))
        out = await b.submit(tagged(5, 2))
        b.close()
        return out

    np.testing.assert_array_equal(asyncio.run(main()), tagged(5, 2))
