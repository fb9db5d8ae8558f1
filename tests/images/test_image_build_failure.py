"""The tier's own check: a Dockerfile that cannot build (a COPY of a file that does not exist) fails the build
helper with a message naming the image, the failed step and the missing file."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO, build


def test_broken_dockerfile_fails_with_a_readable_message(docker_host: str, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "constraints.txt", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "tests", "node_modules", "dist")
    for folder in ("medsearch", "operator", "scripts"):
        shutil.copytree(REPO / folder, context / folder, ignore=ignore)
    for deployable in ("api", "ingest_workers", "model_server"):   # the shared stage copies every pyproject
        (context / deployable).mkdir()
        shutil.copy(REPO / deployable / "pyproject.toml", context / deployable / "pyproject.toml")
    dockerfile = context / "Dockerfile"
    text = dockerfile.read_text()
    anchor = "COPY operator/pyproject.toml operator/\n"
    assert anchor in text
    dockerfile.write_text(text.replace(anchor, anchor + "COPY operator/no-such-file.txt /src/\n", 1))

    proc = build(["operator"], context=context, timeout=1800)

    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stdout.strip() == ""      # no image reference is printed for a failed build
    lines = proc.stderr.splitlines()
    failed = [ln for ln in lines if ": failed at Step " in ln]
    assert failed, proc.stderr[-3000:]
    assert "medsearch-operator:" in failed[0]
    assert "COPY operator/no-such-file.txt /src/" in failed[0]
    assert "(Dockerfile, target operator)" in failed[0]
    assert any("no-such-file.txt" in ln and ln.startswith("  | ") for ln in lines), proc.stderr[-3000:]
