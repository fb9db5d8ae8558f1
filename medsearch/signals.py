"""How long-running processes (CLI commands, workers) stop: SIGTERM and SIGINT set an event that their loops
check, instead of killing them mid-batch."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_handlers(stop: threading.Event, on_signal: Callable[[str], None] | None = None
                          ) -> dict[signal.Signals, Any]:
    """Make SIGTERM and SIGINT set ``stop`` (and call ``on_signal`` with the signal's name). Returns the handlers
    replaced (for :func:`stopping_on_signals` to restore). Only the main thread may install handlers: elsewhere
    nothing is installed and ``{}`` is returned."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def _handler(signum: int, _frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal(signal.Signals(signum).name)
        stop.set()

    return {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}


@contextmanager
def stopping_on_signals(stop: threading.Event, on_signal: Callable[[str], None] | None = None) -> Iterator[None]:
    """:func:`install_stop_handlers` while inside; the previous handlers are restored on leaving."""
    previous = install_stop_handlers(stop, on_signal)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
