"""`docker run` arguments for a container of a Kubernetes pod spec: the images tier runs each image the way the
chart (or the operator's pod builders) runs it, so the flags are derived from the rendered pod spec, never written
by hand.

What carries over: the user and group (container securityContext over the pod's; the image's USER when neither
sets one, which ``runAsNonRoot`` then requires to be numeric and non-zero), ``readOnlyRootFilesystem`` →
``--read-only``, dropped/added capabilities, ``allowPrivilegeEscalation: false`` → ``no-new-privileges``, every
volume mount (emptyDir → a tmpfs, with ``sizeLimit``; configMap/secret/other → a host directory the caller
supplies, read-only where the mount is), the container's ``env`` values, its command and args. The network is
the host's (the services of the test run on loopback).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|k|M|G)?$")
_FACTOR = {None: 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


class PodSpecError(ValueError):
    """The pod spec asks for something this runner cannot reproduce (it says what)."""


def quantity_bytes(value: str) -> int:
    m = _QUANTITY.match(str(value))
    if not m:
        raise PodSpecError(f"unsupported quantity {value!r}")
    return int(m.group(1)) * _FACTOR[m.group(2)]


def pick_container(pod_spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec["containers"]
    if name is None:
        if len(containers) != 1:
            raise PodSpecError(f"{len(containers)} containers: name the one to run")
        return containers[0]
    for c in containers:
        if c["name"] == name:
            return c
    raise PodSpecError(f"no container {name!r} (have {[c['name'] for c in containers]})")


def objects_data(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Rendered ConfigMaps and Secrets → ``{"ConfigMap/NAME": data, "Secret/NAME": data}`` for ``run_args``."""
    import base64

    out: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("kind") == "ConfigMap":
            out[f"ConfigMap/{obj['metadata']['name']}"] = {k: str(v) for k, v in (obj.get("data") or {}).items()}
        elif obj.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
            out[f"Secret/{obj['metadata']['name']}"] = data
    return out


def _env_from(c: dict[str, Any], sources: dict[str, dict[str, str]]) -> dict[str, str]:
    """``envFrom`` and ``env[].valueFrom`` resolved against ``sources`` (see :func:`objects_data`)."""
    out: dict[str, str] = {}
    for ref in c.get("envFrom", []):
        kind, body = ("ConfigMap", ref["configMapRef"]) if "configMapRef" in ref else ("Secret", ref["secretRef"])
        data = sources.get(f"{kind}/{body['name']}")
        if data is None:
            if body.get("optional"):
                continue
            raise PodSpecError(f"envFrom {kind} {body['name']!r}: not among the given objects")
        out.update({k: v for k, v in data.items() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)})
    for e in c.get("env", []):
        src = e.get("valueFrom") or {}
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if key in src:
                sel = src[key]
                value = sources.get(f"{kind}/{sel['name']}", {}).get(sel["key"])
                if value is None and not sel.get("optional"):
                    raise PodSpecError(f"env {e['name']}: {kind} {sel['name']!r} key {sel['key']!r} not given")
                if value is not None:
                    out[e["name"]] = value
    return out


def run_args(pod_spec: dict[str, Any], *, container: str | None = None, image_user: str = "",
             volumes: dict[str, Path] | None = None, env: dict[str, str] | None = None,
             sources: dict[str, dict[str, str]] | None = None, name: str | None = None) -> list[str]:
    """Arguments after ``docker run`` up to and including the image placeholder ``{image}`` (the caller substitutes
    the image reference) and the container's command/args.

    ``volumes`` maps the pod's non-emptyDir volume names to host directories; ``env`` adds or overrides
    environment variables (the values the ConfigMap/Secret ``envFrom`` would give, pointed at the test's services).
    ``image_user`` is the image's configured ``USER`` (``docker image inspect``), used when the spec sets no user.
    ``sources`` resolves ``envFrom`` and ``valueFrom`` (ConfigMaps and Secrets, see :func:`objects_data`).
    """
    c = pick_container(pod_spec, container)
    pod_sc: dict[str, Any] = pod_spec.get("securityContext") or {}
    sc: dict[str, Any] = {**pod_sc, **(c.get("securityContext") or {})}
    args = ["--network=host", "--rm"]
    if name:
        args += ["--name", name]

    uid = sc.get("runAsUser")
    gid = sc.get("runAsGroup")
    if uid is None:
        user = image_user.split(":")[0]
        if not user.isdigit():
            if sc.get("runAsNonRoot"):
                raise PodSpecError(f"runAsNonRoot with no runAsUser needs a numeric image USER, not {image_user!r}")
        else:
            uid = int(user)
            if gid is None and ":" in image_user and image_user.split(":")[1].isdigit():
                gid = int(image_user.split(":")[1])
    if sc.get("runAsNonRoot") and (uid is None or int(uid) == 0):
        raise PodSpecError("runAsNonRoot, but the container would run as root")
    if uid is not None:
        args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
    if "fsGroup" in pod_sc:
        args += ["--group-add", str(pod_sc["fsGroup"])]

    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop", []):
        args += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        args += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("privileged"):
        raise PodSpecError("privileged containers are not reproduced")

    pod_volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        vol = pod_volumes.get(mount["name"])
        if vol is None:
            raise PodSpecError(f"volumeMount {mount['name']!r} names no volume of the pod")
        path = mount["mountPath"]
        if "emptyDir" in vol:
            opts = ["rw", "exec", "mode=1777"]
            limit = (vol["emptyDir"] or {}).get("sizeLimit")
            if limit:
                opts.append(f"size={quantity_bytes(limit)}")
            args += ["--tmpfs", f"{path}:{','.join(opts)}"]
            continue
        host = (volumes or {}).get(mount["name"])
        if host is None:
            raise PodSpecError(f"volume {mount['name']!r} ({', '.join(k for k in vol if k != 'name')}) mounted at "
                               f"{path}: give a host directory for it")
        source = Path(host) / mount["subPath"] if mount.get("subPath") else Path(host)
        args += ["-v", f"{source}:{path}:{'ro' if mount.get('readOnly') else 'rw'}"]

    merged: dict[str, str] = _env_from(c, sources or {})
    for e in c.get("env", []):
        if "value" in e:
            merged[e["name"]] = str(e["value"])
    merged.update(env or {})
    for key, value in merged.items():
        args += ["-e", f"{key}={value}"]

    command = c.get("command")
    if command:
        args += ["--entrypoint", command[0]]
    args.append("{image}")
    if command:
        args += list(command[1:])
    args += [str(a) for a in c.get("args", [])]
    return args


def volume_dirs(pod_spec: dict[str, Any], sources: dict[str, dict[str, str]], root: Path) -> dict[str, Path]:
    """Host folders holding the pod's configMap and secret volumes as the kubelet would project them: the listed
    ``items`` (else every key) as files with ``defaultMode`` (0644 unless set), group-owned by the pod's
    ``fsGroup`` when it has one. Volumes whose object is missing are left out (an ``optional`` one is then
    simply absent; a required one makes :func:`run_args` name it)."""
    import os

    fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
    out: dict[str, Path] = {}
    for vol in pod_spec.get("volumes", []):
        for key, kind, name_key in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName")):
            if key not in vol:
                continue
            body = vol[key]
            data = sources.get(f"{kind}/{body[name_key]}")
            if data is None:
                continue
            folder = root / vol["name"]
            folder.mkdir(parents=True, exist_ok=True)
            items = body.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    raise PodSpecError(f"volume {vol['name']!r}: {kind} {body[name_key]!r} has no key {item['key']!r}")
                path = folder / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data[item["key"]])
                path.chmod(int(item.get("mode", body.get("defaultMode", 0o644))))
                if fs_group is not None:
                    os.chown(path, -1, int(fs_group))
            folder.chmod(0o755)
            out[vol["name"]] = folder
    return out
