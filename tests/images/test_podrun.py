"""tests/images/podrun.py: `docker run` flags from a pod spec (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from podrun import PodSpecError, objects_data, quantity_bytes, run_args

RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def pod(**container: object) -> dict[str, object]:
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "containers": [{"name": "app", "image": "x", "securityContext": RESTRICTED,
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "spec", "mountPath": "/etc/medsearch", "readOnly": True}],
                        **container}],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    {"name": "spec", "configMap": {"name": "c"}}],
    }


def test_restricted_pod_becomes_locked_down_flags(tmp_path: Path) -> None:
    optional = {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}
    args = run_args(pod(env=[{"name": "A", "value": "1"}, {"name": "S", "valueFrom": optional}],
                        command=["python", "-m", "mod"], args=["--x", 3]),
                    volumes={"spec": tmp_path}, env={"B": "2"})
    joined = " ".join(args)
    assert "--user 10001:10001" in joined and "--group-add 10001" in joined
    assert "--read-only" in args and "--cap-drop ALL" in joined and "--security-opt no-new-privileges" in joined
    assert f"--tmpfs /tmp:rw,exec,mode=1777,size={64 * 1024 * 1024}" in joined
    assert f"-v {tmp_path}:/etc/medsearch:ro" in joined
    assert "-e A=1" in joined and "-e B=2" in joined and "S=" not in joined
    assert args[args.index("--entrypoint") + 1] == "python"
    assert args[args.index("{image}"):] == ["{image}", "-m", "mod", "--x", "3"]


def test_image_user_is_used_when_the_spec_sets_none() -> None:
    spec = pod()
    spec["securityContext"] = {"runAsNonRoot": True}
    args = run_args(spec, image_user="10001:10001", volumes={"spec": Path("/x")})
    assert args[args.index("--user") + 1] == "10001:10001"
    with pytest.raises(PodSpecError, match="numeric image USER"):
        run_args(spec, image_user="medsearch", volumes={"spec": Path("/x")})
    with pytest.raises(PodSpecError, match="root"):
        run_args(spec, image_user="0", volumes={"spec": Path("/x")})


def test_every_mount_needs_a_source() -> None:
    with pytest.raises(PodSpecError, match=r"'spec'.*configMap"):
        run_args(pod())
    bad = pod()
    bad["containers"][0]["volumeMounts"].append({"name": "nope", "mountPath": "/n"})  # type: ignore[index]
    with pytest.raises(PodSpecError, match="names no volume"):
        run_args(bad, volumes={"spec": Path("/x")})


def test_quantities() -> None:
    assert quantity_bytes("64Mi") == 64 * 2**20 and quantity_bytes("1G") == 10**9 and quantity_bytes("512") == 512
    with pytest.raises(PodSpecError):
        quantity_bytes("1.5Gi")


def test_env_from_configmaps_and_secrets() -> None:
    spec = pod(envFrom=[{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "opt", "optional": True}}],
               env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "A", "value": "x"}])
    sources = objects_data([{"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"A": "cm", "B": "2",
                                                                                         "index.yaml": "not env"}},
                            {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "c2VjcmV0"}}])
    joined = " ".join(run_args(spec, volumes={"spec": Path("/x")}, sources=sources))
    assert "-e A=x" in joined and "-e B=2" in joined and "-e K=secret" in joined and "index.yaml" not in joined
    with pytest.raises(PodSpecError, match="'s' key 'k'"):
        run_args(spec, volumes={"spec": Path("/x")}, sources={"ConfigMap/cfg": {}})
