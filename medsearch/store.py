"""Object store access through fsspec: ``file://`` locally, ``s3://`` (s3fs) in clusters, ``memory://`` in tests."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any


class StoreError(RuntimeError):
    """The object store failed (transient from a worker's point of view)."""


class ObjectNotFound(StoreError):
    """The object does not exist (permanent)."""


def join(base: str, *parts: str) -> str:
    """Join URL parts with '/', refusing components that would escape the base ('..', absolute)."""
    out = base.rstrip("/")
    for p in parts:
        for seg in p.split("/"):
            if seg in ("", "."):
                continue
            if seg == ".." or "\\" in seg or "\x00" in seg:
                raise ValueError(f"unsafe object key component {seg!r}")
            out += "/" + seg
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def put_bytes(url: str, data: bytes) -> None:
    """Write ``data`` at ``url`` atomically where the filesystem allows it (temp file + rename locally)."""
    try:
        fs, path = _fs(url)
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        if getattr(fs, "protocol", None) in ("file", ("file", "local")):
            # unique per writer: two receivers' associations may store the same object at the same moment
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}-{sha256_hex(data)[:12]}"
            with fs.open(tmp, "wb") as fh:
                fh.write(data)
            fs.mv(tmp, path)
        else:
            with fs.open(path, "wb") as fh:
                fh.write(data)
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot write {url}: {err}") from err


def get_bytes(url: str) -> bytes:
    try:
        fs, path = _fs(url)
        with fs.open(path, "rb") as fh:
            data: bytes = fh.read()
            return data
    except FileNotFoundError as err:
        raise ObjectNotFound(f"object not found: {url}") from err
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read {url}: {err}") from err


def exists(url: str) -> bool:
    try:
        fs, path = _fs(url)
        return bool(fs.exists(path))
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot stat {url}: {err}") from err
