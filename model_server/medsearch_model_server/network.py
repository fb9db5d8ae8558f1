"""The DenseNet121 embedding network: ``features → ReLU → global average pool → flatten → L2 norm`` (1024-d)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # the usual torch alias
from torch import nn

from .config import IMAGENET_FILE, WeightsError


class PooledEmbedding(nn.Module):
    """A feature extractor (``[N, C]`` or a ``[N, C, h, w]`` map; of a tuple, the first) pooled to ``[N, C]`` and
    L2-normalised. ``relu``: a ReLU before pooling, as in DenseNet's own head (:func:`densenet_embedding`)."""

    def __init__(self, features: nn.Module, *, relu: bool = False) -> None:
        super().__init__()
        self.features = features
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if isinstance(f, (tuple, list)):
            f = f[0]
        if self.relu:
            f = F.relu(f)
        if f.dim() == 4:
            f = F.adaptive_avg_pool2d(f, 1)
        return F.normalize(f.flatten(1).float(), p=2.0, dim=1)


def densenet_embedding(features: nn.Module) -> nn.Module:
    """torchvision DenseNet121 ``features`` with the seed's pooling head, in eval mode."""
    return PooledEmbedding(features, relu=True).eval()


def _densenet_features() -> nn.Module:
    from torchvision.models import densenet121

    features: nn.Module = densenet121(weights=None).features
    return features


def random_densenet(seed: int) -> nn.Module:
    """Seeded random initialisation (torchvision's own init): the same seed gives the same weights."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return densenet_embedding(_densenet_features())
    finally:
        torch.random.set_rng_state(gen_state)


def imagenet_densenet() -> tuple[nn.Module, Path]:
    """torchvision's ImageNet weights, from the torch hub cache (downloaded there if missing and online)."""
    from torchvision.models import DenseNet121_Weights, densenet121

    cached = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    try:
        model = densenet121(weights=DenseNet121_Weights.IMAGENET1K_V1)
    except Exception as err:  # urllib/ssl/hash errors: all mean "cannot get the weights"
        raise WeightsError(
            f"imagenet: torchvision's DenseNet121 ImageNet weights are not in the cache ({cached}) and could not "
            f"be downloaded ({type(err).__name__}: {err}). Copy {IMAGENET_FILE} there (or set TORCH_HOME), or "
            "pass --weights PATH|URI"
        ) from err
    return densenet_embedding(model.features), cached


def torch_load(path: Path, *, allow_pickle: bool = False) -> Any:
    """A state dict safely (``weights_only``). A whole pickled model is unpickled only with ``allow_pickle``:
    unpickling runs whatever code the file names, so without the opt-in such a file is refused unopened."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # not plain tensors: a whole pickled model
    except Exception as err:  # corrupt/truncated archives raise RuntimeError, EOFError, ...
        raise WeightsError(f"{path}: not a readable PyTorch file: {type(err).__name__}: {err}") from err
    if not allow_pickle:
        raise WeightsError(
            f"{path}: not plain tensors but a pickled Python object (a whole model); unpickling runs code from the "
            "file, so it is refused. Save a state dict, TorchScript or ONNX instead, or, for a file you trust, "
            "pass --allow-pickle (MEDSEARCH_MODEL_ALLOW_PICKLE=true)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # unpickling a model may fail in many ways (missing classes...)
        raise WeightsError(f"{path}: cannot unpickle the model: {type(err).__name__}: {err}") from err


def densenet_from_state_dict(state: dict[str, Any], source: str) -> nn.Module:
    features = _densenet_features()
    result = features.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{source}: the state dict does not fit DenseNet121's features "
            f"(missing {len(result.missing_keys)}: {result.missing_keys[:3]}; "
            f"unexpected {len(result.unexpected_keys)}: {result.unexpected_keys[:3]})"
        )
    return densenet_embedding(features)


def from_full_model(obj: Any, source: str) -> nn.Module:
    """A whole model (or TorchScript archive) as an embedding: DenseNet-like ones by their ``features``."""
    if not isinstance(obj, nn.Module):
        raise WeightsError(f"{source}: expected a state dict or an nn.Module, found {type(obj).__name__}")
    features = getattr(obj, "features", None)
    if isinstance(features, nn.Module):
        return densenet_embedding(features)
    return PooledEmbedding(obj).eval()


def load_torchscript(path: Path) -> nn.Module:
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]  # untyped in torch
    except Exception as err:  # TorchScript loading raises RuntimeError variants
        raise WeightsError(f"{path}: cannot load the TorchScript archive: {err}") from err
    return from_full_model(scripted, str(path))


def export_onnx(module: nn.Module, path: Path, input_size: int, *, opset: int = 17) -> None:
    """Export the fp32 CPU embedding network once (dynamic batch axis), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    example = torch.zeros(1, 3, input_size, input_size)
    module = module.to("cpu", dtype=torch.float32).to(memory_format=torch.contiguous_format).eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deliberate: it needs no onnxscript and exports DenseNet in seconds.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=["pixel_values"],
            output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    tmp.replace(path)
