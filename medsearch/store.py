"""Object store access through fsspec: ``file://`` locally, ``s3://`` (s3fs) in clusters, ``memory://`` in tests."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any
from urllib.parse import urlsplit


class StoreError(RuntimeError):
    """The object store failed (transient from a worker's point of view)."""


class PermanentStoreError(StoreError):
    """Reading the object can never succeed as asked (not found, not a file, no permission, unknown scheme, outside
    the allowed store): dead-lettered, never retried."""


class ObjectNotFound(PermanentStoreError):
    """The object does not exist (permanent)."""


class ForbiddenURI(PermanentStoreError):
    """The URI is outside the configured object store (scheme, bucket/host or prefix): nothing is read."""


def _parts(url: str) -> tuple[str, str, str]:
    """(scheme, bucket/host, path) of an object store URL; a bare path is a ``file`` URL."""
    u = urlsplit(url)
    scheme = (u.scheme or "file").lower()
    if len(scheme) == 1 and not u.netloc:  # a Windows drive letter is no scheme
        scheme = "file"
    return scheme, u.netloc.lower(), u.path


def check_within(url: str, base: str) -> None:
    """Refuse (:class:`ForbiddenURI`, naming the reason) any ``url`` that is not an object under ``base``.

    Same scheme, same bucket/host, a path under the base's prefix with no ``.``/``..``/empty segment, no query,
    fragment, credentials, backslash, NUL or percent-escape; for ``file`` URLs the real path (symbolic links
    resolved) must stay under the real base too. Pure apart from that ``realpath``; reads nothing.
    """
    if not isinstance(url, str) or not url:
        raise ForbiddenURI("empty object URI")
    shown = url if len(url) <= 200 else url[:200] + "..."
    scheme, host, path = _parts(url)
    b_scheme, b_host, b_path = _parts(base)
    if scheme != b_scheme:
        raise ForbiddenURI(f"{shown}: scheme {scheme!r} is not the object store's ({b_scheme!r}); nothing was read")
    u = urlsplit(url)
    if u.query or u.fragment or "@" in u.netloc:
        raise ForbiddenURI(f"{shown}: query, fragment or credentials are not allowed in object URIs")
    if host != b_host:
        raise ForbiddenURI(f"{shown}: bucket/host {host!r} is not the object store's ({b_host!r}); nothing was read")
    if any(c in path for c in ("\\", "\x00", "%")):
        raise ForbiddenURI(f"{shown}: backslash, NUL or percent-escape in the object path")
    prefix = b_path.rstrip("/") + "/"
    if not path.startswith(prefix) or len(path) == len(prefix):
        raise ForbiddenURI(f"{shown}: outside the object store prefix {prefix!r}; nothing was read")
    if any(seg in ("", ".", "..") for seg in path[len(prefix):].split("/")):
        raise ForbiddenURI(f"{shown}: '.', '..' or empty segments are not allowed in object paths")
    if scheme == "file":
        real_base = os.path.realpath(b_path)
        if not os.path.realpath(path).startswith(real_base.rstrip("/") + "/"):
            raise ForbiddenURI(f"{shown}: resolves outside the object store (symbolic link); nothing was read")


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


def get_bytes(url: str, *, within: str | None = None) -> bytes:
    """The object's bytes. With ``within`` (the object store's base URL) the URL is checked first
    (:func:`check_within`) and nothing outside it is opened.

    Raises :class:`PermanentStoreError` (not found, a folder, no permission, unknown scheme, forbidden) or
    :class:`StoreError` (anything else: the store may come back).
    """
    if within is not None:
        check_within(url, within)
    try:
        fs, path = _fs(url)
    except ValueError as err:  # fsspec: "Protocol not known", unparsable URL
        raise PermanentStoreError(f"cannot open {url}: {err}") from err
    except ImportError as err:  # a known protocol whose driver is not installed: a deployment problem
        raise PermanentStoreError(f"cannot open {url}: {err}") from err
    try:
        with fs.open(path, "rb") as fh:
            data: bytes = fh.read()
            return data
    except FileNotFoundError as err:
        raise ObjectNotFound(f"object not found: {url}") from err
    except (IsADirectoryError, NotADirectoryError) as err:
        raise PermanentStoreError(f"not a file: {url}") from err
    except PermissionError as err:
        raise PermanentStoreError(f"permission denied: {url}") from err
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read {url}: {err}") from err


def exists(url: str) -> bool:
    try:
        fs, path = _fs(url)
        return bool(fs.exists(path))
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot stat {url}: {err}") from err
