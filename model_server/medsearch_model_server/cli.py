"""``medsearch embed FILE...``: one DenseNet121 embedding per image file (DICOM, PNG, JPEG).

In process with the model server's own code (``--weights``, ``--backend``), or through a running model server
(``--url``). Text output: ``FILE<TAB>1024 space-separated floats``; ``--json``: one JSON object per line.
Registered on the ``medsearch`` command through this distribution's ``medsearch.cli`` entry point ``embed``; the
model code (torch, onnxruntime) is imported inside the command, so ``medsearch --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer


def _emit(path: Path, emb: Any, meta: dict[str, Any], as_json: bool) -> None:
    values = [float(v) for v in emb]
    if as_json:
        record = {"file": str(path), "dim": len(values), "embedding": values, **meta}
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        sys.stdout.write(str(path) + "\t" + " ".join(f"{v:.7g}" for v in values) + "\n")


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        files: list[Path] = typer.Argument(..., help="DICOM, PNG or JPEG files.", exists=True, dir_okay=False),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line (file, embedding, weights)."),
        weights: str = typer.Option(
            "imagenet", "--weights", help="imagenet | random (seeded, not meaningful) | PATH | URI (in process)."
        ),
        backend: str = typer.Option("auto", "--backend", help="auto | torch | onnx (in process)."),
        input_size: int = typer.Option(224, "--input-size", help="Square input size (in process)."),
        seed: int = typer.Option(0, "--seed", help="Seed of --weights random."),
        url: str | None = typer.Option(None, "--url", help="Use a running model server (e.g. http://127.0.0.1:8080)."),
        model_name: str = typer.Option("densenet121", "--model-name", help="Model name on the server."),
    ) -> None:
        """Print one L2-normalised 1024-d image embedding per file."""
        failures = 0
        if url:
            from medsearch.embedding_client import EmbeddingClient, EmbeddingRejected, EmbeddingUnavailable

            with EmbeddingClient(url, model_name=model_name) as client:
                try:
                    params = client.metadata().get("parameters", {})
                except EmbeddingUnavailable as err:
                    typer.echo(f"error: {err}", err=True)
                    raise typer.Exit(2) from None
                meta = {k: params.get(k) for k in ("weights_kind", "weights_version", "input_size")}
                for path in files:
                    try:
                        _emit(path, client.embed_image_bytes(path.read_bytes()), meta, as_json)
                    except EmbeddingRejected as err:
                        failures += 1
                        typer.echo(f"{path}: {err}", err=True)
                    except EmbeddingUnavailable as err:
                        typer.echo(f"error: {err}", err=True)
                        raise typer.Exit(2) from None
        else:
            from medsearch.contracts.settings import ModelServerSettings
            from medsearch.imaging import ImageDecodeError

            try:
                from medsearch_model_server.embedder import load_embedder
                from medsearch_model_server.weights import WeightsError
            except ImportError as err:
                typer.echo(
                    f"error: in-process embedding needs the model server's dependencies ({err}); or use --url",
                    err=True,
                )
                raise typer.Exit(2) from None
            try:
                if backend not in ("auto", "torch", "onnx"):
                    raise ValueError(f"--backend must be auto, torch or onnx, got {backend!r}")
                embedder = load_embedder(ModelServerSettings(weights=weights, backend=backend, input_size=input_size,
                                                             seed=seed))
            except (WeightsError, ValueError) as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
            info = embedder.info
            meta = {
                "weights_kind": info.weights.kind,
                "weights_version": info.weights.version,
                "input_size": info.input_size,
            }
            for path in files:
                try:
                    emb = embedder.embed_bytes([path.read_bytes()], [str(path)])[0]
                except ImageDecodeError as err:
                    failures += 1
                    typer.echo(str(err), err=True)
                    continue
                _emit(path, emb, meta, as_json)
        if failures:
            raise typer.Exit(1)
