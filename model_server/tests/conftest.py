"""Shared fixtures: one seeded random model per backend at a small input size, and its ONNX export cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from medsearch_model_server.embedder import Embedder, load_embedder
from ms_helpers import config, dicom_file

# One intra-op thread in the test process: on a shared 2-core machine torch's spinning OpenMP threads otherwise
# slow every in-process test down several times (results do not depend on the thread count).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported ONNX files for the whole session (shared with the server subprocesses)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def onnx_embedder(model_cache: Path) -> Embedder:
    return load_embedder(config(model_cache, backend="onnx"))


@pytest.fixture(scope="session")
def torch_embedder(model_cache: Path) -> Embedder:
    return load_embedder(config(model_cache, backend="torch", device="cpu"))


@pytest.fixture(scope="session")
def ct_bytes() -> bytes:
    return dicom_file("CT_small.dcm").read_bytes()


@pytest.fixture(scope="session")
def chest_bytes() -> bytes:
    """pydicom-data's real chest radiograph (CR, MONOCHROME1, 15-bit)."""
    return dicom_file("RG1_UNCR.dcm").read_bytes()


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make torchvision's weight download fail as it does offline, without sending anything."""
    import torch.hub

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    yield
