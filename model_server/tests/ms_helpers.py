"""Helpers shared by the model server tests (a module of its own: test files cannot import conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medsearch.contracts.settings import ModelServerSettings

SIZE = 64  # the properties tested here do not depend on the input size; 64² keeps the suite fast


def dicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(str(path))


def config(cache: Path, **kw: object) -> ModelServerSettings:
    args: dict[str, object] = {"weights": "random", "input_size": SIZE, "seed": 0, **kw}
    return ModelServerSettings(cache_dir=cache, **args)  # type: ignore[arg-type]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
