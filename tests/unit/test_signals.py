"""A long-running CLI command stops on SIGTERM/SIGINT through the same handlers as the workers."""

from __future__ import annotations

import os
import signal

from medsearch.cli.common import stop_on_signals


def test_a_cli_command_stop_event_is_set_by_sigterm_and_sigint() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in before:
            stop = stop_on_signals()
            assert not stop.is_set()
            os.kill(os.getpid(), sig)
            assert stop.wait(5)
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)
