"""Dynamic batching in front of a backend: concurrent requests are grouped into one inference call.

A batch is closed when it holds ``max_batch_size`` images or when its oldest request has waited
``max_latency_ms``; requests queued while the previous batch ran are taken at once. Inference runs in one
dedicated worker thread, so the event loop keeps accepting and decoding requests meanwhile. A request larger
than ``max_batch_size`` is split into chunks. Results are split back per request in order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Infer = Callable[[NDArray[np.float32]], NDArray[np.float32]]
OnBatch = Callable[[int, float], None]  # (batch size, inference seconds)


@dataclass
class _Item:
    x: NDArray[np.float32]
    future: asyncio.Future[NDArray[np.float32]]
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(
        self,
        infer: Infer,
        *,
        max_batch_size: int,
        max_latency_ms: float,
        on_batch: OnBatch | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_latency = max(0.0, max_latency_ms) / 1000.0
        self._on_batch = on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_images = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def submit(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Embed ``x`` ([n, ...]) as part of whatever batch forms; returns the ``n`` rows for this request."""
        n = int(x.shape[0])
        if n > self.max_batch_size:
            chunks = [x[i : i + self.max_batch_size] for i in range(0, n, self.max_batch_size)]
            parts = await asyncio.gather(*(self.submit(c) for c in chunks))
            return np.concatenate(parts, axis=0)
        loop = self._ensure_running()
        item = _Item(x, loop.create_future())
        self._pending.append(item)
        self._pending_images += n
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    def _ensure_running(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(), name="dynamic-batcher")
        return loop

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        while self._pending and size + int(self._pending[0].x.shape[0]) <= self.max_batch_size:
            item = self._pending.popleft()
            n = int(item.x.shape[0])
            self._pending_images -= n
            if item.future.cancelled():
                continue
            batch.append(item)
            size += n
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            while not self._pending:
                wakeup.clear()
                await wakeup.wait()
            deadline = self._pending[0].enqueued + self.max_latency
            while self._pending_images < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            t0 = time.monotonic()
            try:
                xs = np.concatenate([it.x for it in batch], axis=0) if len(batch) > 1 else batch[0].x
                out = await loop.run_in_executor(self._executor, self._infer, xs)
            except Exception as err:  # noqa: BLE001  # handed to every waiting request, the loop goes on
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(err)
                continue
            if self._on_batch is not None:
                self._on_batch(int(xs.shape[0]), time.monotonic() - t0)
            start = 0
            for it in batch:
                n = int(it.x.shape[0])
                if not it.future.done():
                    it.future.set_result(out[start : start + n])
                start += n

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
