"""medsearch_api.lazy.Lazy: a client made once on first use (whatever the number of threads asking), closed and
made again after close."""

from __future__ import annotations

import threading
import time

from medsearch_api.lazy import Lazy


def test_made_once_for_concurrent_callers_and_again_after_close() -> None:
    made: list[object] = []
    closed: list[object] = []

    def make() -> object:
        time.sleep(0.05)  # a slow connect: callers arriving meanwhile must wait for it, not make their own
        made.append(obj := object())
        return obj

    lazy: Lazy[object] = Lazy(make, closed.append)
    assert made == []  # nothing is made before it is needed
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(lazy.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got == [made[0]] * 8
    lazy.close()
    assert closed == [made[0]]
    lazy.close()  # closing twice closes nothing more
    assert closed == [made[0]]
    assert lazy.get() is made[1] and len(made) == 2
