"""Bounded thread pools for the gateway's blocking work, one per dependency.

asyncio's default pool is small (cpu count + 4 threads): if a store hung in it, it would fill up. Everything that
blocks (Milvus calls, token validation, the model server, the ingest broker, the object store, image checks,
readiness probes, audit streaming) runs in its own bounded pool here, so that one hung dependency cannot stall
requests that do not need it (PostgreSQL is reached through its async pool, on the event loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

POOL_SIZES = {"auth": 8, "model-server": 8, "text-model": 2, "ingest": 4, "object-store": 8, "imaging": 2,
              "readiness": 4, "audit": 2,
              "milvus": 8}
_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def pool(name: str) -> ThreadPoolExecutor:
    with _lock:
        ex = _pools.get(name)
        if ex is None:
            ex = _pools[name] = ThreadPoolExecutor(max_workers=POOL_SIZES[name],
                                                   thread_name_prefix=f"medsearch-{name}")
        return ex


async def run(name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread`` on the named pool (context variables travel along, as with ``to_thread``)."""
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool(name), call)
