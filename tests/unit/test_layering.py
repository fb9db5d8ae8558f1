"""The layers hold (docs/architecture.md): the import-linter contracts in pyproject.toml are kept by the source,
and they break on each kind of violation they exist for, lazy imports inside functions included."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pyproject.toml"
ROOT_PACKAGES: list[str] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["importlinter"]["root_packages"]


def _lint_imports(cwd: Path, pythonpath: list[str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "COLUMNS": "200"}  # one line per contract
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--config", str(cwd / "pyproject.toml")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _source_root(package: str) -> str:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not importable"
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def test_the_source_keeps_every_layering_contract() -> None:
    result = _lint_imports(REPO, sorted({_source_root(p) for p in ROOT_PACKAGES}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _tree(tmp_path: Path, modules: dict[str, str]) -> Path:
    """Every root package as an empty package, plus ``modules`` ({dotted name: source}), and the real contracts."""
    for package in ROOT_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    for name, source in modules.items():
        path = tmp_path.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.with_suffix(".py").write_text(source, encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


CORE = "The core (medsearch) imports no deployable"
_LAZY_WORKERS = "def analyze():\n    from medsearch_workers.nlp import Analyzer\n    return Analyzer\n"
_ALLOWED = {
    "medsearch.contracts": "X = 1\n",
    "medsearch.cli.ingest": "from medsearch.contracts import X\n",
    "medsearch_workers.nlp": "from medsearch.contracts import X\nAnalyzer = X\n",
    "medsearch_workers.cli": "def register(app):\n    from medsearch_workers.nlp import Analyzer\n",
    "medsearch_api.app": "from medsearch.contracts import X\n",
    "medsearch_dev.localstack.procs": "import medsearch_api.app\nimport medsearch.cli.ingest\n",
}


def test_a_tree_within_the_layers_passes(tmp_path: Path) -> None:
    result = _lint_imports(_tree(tmp_path, _ALLOWED), [str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        ("medsearch.cli.nlp", _LAZY_WORKERS, CORE),
        ("medsearch.cli.embed", "import medsearch_model_server.embedder\n", CORE),
        ("medsearch.testing", "from medsearch_dev.localstack import procs\n", CORE),
        ("medsearch_api.app", "def ready():\n    from medsearch_dev.localstack.procs import http_ready\n",
         "Deployables import neither the dev tools"),
        ("medsearch_operator.main", "from medsearch.cli import ingest\n", "Deployables import neither"),
        ("medsearch_api.entities", "from medsearch_workers.nlp import Analyzer\n", "Deployables are independent"),
    ],
)
def test_each_violation_breaks_a_contract(tmp_path: Path, module: str, source: str, contract: str) -> None:
    result = _lint_imports(_tree(tmp_path, {**_ALLOWED, module: source}), [str(tmp_path)])
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
