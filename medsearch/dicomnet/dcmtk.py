"""Helpers for driving dcmtk's ``storescu`` against the receiver (tests, benchmarks, documentation examples).

``storescu`` proposes only uncompressed transfer syntaxes unless told otherwise, and cannot transcode JPEG 2000,
JPEG-LS or RLE to them: to send compressed files as they are, it needs an association negotiation profile
(``-xf FILE PROFILE``) that proposes each file's own transfer syntax. :func:`storescu_profile` writes one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

PROFILE_NAME = "Medsearch"
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")


def storescu_profile(files: Iterable[str | Path]) -> str:
    """A dcmtk ``storescu`` configuration whose profile :data:`PROFILE_NAME` proposes, for every (SOP class,
    transfer syntax) pair found in ``files``, a presentation context with exactly that transfer syntax
    (uncompressed ones together). Raises ValueError beyond the 128 contexts an association can carry."""
    import pydicom

    pairs: set[tuple[str, str]] = set()
    for f in files:
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        ts = str(ds.file_meta.TransferSyntaxUID)
        pairs.add((str(ds.SOPClassUID), "uncompressed" if ts in _UNCOMPRESSED else ts))
    if len(pairs) > 128:
        raise ValueError(f"{len(pairs)} presentation contexts needed; an association carries at most 128")
    syntaxes = sorted({ts for _, ts in pairs})
    keys = {ts: f"TS{i}" for i, ts in enumerate(syntaxes, start=1)}
    lines = ["[[TransferSyntaxes]]"]
    for ts in syntaxes:
        lines.append(f"[{keys[ts]}]")
        members = _UNCOMPRESSED if ts == "uncompressed" else (ts,)
        lines += [f"TransferSyntax{i} = {uid}" for i, uid in enumerate(members, start=1)]
    lines += ["", "[[PresentationContexts]]", "[Contexts]"]
    for i, (sop, ts) in enumerate(sorted(pairs), start=1):
        lines.append(f"PresentationContext{i} = {sop}\\{keys[ts]}")
    lines += ["", "[[Profiles]]", f"[{PROFILE_NAME}]", "PresentationContexts = Contexts", ""]
    return "\n".join(lines)


def dcmtk_tool(name: str) -> str | None:
    """The dcmtk program ``name`` (``echoscu``, ``storescu``) on PATH, skipping pynetdicom's console scripts of the
    same name (a virtual environment's ``bin`` comes first on PATH)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which(name, path=folder)
        if not candidate:
            continue
        try:
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return candidate
    return None
