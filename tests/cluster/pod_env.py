"""A container's environment, built from the pod spec the way the kubelet builds it.

Owns `env` (plain values, `valueFrom` fieldRef/secretKeyRef/configMapKeyRef), `envFrom`
(secretRef/configMapRef with `optional` and `prefix`), `$(VAR)` expansion in env values,
command and args, and the kubelet's error messages when a referenced object or key is
missing (the pod then waits with CreateContainerConfigError). Also owns relocating env
values that name paths inside the container (volume mounts, the termination-message
file) to the host paths standing in for them, since the stand-in has no mount namespace.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
# Reads a Secret's or ConfigMap's data (decoded to str) by (namespace, name); None if absent.
ObjectReader = Callable[[str, str], "dict[str, str] | None"]
HOST_IP = "127.0.0.1"  # the node's address; every pod shares the host's loopback


def pod_ip(pod: Obj) -> str:
    """The pod's own address: a loopback address derived from its uid (all of 127.0.0.0/8
    reaches this host), so pods that listen on the same port (metrics) do not collide."""
    digest = hashlib.sha256(pod["metadata"]["uid"].encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


_FIELD_PATHS: dict[str, Callable[[Obj], str]] = {
    "metadata.name": lambda pod: pod["metadata"]["name"],
    "metadata.namespace": lambda pod: pod["metadata"]["namespace"],
    "metadata.uid": lambda pod: pod["metadata"]["uid"],
    "spec.nodeName": lambda pod: pod["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda pod: pod["spec"].get("serviceAccountName", ""),
    "status.podIP": pod_ip,
    "status.podIPs": pod_ip,
    "status.hostIP": lambda pod: HOST_IP,
    "status.hostIPs": lambda pod: HOST_IP,
}
_MAP_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ContainerConfigError(Exception):
    """The container cannot be configured yet; the pod waits with `reason` and retries."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


def secret_data(secret: Obj) -> dict[str, str]:
    return {key: base64.b64decode(value).decode("utf-8", errors="replace")
            for key, value in (secret.get("data") or {}).items()}


def configmap_data(configmap: Obj) -> dict[str, str]:
    return dict(configmap.get("data") or {})


def _field_value(pod: Obj, field_path: str) -> str:
    if field_path in _FIELD_PATHS:
        return _FIELD_PATHS[field_path](pod)
    match = _MAP_FIELD.match(field_path)
    if match is None:
        raise ContainerConfigError(f"unsupported fieldPath: {field_path}")
    return str((pod["metadata"].get(match.group(1)) or {}).get(match.group(2), ""))


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, others stay."""
    out: list[str] = []
    index = 0
    while index < len(text):
        if text[index] != "$" or index + 1 == len(text):
            out.append(text[index])
            index += 1
            continue
        following = text[index + 1]
        if following == "$":
            out.append("$")
            index += 2
        elif following == "(":
            end = text.find(")", index + 2)
            name = text[index + 2:end] if end != -1 else None
            if name is not None and name in variables:
                out.append(variables[name])
                index = end + 1
            elif end != -1:
                out.append(text[index:end + 1])
                index = end + 1
            else:
                out.append(text[index:])
                index = len(text)
        else:
            out.append("$")
            index += 1
    return "".join(out)


class EnvBuilder:
    """Resolves one container's env against the API's Secrets and ConfigMaps."""

    def __init__(self, read_secret: ObjectReader, read_configmap: ObjectReader) -> None:
        self._readers = {"secret": read_secret, "configmap": read_configmap}

    def read_source(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """The data of Secret (`kind` "secret") or ConfigMap ("configmap") `name`, or None."""
        return self._readers[kind](namespace, name)

    def _source(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str]:
        data = self.read_source(kind, namespace, name)
        if data is None:
            if optional:
                return {}
            raise ContainerConfigError(f'{kind} "{name}" not found')
        return data

    def _key_ref(self, kind: str, namespace: str, ref: Obj) -> str | None:
        optional = bool(ref.get("optional"))
        data = self._source(kind, namespace, ref.get("name", ""), optional)
        if ref["key"] in data:
            return data[ref["key"]]
        if optional:
            return None
        label = "Secret" if kind == "secret" else "ConfigMap"
        raise ContainerConfigError(
            f"couldn't find key {ref['key']} in {label} {namespace}/{ref.get('name', '')}")

    def build(self, pod: Obj, container: Obj, base: Mapping[str, str]) -> dict[str, str]:
        """`base` (what the node/image provides) overlaid with envFrom, then env."""
        namespace = pod["metadata"]["namespace"]
        env = dict(base)
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("secret", "secretRef"), ("configmap", "configMapRef")):
                if key in source:
                    ref = source[key]
                    data = self._source(kind, namespace, ref.get("name", ""),
                                        bool(ref.get("optional")))
                    # The kubelet skips keys that cannot be variable names.
                    env.update({prefix + k: v for k, v in data.items() if "=" not in k})
        for variable in container.get("env") or []:
            value = self._value(pod, namespace, variable, env)
            if value is not None:
                env[variable["name"]] = value
        return env

    def _value(self, pod: Obj, namespace: str, variable: Obj,
               defined: Mapping[str, str]) -> str | None:
        if "valueFrom" not in variable:
            return expand(variable.get("value", ""), defined)
        source = variable["valueFrom"]
        if "fieldRef" in source:
            return _field_value(pod, source["fieldRef"]["fieldPath"])
        if "secretKeyRef" in source:
            return self._key_ref("secret", namespace, source["secretKeyRef"])
        if "configMapKeyRef" in source:
            return self._key_ref("configmap", namespace, source["configMapKeyRef"])
        raise ContainerConfigError(
            f"env {variable['name']}: the stand-in kubelet does not support {sorted(source)}")


def relocate(env: Mapping[str, str], mounts: Mapping[str, Path]) -> dict[str, str]:
    """Rewrite values that equal or lie under a container path in `mounts` to the host path.

    `mounts` maps container paths (volume mountPaths, the termination-message path) to
    the host folder or file standing in for them; the longest matching path wins.
    """
    ordered = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
    relocated = {}
    for name, value in env.items():
        for container_path, host_path in ordered:
            root = container_path.rstrip("/") or "/"
            if value in (container_path, root):
                value = str(host_path)
                break
            if value.startswith(root + "/"):
                value = str(host_path / value[len(root) + 1:])
                break
        relocated[name] = value
    return relocated
