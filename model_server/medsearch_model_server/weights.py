"""Where the DenseNet121 weights come from: ``imagenet``, ``random`` (seeded, loudly), a local PATH or a URI.

Resolution happens once, in ``load()``; nothing is downloaded at request time. Supported files:

* ``*.pth`` / ``*.pt`` / ``*.bin``: a state dict (plain, under ``state_dict`` / ``model_state_dict`` / ``model``,
  with or without a ``module.`` prefix, a full torchvision DenseNet121 or only its ``features``; CheXNet-style
  ``densenet121.features.*`` keys work too), loaded with ``weights_only``; a whole pickled model only with the
  explicit ``allow_pickle`` opt-in (unpickling runs code from the file);
* TorchScript archives (``torch.jit.save``);
* ONNX files (``*.onnx``) mapping ``[N, 3, S, S]`` to ``[N, 1024]`` (or a ``[N, 1024, h, w]`` feature map).

A directory (e.g. KServe's ``/mnt/models``) is searched for the first of ``model.onnx``, ``model.pt``,
``model.pth``, ``model.ts``, then any single ``*.onnx|*.pt|*.pth`` file. URIs are copied with fsspec into the
cache directory first; only ``https://`` and object stores (``s3://``, ``gs://``, ``gcs://``, ``az://``,
``abfs://``, ``abfss://``) are accepted, plus ``file://`` for local files (never plain ``http://``). An expected
``sha256`` of the model file, when given, must match or nothing is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from medsearch.contracts.settings import ModelServerSettings

from .config import IMAGENET_FILE
from .config import WeightsError as WeightsError  # re-exported: callers catch it from here

log = logging.getLogger("medsearch_model_server.weights")

WeightsKind = Literal["imagenet", "random", "state_dict", "full_model", "torchscript", "onnx"]
_MODEL_FILE_NAMES = ("model.onnx", "model.pt", "model.pth", "model.ts", "model.torchscript")
_MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".ts", ".torchscript", ".bin")
# torchvision's legacy DenseNet checkpoints name layers "norm.1" instead of "norm1".
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


@dataclass(frozen=True)
class WeightsInfo:
    kind: WeightsKind
    source: str  # the spec as given (a path, a URI, "imagenet", "random")
    version: str  # e.g. "imagenet1k_v1-a639ec97", "random-seed0", "sha256:0123abcd4567"
    path: Path | None  # the local file, when there is one
    key: str  # a file-name-safe cache key (weights identity)


@dataclass
class ResolvedWeights:
    """Weights identified (``info``, torch-free); the torch module is built only when :attr:`module` is read, so a
    cached ONNX export of these weights serves without PyTorch installed."""

    info: WeightsInfo
    onnx_path: Path | None  # a user ONNX file to run as is
    load_module: Callable[[], Any] | None = field(default=None, repr=False)

    @cached_property
    def module(self) -> Any | None:
        """torch.nn.Module mapping [N,3,S,S] -> [N,1024] unit norm (None for ONNX files)."""
        return None if self.load_module is None else self.load_module()


def torch_network(what: str) -> ModuleType:
    """:mod:`.network` (PyTorch), or a WeightsError saying that ``what`` needs PyTorch and how to do without."""
    try:
        from . import network
    except ImportError as err:
        raise WeightsError(
            f"{what} needs PyTorch, which is not installed ({err}): install medsearch-model-server[torch], or "
            "serve an ONNX export of the model (medsearch-model-server --export-onnx, run where torch is installed)"
        ) from err
    return network


ALLOWED_SCHEMES = ("https", "s3", "gs", "gcs", "az", "abfs", "abfss", "file")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_uri(spec: str) -> bool:
    return "://" in spec


def check_uri_scheme(uri: str) -> None:
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in ALLOWED_SCHEMES:
        hint = " (use https://)" if scheme == "http" else ""
        raise WeightsError(
            f"{uri}: {scheme}:// is not allowed for model weights{hint}; use one of "
            f"{', '.join(s + '://' for s in ALLOWED_SCHEMES)}"
        )


def check_sha256(path: Path, digest: str, expected: str | None) -> None:
    """Refuse a model file whose sha256 is not the one the configuration pins."""
    if expected is None:
        return
    if _SHA256.fullmatch(expected) is None:
        raise WeightsError(f"expected sha256 {expected!r} is not 64 lowercase hexadecimal digits")
    if digest != expected:
        raise WeightsError(
            f"{path}: sha256 mismatch: the file is {digest}, the configuration expects {expected}; refusing to load it"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_uri(uri: str, cache_dir: Path) -> Path:
    """Copy a model URI (any fsspec protocol) into ``cache_dir`` once; return the local file or directory."""
    import fsspec

    check_uri_scheme(uri)
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if uri.startswith("pvc://"):
        raise WeightsError(
            f"{uri}: pvc:// URIs are mounted by KServe's storage initializer; pass the mounted path "
            "(e.g. /mnt/models) instead"
        )
    target = cache_dir / "downloads" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "model"
    dest = target / name
    if dest.exists():
        return dest
    target.mkdir(parents=True, exist_ok=True)
    try:
        fs, _, paths = fsspec.get_fs_token_paths(uri)
        src = paths[0]
        if fs.isdir(src):
            fs.get(src, str(dest), recursive=True)
        else:
            tmp = target / (name + ".part")
            fs.get(src, str(tmp))
            tmp.rename(dest)
    except Exception as err:  # fsspec backends raise many types (auth, network, missing)
        raise WeightsError(f"{uri}: cannot download the model: {type(err).__name__}: {err}") from err
    return dest


def find_model_file(path: Path) -> Path:
    """A model file itself, or the model file inside a directory (KServe's /mnt/models layout)."""
    if path.is_file():
        return path
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory (expected imagenet, random, a model file or a URI)")
    for name in _MODEL_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _MODEL_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise WeightsError(
        f"{path}: cannot tell which file is the model (looked for {', '.join(_MODEL_FILE_NAMES)}; "
        f"model-like files: {found})"
    )


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def normalise_state_dict(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Map a checkpoint's keys onto torchvision's ``densenet121().features`` keys."""
    for wrapper in ("state_dict", "model_state_dict", "model"):
        inner = raw.get(wrapper)
        if isinstance(inner, dict) and inner:
            raw = inner
            break
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            continue
        k = key[len("module.") :] if key.startswith("module.") else key
        idx = k.find("features.")
        if idx < 0:
            continue  # the classifier (or anything else outside the feature extractor) is not used
        k = k[idx + len("features.") :]
        m = _LEGACY_KEY.match(k)
        if m:
            k = m.group(1) + m.group(2)
        out[k] = value
    if not out:
        sample = ", ".join(list(map(str, raw.keys()))[:5])
        raise WeightsError(f"{source}: no DenseNet121 'features.*' weights in this state dict (first keys: {sample})")
    return out


def _tensor_state_dict(obj: Any) -> bool:
    import torch

    return (isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values())) or (
        isinstance(obj, dict) and any(isinstance(obj.get(w), dict) for w in ("state_dict", "model_state_dict", "model"))
    )


def check_onnx_file(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # onnx raises ValidationError / DecodeError / OSError
        raise WeightsError(f"{path}: not a valid ONNX model: {err}") from err


def _torch_file_module(path: Path, source: str, allow_pickle: bool) -> tuple[WeightsKind, Any]:
    network = torch_network(f"{path} (a PyTorch file)")
    if is_torchscript(path):
        return "torchscript", network.load_torchscript(path)
    obj = network.torch_load(path, allow_pickle=allow_pickle)
    if _tensor_state_dict(obj):
        return "state_dict", network.densenet_from_state_dict(normalise_state_dict(obj, str(path)), str(path))
    log.warning("%s: loaded a whole pickled model (allowed by --allow-pickle)", path)
    return "full_model", network.from_full_model(obj, source)


def resolve_weights(cfg: ModelServerSettings) -> ResolvedWeights:
    """Turn ``--weights`` into a torch module (or an ONNX file). Raises :class:`WeightsError`.

    ``weights_sha256``: the expected digest of the model file (refused on mismatch); ``allow_pickle``: the explicit
    opt-in to unpickle a whole pickled model (never done otherwise). ``imagenet`` and ``random`` are only
    identified here: their torch module is built when first needed (not at all when an ONNX export is cached)."""
    spec, seed, sha256 = cfg.weights.strip(), cfg.seed, cfg.weights_sha256
    if sha256 is not None and spec == "random":
        raise WeightsError("a weights sha256 was given but the weights are 'random' (there is no file to check)")
    if spec == "random":
        try:
            torch_version = importlib.metadata.version("torch").split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            torch_network("--weights random")  # raises: random weights are drawn by torch
            raise
        version = f"random-seed{seed}"
        info = WeightsInfo("random", spec, version, None, f"{version}-torch{torch_version}")
        log.warning(
            "WARNING: serving RANDOM DenseNet121 weights (seed %d): embeddings are NOT meaningful for search. "
            "Use --weights imagenet or a trained model for real use.",
            seed,
        )
        return ResolvedWeights(info, None, lambda: torch_network("--weights random").random_densenet(seed))
    if spec == "imagenet":
        digest = IMAGENET_FILE.split("-")[1].split(".")[0]
        info = WeightsInfo("imagenet", spec, f"imagenet1k_v1-{digest}", None, f"imagenet1k_v1-{digest}")

        def imagenet() -> Any:
            module, path = torch_network("--weights imagenet").imagenet_densenet()
            if sha256 is not None:
                check_sha256(path, sha256_file(path), sha256)
            return module

        weights = ResolvedWeights(info, None, imagenet)
        if sha256 is not None:
            _ = weights.module  # the pinned digest is checked before anything is served
        return weights

    local = fetch_uri(spec, cfg.cache_dir) if is_uri(spec) else Path(spec).expanduser()
    path = find_model_file(local)
    digest = sha256_file(path)
    check_sha256(path, digest, sha256)
    version = f"sha256:{digest[:12]}"
    key = f"file-{digest[:16]}"
    if path.suffix == ".onnx":
        check_onnx_file(path)
        return ResolvedWeights(WeightsInfo("onnx", spec, version, path, key), path)
    kind, module = _torch_file_module(path, str(path), cfg.allow_pickle)
    return ResolvedWeights(WeightsInfo(kind, spec, version, path, key), None, lambda: module)
