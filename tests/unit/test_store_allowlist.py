"""The object store allow-list: workers read only objects under the configured store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsearch import store


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("file:///data/objects/demo/dicom/a.dcm", "file:///data/objects"),
        ("file:///data/objects/demo/reports/a.txt", "file:///data/objects/"),
        ("s3://bucket/medsearch/demo/dicom/a.dcm", "s3://bucket/medsearch"),
        ("S3://Bucket/medsearch/x", "s3://bucket/medsearch"),
        ("memory://unit/x.txt", "memory://unit"),
        ("/data/objects/x", "file:///data/objects"),
    ],
)
def test_allowed(url: str, base: str) -> None:
    store.check_within(url, base)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "outside the object store prefix"),
        ("http://169.254.169.254/latest/meta-data/", "scheme 'http'"),
        ("nope://x", "scheme 'nope'"),
        ("s3://other/medsearch/x", "scheme 's3'"),
        ("file:///data/objects/../../etc/passwd", "not allowed"),
        ("file:///data/objects/demo//x", "not allowed"),
        ("file:///data/objects", "outside"),
        ("file:///data/objects/", "outside"),
        ("file:///data/objectsX/a", "outside"),
        ("file:///data/objects/a%2e%2e/b", "percent"),
        ("file:///data/objects/a?x=1", "query"),
        ("file://host/data/objects/a", "bucket/host"),
        ("", "empty"),
    ],
)
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(store.ForbiddenURI, match=reason):
        store.check_within(url, "file:///data/objects")


def test_other_bucket_and_prefix() -> None:
    with pytest.raises(store.ForbiddenURI, match="bucket/host 'other'"):
        store.check_within("s3://other/medsearch/x", "s3://bucket/medsearch")
    with pytest.raises(store.ForbiddenURI, match="prefix"):
        store.check_within("s3://bucket/elsewhere/x", "s3://bucket/medsearch")


def test_symlink_out_of_the_store_is_refused_and_nothing_read(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the index")
    os.symlink(secret, root / "link.txt")
    with pytest.raises(store.ForbiddenURI, match="symbolic link"):
        store.get_bytes(f"file://{root}/link.txt", within=f"file://{root}")


def test_permanent_read_failures(tmp_path: Path) -> None:
    root = f"file://{tmp_path}"
    (tmp_path / "folder").mkdir()
    with pytest.raises(store.ObjectNotFound):
        store.get_bytes(f"{root}/missing", within=root)
    with pytest.raises(store.PermanentStoreError, match="not a file"):
        store.get_bytes(f"{root}/folder", within=root)
    with pytest.raises(store.PermanentStoreError, match="cannot open"):
        store.get_bytes("nope://x")
    locked = tmp_path / "locked"
    locked.write_text("x")
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(store.PermanentStoreError, match="permission"):
            store.get_bytes(f"{root}/locked", within=root)
