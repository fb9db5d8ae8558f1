"""``python -m medsearch_model_server`` / ``medsearch-model-server``: the DenseNet121 embedding model server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medsearch.contracts.settings import ModelServerSettings

from .config import ServerConfig, default_cache_dir


def build_parser() -> argparse.ArgumentParser:
    env = ModelServerSettings()
    p = argparse.ArgumentParser(
        prog="medsearch-model-server",
        description="KServe model server turning DICOM/PNG/JPEG images into L2-normalised 1024-d DenseNet121 "
        "embeddings (Open Inference Protocol v2 REST + gRPC, KServe v1). Defaults come from MEDSEARCH_MODEL_* "
        "environment variables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--weights",
        default=env.weights,
        help="imagenet (torchvision cache/download) | random (seeded, for tests/demos only) | PATH "
        "(.pth state dict or full model, TorchScript, .onnx, or a directory such as /mnt/models) | URI "
        "(https://, s3://, gs://, az://, file://; never http://)",
    )
    p.add_argument(
        "--weights-sha256",
        default=env.weights_sha256,
        help="expected sha256 of the model file; loading is refused on a mismatch",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        default=env.allow_pickle,
        help="allow a whole pickled model (unpickling runs code from the file: only for files you trust); "
        "without it only state dicts, TorchScript and ONNX load",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default=env.backend,
        help="auto: torch on CUDA when a GPU is visible, else onnxruntime on CPU",
    )
    p.add_argument("--model-name", default=env.name, help="model name in the endpoint paths")
    p.add_argument("--input-size", type=int, default=env.input_size, help="square input size S")
    p.add_argument("--max-batch-size", type=int, default=env.max_batch_size, help="dynamic batching: largest batch")
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=env.max_latency_ms,
        help="dynamic batching: longest a request waits for others to join its batch",
    )
    p.add_argument("--http-port", type=int, default=env.http_port)
    p.add_argument("--grpc-port", type=int, default=env.grpc_port)
    p.add_argument("--host", default="0.0.0.0", help="listen address for HTTP and gRPC (127.0.0.1 for local use)")
    p.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="torch CUDA autocast dtype (auto: fp16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--device", default=None, help="torch device (cuda, cuda:1, cpu); default: CUDA when available")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="exported ONNX files and downloaded weights (also MEDSEARCH_MODEL_CACHE_DIR)",
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (0: library default)")
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="torch: keep NCHW memory layout (for baseline comparisons)",
    )
    p.add_argument(
        "--exit-on-load-failure",
        action="store_true",
        help="exit (status 3) when the weights cannot be loaded, instead of staying up unready",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--export-onnx",
        metavar="PATH",
        nargs="?",
        const="",
        default=None,
        help="export the embedding network for --weights at --input-size to ONNX and exit (needs PyTorch): to "
        "PATH, or without PATH into --cache-dir, where --backend onnx later serves it without PyTorch",
    )
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        model_name=args.model_name,
        weights=args.weights,
        backend=args.backend,
        input_size=args.input_size,
        max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        cache_dir=args.cache_dir,
        channels_last=args.channels_last,
        threads=args.threads,
        exit_on_load_failure=args.exit_on_load_failure,
        weights_sha256=args.weights_sha256,
        allow_pickle=args.allow_pickle,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    # kserve parses sys.argv when imported: hide our flags from it.
    sys.argv = sys.argv[:1]
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("medsearch_model_server").setLevel(args.log_level)
    if args.export_onnx is not None:
        from .embedder import export_onnx
        from .weights import WeightsError

        try:
            print(export_onnx(cfg, Path(args.export_onnx) if args.export_onnx else None))
        except WeightsError as err:
            sys.exit(f"error: {err}")
        return
    from .server import serve

    serve(cfg, host=args.host)


if __name__ == "__main__":
    main()
