"""``python -m medsearch_model_server`` / ``medsearch-model-server``: the DenseNet121 embedding model server.

The flags are the fields of :class:`medsearch.contracts.settings.ModelServerSettings` (``--max-batch-size`` is
``MEDSEARCH_MODEL_MAX_BATCH_SIZE``, ``--model-name`` is ``MEDSEARCH_MODEL_NAME``): the environment gives their
defaults, a flag overrides it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from medsearch.contracts.settings import ModelServerSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsearch-model-server",
        description="KServe model server turning DICOM/PNG/JPEG images into L2-normalised 1024-d DenseNet121 "
        "embeddings (Open Inference Protocol v2 REST + gRPC, KServe v1). Defaults come from MEDSEARCH_MODEL_* "
        "environment variables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env = ModelServerSettings()
    for name, field in ModelServerSettings.model_fields.items():
        kw: dict[str, Any] = {"default": getattr(env, name), "help": field.description}
        ann = field.annotation
        if ann is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(ann) is Literal:
            kw["choices"] = get_args(ann)
        else:
            kw["type"] = next(a for a in (*get_args(ann), ann) if a is not type(None))  # X | None -> X
        p.add_argument("--model-name" if name == "name" else "--" + name.replace("_", "-"), dest=name, **kw)
    p.add_argument(
        "--export-onnx",
        metavar="PATH",
        nargs="?",
        const="",
        help="export the embedding network for --weights at --input-size to ONNX and exit (needs PyTorch): to "
        "PATH, or without PATH into --cache-dir, where --backend onnx later serves it without PyTorch",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    export = args.pop("export_onnx")
    try:
        cfg = ModelServerSettings(**args)
    except ValidationError as err:
        parser.error(str(err))
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("medsearch_model_server").setLevel(cfg.log_level)
    if export is not None:
        from .embedder import export_onnx
        from .weights import WeightsError

        try:
            print(export_onnx(cfg, Path(export) if export else None))
        except WeightsError as err:
            sys.exit(f"error: {err}")
        return
    from .server import serve

    serve(cfg)


if __name__ == "__main__":
    main()
