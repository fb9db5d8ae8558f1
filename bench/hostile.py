"""Cost of refusing hostile input, and of building snippets; prints one JSON document on stdout.

* a Deflated DICOM bomb (``--zeros`` bytes of zeros behind a small header; 3 GiB by default, ~3 MB on the wire):
  seconds and peak traced memory for ``medsearch.imaging.check_image_limits`` and for a full ``decode_image_bytes``
  (both refuse it);
* a PNG whose header declares 200 MP: seconds to refuse;
* ``make_snippet`` over a 60,000-character report in which the query words occur 1,500 times each.

    python bench/hostile.py [--zeros BYTES] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Seconds over ``repeat`` runs, then the peak traced memory of one more run (tracing slows it down)."""

    def once() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001  # refusals are the point: only their cost is measured
            pass

    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        seconds.append(time.perf_counter() - t0)
    tracemalloc.start()
    once()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4),
            "peak_traced_mib": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zeros", type=int, default=3 * 1024**3, help="zero bytes behind the bomb's header")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from medsearch_api.search import make_snippet
    from medsearch_dev.hostile import deflated_dicom_bomb, png_header_only

    from medsearch.imaging import check_image_limits, decode_image_bytes

    bomb = deflated_dicom_bomb(zeros=args.zeros)
    png = png_header_only(20000, 10000)
    report = "There is a small left pleural effusion. " * 1500
    out = {
        "benchmark": "hostile",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "deflated_bomb": {"inflated_bytes": args.zeros, "wire_bytes": len(bomb),
                          "check_image_limits": timed(lambda: check_image_limits(bomb), args.repeat),
                          "decode_image_bytes": timed(lambda: decode_image_bytes(bomb), args.repeat)},
        "png_200mp_header": timed(lambda: decode_image_bytes(png), args.repeat),
        "snippet_60k_chars": {"chars": len(report),
                              **timed(lambda: make_snippet(report, "effusion the small", width=200), args.repeat)},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
