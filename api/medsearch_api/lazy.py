"""Clients made on first use: the gateway starts, and answers /healthz, before its dependencies do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    """One ``T``, made by ``make`` on the first :meth:`get` (under a lock: made once however many threads ask);
    :meth:`close` forgets it and closes it with ``close``, so that the next :meth:`get` makes a new one."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], None]) -> None:
        self._make = make
        self._close = close
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def close(self) -> None:
        with self._lock:
            value, self._value = self._value, None
        if value is not None:
            self._close(value)
