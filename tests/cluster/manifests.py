"""Pod manifests that pass PodSecurity "restricted", for tests on the local cluster."""

from __future__ import annotations

from typing import Any

from tests.cluster.fake_nodes import GPU_RESOURCE

Obj = dict[str, Any]
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted"
                       for mode in ("enforce", "warn", "audit")}


def restricted_container(command: list[str], *, name: str = "main", **fields: Any) -> Obj:
    """A container with the securityContext PodSecurity "restricted" asks for."""
    return {
        "name": name,
        "image": "whisperfleet/stand-in:never-pulled",  # the stand-in kubelet pulls no image
        "command": command,
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        **fields,
    }


def restricted_pod(name: str, command: list[str], *, limits: dict[str, Any] | None = None,
                   tolerate_gpu: bool = True, node_selector: dict[str, str] | None = None,
                   container: dict[str, Any] | None = None, **spec: Any) -> Obj:
    """A one-container, never-restarting pod; `container` adds fields to the container."""
    fields = dict(container or {})
    if limits:
        fields["resources"] = {"limits": limits}
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [restricted_container(command, **fields)],
        **spec,
    }
    if tolerate_gpu:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}
