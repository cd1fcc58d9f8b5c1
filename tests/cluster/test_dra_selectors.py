"""The operator's DRA CEL selectors (products, minimum memory, minimum compute capability)
evaluated by the real scheduler against devices published as the NVIDIA DRA driver does:
for every request and every device, a pod pinned to that device's node is scheduled only
when the device satisfies the selectors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.fake_nodes import NodeSpec, make_gpus
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import restricted_pod
from tests.cluster.waiting import eventually
from tests.support.transcription_jobs import parsed
from whisperfleet_operator.builders import gpu
from whisperfleet_operator.settings import OperatorSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# Nodes with one GPU each; the default nodes provide H100 (h100-1) and T4 (t4-1).
EXTRA = {"a100-40-1": ("NVIDIA A100-SXM4-40GB", 40960, "8.0", "Ampere"),
         "a10-1": ("NVIDIA A10", 22528, "8.6", "Ampere")}
DEVICES = {"H100": "h100-1", "T4": "t4-1", "A100-40": "a100-40-1", "A10": "a10-1"}
CASES = [
    ({"products": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB"]}, {"H100", "A100-40"}),
    ({"products": ["Tesla-T4"]}, {"T4"}),
    ({"minMemoryMiB": 40960}, {"H100", "A100-40"}),  # inclusive: 40960 MiB == 40 GiB
    ({"minMemoryMiB": 40961}, {"H100"}),
    ({"minComputeCapability": "8.6"}, {"H100", "A10"}),
    ({"minComputeCapability": "8.0"}, {"H100", "A100-40", "A10"}),
    ({"minComputeCapability": "7.5"}, set(DEVICES)),
    ({"minMemoryMiB": 16000, "minComputeCapability": "8.6"}, {"H100", "A10"}),
]


@pytest.fixture(scope="module")
def devices(cluster: LocalCluster) -> dict[str, str]:
    for node, (name, memory, cc, arch) in EXTRA.items():
        if node not in cluster.nodes:
            cluster.add_node(NodeSpec(node, make_gpus(node, 1, name=name, memory_mib=memory,
                                                      cc=cc, architecture=arch)))
    return DEVICES


def scheduled(cluster: LocalCluster, ns: str, name: str) -> bool | None:
    """True once scheduled, False once the scheduler says it fits nowhere, else None."""
    pod = cluster.rest().get(f"/api/v1/namespaces/{ns}/pods/{name}") or {}
    if (pod.get("spec") or {}).get("nodeName"):
        return True
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
            return False
    return None


def decision(cluster: LocalCluster, namespace: str, node: str) -> bool:
    """Whether the pod pinned to `node` was scheduled; on a timeout, the error shows the pod's
    status and its claims' (what the scheduler and the claim controller last said)."""
    try:
        return eventually(lambda: (s := scheduled(cluster, namespace, f"on-{node}"))
                          is not None and (s,), timeout=60, what=f"scheduling on {node}")[0]
    except AssertionError as error:
        pod = cluster.rest().get(f"/api/v1/namespaces/{namespace}/pods/on-{node}") or {}
        claims = cluster.rest().get(f"/apis/resource.k8s.io/v1/namespaces/{namespace}"
                                    "/resourceclaims") or {}
        said = [(c["metadata"]["name"], c.get("status")) for c in claims.get("items", [])]
        raise AssertionError(f"{error}\npod status: {pod.get('status')}\nclaims: {said}"
                             ) from None


def released(cluster: LocalCluster, nodes: list[str]) -> None:
    """Wait until no claim holds a device of these nodes: each has one GPU, and an earlier
    case's claims are deallocated only after its namespace's pods are gone (asynchronously),
    so a device still in use would read as one the selectors refuse."""
    def holders() -> list[str]:
        claims = cluster.rest().get("/apis/resource.k8s.io/v1/resourceclaims") or {}
        return [f"{c['metadata']['namespace']}/{c['metadata']['name']}"
                for c in claims.get("items", [])
                for r in (((c.get("status") or {}).get("allocation") or {})
                          .get("devices") or {}).get("results") or []
                if r.get("pool") in nodes]
    eventually(lambda: not holders() or None, timeout=120,
               what=f"the GPUs of {nodes} to be released")


@pytest.mark.parametrize(("gpu_spec", "expected"), CASES)
def test_the_scheduler_picks_exactly_the_devices_the_selectors_allow(
    cluster: LocalCluster, namespace: str, devices: dict[str, str],
    gpu_spec: dict[str, Any], expected: set[str]
) -> None:
    job = parsed(name="dra", namespace=namespace,
                 workers={"gpu": {"deviceClassName": "gpu.nvidia.com", **gpu_spec}})
    template = gpu.build_resource_claim_template(job, OperatorSettings())
    assert template is not None
    claims = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    released(cluster, list(devices.values()))
    for node in devices.values():
        # One claim per pod, made from the operator's template as the claim controller would,
        # but before the pod: a pod the scheduler meets before its claim exists may wait
        # for the scheduler's periodic retry (minutes), which is not what is tested here.
        cluster.rest().create(claims, {"apiVersion": "resource.k8s.io/v1",
                                       "kind": "ResourceClaim",
                                       "metadata": {"name": f"gpu-{node}"},
                                       "spec": template["spec"]["spec"]})
        pod = restricted_pod(f"on-{node}", ["true"], node_selector={
            "kubernetes.io/hostname": node}, container={"resources": {"claims": [
                {"name": gpu.CLAIM_NAME}]}},
            resourceClaims=[{"name": gpu.CLAIM_NAME, "resourceClaimName": f"gpu-{node}"}])
        cluster.rest().create(f"/api/v1/namespaces/{namespace}/pods", pod)
    outcome = {device: decision(cluster, namespace, node) for device, node in devices.items()}
    assert {device for device, fits in outcome.items() if fits} == expected
