"""The embedding pipeline in process: shapes, determinism, DICOM/PNG and MONOCHROME1/2 invariance, backends,
weights modes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from medsearch_model_server.embedder import Embedder, InputError, load_embedder
from medsearch_model_server.network import random_densenet
from medsearch_model_server.weights import WeightsError, normalise_state_dict
from ms_helpers import SIZE, config, cosine, dicom_file

from medsearch.imaging import ImageDecodeError, decode_image_bytes, render_raster


def test_shape_and_unit_norm(onnx_embedder: Embedder, ct_bytes: bytes, chest_bytes: bytes) -> None:
    emb = onnx_embedder.embed_bytes([ct_bytes, chest_bytes])
    assert emb.shape == (2, 1024) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert cosine(emb[0], emb[1]) < 0.999999  # different images, different embeddings


def test_same_file_twice_is_bit_identical(
    onnx_embedder: Embedder, torch_embedder: Embedder, chest_bytes: bytes
) -> None:
    for embedder in (onnx_embedder, torch_embedder):
        a = embedder.embed_bytes([chest_bytes])
        b = embedder.embed_bytes([chest_bytes])
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "CT_small.dcm", "MR_small.dcm"])
def test_dicom_and_its_png_embed_alike(onnx_embedder: Embedder, name: str) -> None:
    data = dicom_file(name).read_bytes()
    png = render_raster(decode_image_bytes(data), "image/png")
    a, b = onnx_embedder.embed_bytes([data, png])
    assert cosine(a, b) > 0.99


def test_monochrome1_and_inverted_monochrome2_twin_embed_alike(onnx_embedder: Embedder, chest_bytes: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(chest_bytes))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    top = (1 << int(ds.BitsStored)) - 1
    twin = pydicom.dcmread(io.BytesIO(chest_bytes))
    twin.PixelData = (top - ds.pixel_array.astype(np.int32)).astype(ds.pixel_array.dtype).tobytes()
    twin.PhotometricInterpretation = "MONOCHROME2"
    twin.WindowCenter = top - float(ds.WindowCenter)
    buf = io.BytesIO()
    twin.save_as(buf)
    a, b = onnx_embedder.embed_bytes([chest_bytes, buf.getvalue()])
    assert cosine(a, b) > 0.99
    # and inverting the image without telling (wrong photometric interpretation) is a different image
    twin.PhotometricInterpretation = "MONOCHROME1"
    wrong = io.BytesIO()
    twin.save_as(wrong)
    c = onnx_embedder.embed_bytes([wrong.getvalue()])[0]
    assert cosine(a, c) < cosine(a, b)


def test_torch_and_onnx_backends_agree(onnx_embedder: Embedder, torch_embedder: Embedder, ct_bytes: bytes) -> None:
    px = np.stack([onnx_embedder.pixels_from_bytes(ct_bytes), np.zeros((3, SIZE, SIZE), np.float32)])
    a = onnx_embedder.embed_pixels(px)
    b = torch_embedder.embed_pixels(px)
    assert np.abs(a - b).max() < 1e-4
    assert onnx_embedder.info.weights.version == "random-seed0"
    assert onnx_embedder.info.parameters()["random_weights"] is True


def test_batch_composition_does_not_change_results_much(onnx_embedder: Embedder, ct_bytes: bytes) -> None:
    x = onnx_embedder.pixels_from_bytes(ct_bytes)
    alone = onnx_embedder.embed_pixels(x[None])[0]
    rng = np.random.default_rng(1)
    batch = np.concatenate([x[None], rng.standard_normal((7, 3, SIZE, SIZE)).astype(np.float32)])
    assert np.abs(onnx_embedder.embed_pixels(batch)[0] - alone).max() < 1e-5


def test_bad_inputs_are_typed_errors(onnx_embedder: Embedder, ct_bytes: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="not an image"):
        onnx_embedder.embed_bytes([b"certainly not an image"])
    with pytest.raises(ImageDecodeError):
        onnx_embedder.embed_bytes([ct_bytes[: len(ct_bytes) // 2]])
    with pytest.raises(InputError, match=r"expected shape \[N, 3, 64, 64\], got \[1, 3, 32, 32\]"):
        onnx_embedder.embed_pixels(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="NaN"):
        onnx_embedder.embed_pixels(np.full((1, 3, SIZE, SIZE), np.nan, np.float32))


# ---- weights modes -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(onnx_embedder: Embedder, ct_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    px = onnx_embedder.pixels_from_bytes(ct_bytes)[None]
    return px, onnx_embedder.embed_pixels(px)


def test_state_dict_with_prefixes_and_classifier(tmp_path: Path, reference: tuple[np.ndarray, np.ndarray]) -> None:
    px, expected = reference
    features = random_densenet(0).features.state_dict()
    # a DataParallel-wrapped full DenseNet (with classifier) under "state_dict", as training scripts save it
    ckpt = {"state_dict": {f"module.features.{k}": v for k, v in features.items()}}
    ckpt["state_dict"]["module.classifier.weight"] = torch.zeros(14, 1024)
    path = tmp_path / "model.pth"
    torch.save(ckpt, path)
    emb = load_embedder(config(tmp_path / "cache", weights=str(path), backend="torch", device="cpu"))
    assert emb.info.weights.kind == "state_dict" and emb.info.weights.version.startswith("sha256:")
    assert np.abs(emb.embed_pixels(px) - expected).max() < 1e-4


def test_legacy_torchvision_keys_are_mapped() -> None:
    state = normalise_state_dict({"features.denseblock1.denselayer1.norm.1.weight": 1}, "x")
    assert state == {"denseblock1.denselayer1.norm1.weight": 1}


def test_full_model_torchscript_and_onnx_files(
    tmp_path: Path, reference: tuple[np.ndarray, np.ndarray], onnx_embedder: Embedder
) -> None:
    px, expected = reference
    module = random_densenet(0)
    full = tmp_path / "full.pt"
    torch.save(module, full)
    scripted = tmp_path / "scripted.ts"
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3, SIZE, SIZE)), str(scripted))
    exported = Path(onnx_embedder.backend.path)
    onnx_dir = tmp_path / "mnt-models"
    onnx_dir.mkdir()
    (onnx_dir / "model.onnx").write_bytes(exported.read_bytes())
    for weights, kind, backend in [
        (full, "full_model", "torch"),
        (scripted, "torchscript", "torch"),
        (f"file://{onnx_dir}", "onnx", "auto"),
    ]:
        emb = load_embedder(config(tmp_path / "cache", weights=str(weights), backend=backend, device="cpu",
                                   allow_pickle=kind == "full_model"))
        assert emb.info.weights.kind == kind
        assert np.abs(emb.embed_pixels(px) - expected).max() < 1e-4, weights


def test_unloadable_weights_say_why(tmp_path: Path, no_network: None) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="no such file"):
        load_embedder(config(cache, weights=str(tmp_path / "missing.pth")))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match=r"garbage\.pth"):
        load_embedder(config(cache, weights=str(garbage)))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match="no DenseNet121 'features"):
        load_embedder(config(cache, weights=str(wrong)))
    classifier = tmp_path / "classifier.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 10)), classifier)
    with pytest.raises(WeightsError, match=r"expected \[1, 1024\]"):
        load_embedder(config(cache, weights=str(classifier), backend="torch", device="cpu", allow_pickle=True))
    with pytest.raises(WeightsError, match=r"imagenet.*could not be downloaded"):
        load_embedder(config(cache, weights="imagenet", backend="torch", device="cpu"))


class _Payload:
    """Unpickling this object runs ``os.mkdir(marker)``: proof of code execution if it ever happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.mkdir, (str(self.marker),)


def test_a_pickle_payload_is_never_run_without_the_opt_in(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pth"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(WeightsError, match=r"pickled Python object .* refused.*--allow-pickle"):
        load_embedder(config(tmp_path / "cache", weights=str(evil), backend="torch", device="cpu"))
    assert not marker.exists()
    # the opt-in really is what unpickles (so the check above can fail): the payload then runs
    with pytest.raises(WeightsError):
        load_embedder(config(tmp_path / "cache", weights=str(evil), backend="torch", device="cpu",
                             allow_pickle=True))
    assert marker.exists()


def test_weights_digest_is_checked_and_plain_http_refused(tmp_path: Path) -> None:
    from medsearch_model_server.weights import sha256_file

    path = tmp_path / "model.pth"
    torch.save({f"features.{k}": v for k, v in random_densenet(0).features.state_dict().items()}, path)
    digest = sha256_file(path)
    emb = load_embedder(config(tmp_path / "cache", weights=str(path), backend="torch", device="cpu",
                               weights_sha256=digest))
    assert emb.info.weights.version == f"sha256:{digest[:12]}"
    wrong = "0" * 64
    with pytest.raises(WeightsError, match=f"sha256 mismatch: the file is {digest}, the configuration expects {wrong}"):
        load_embedder(config(tmp_path / "cache", weights=str(path), backend="torch", device="cpu",
                             weights_sha256=wrong))
    for uri in ("http://models.example.org/model.pth", "ftp://models.example.org/model.pth"):
        with pytest.raises(WeightsError, match=r"is not allowed for model weights"):
            load_embedder(config(tmp_path / "cache", weights=uri))
    with pytest.raises(WeightsError, match="random"):
        load_embedder(config(tmp_path / "cache", weights="random", weights_sha256=digest))
