"""Which GPU devices a pod gets on its node, as the NVIDIA device plugin and DRA driver decide.

Owns the per-node bookkeeping of held devices: `nvidia.com/gpu: N` takes N whole GPUs (MIG
slices under the "single" strategy), `nvidia.com/mig-<profile>: N` N MIG instances of that
profile, and on a time-sliced node each resource unit is one replica of a GPU, none held by
another live pod of the node (device-plugin style: two pods may then share one GPU); a DRA
claim's allocation (made by the real scheduler) is resolved to device UUIDs through the
node's ResourceSlice, as the driver does through CDI. Devices are released when the pod's
process ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.cluster.fake_nodes import DRA_DRIVER, MIG_RESOURCE_PREFIX, REPLICA_SEPARATOR, NodeSpec

Obj = dict[str, Any]
# GET of an API path (e.g. a ResourceClaim); None when it does not exist.
ApiGetter = Callable[[str], "Obj | None"]


def _gpu(device: str) -> str:
    """The GPU's UUID of a device id (a time-sliced GPU's replica names its GPU)."""
    return device.split(REPLICA_SEPARATOR, 1)[0]


class AllocationError(Exception):
    """The node cannot give the pod what it asked for (the kubelet's UnexpectedAdmissionError)."""


def _requested(container: Obj, resource: str) -> int:
    resources = container.get("resources") or {}
    # Extended resources must have limits == requests; either may be given.
    amount = (resources.get("limits") or {}).get(resource) or \
        (resources.get("requests") or {}).get(resource) or 0
    return int(amount)


class GpuAllocator:
    """Device assignments for the pods of every fake node (thread-safe)."""

    def __init__(self, api_get: ApiGetter) -> None:
        self._api_get = api_get
        self._lock = threading.Lock()
        # device UUID -> pod uids. A device-plugin device has one holder; a DRA device has
        # one per pod sharing its ResourceClaim.
        self._holders: dict[str, set[str]] = {}
        self._by_pod: dict[str, list[str]] = {}  # pod uid -> device UUIDs
        self._pod_names: dict[str, str] = {}  # pod uid -> "namespace/name"

    def allocations(self) -> dict[str, list[str]]:
        """Current assignments: pod key "namespace/name" -> device UUIDs."""
        with self._lock:
            return {self._pod_names[uid]: [_gpu(d) for d in devices]
                    for uid, devices in self._by_pod.items()}

    def release(self, pod_uid: str) -> None:
        with self._lock:
            self._pod_names.pop(pod_uid, None)
            for device in self._by_pod.pop(pod_uid, []):
                holders = self._holders.get(device, set())
                holders.discard(pod_uid)
                if not holders:
                    self._holders.pop(device, None)

    def allocate(self, pod: Obj, container: Obj, node: NodeSpec) -> list[str]:
        """Assign devices to `pod` (idempotent per pod uid); the UUIDs, in a stable order."""
        key = pod["metadata"]["uid"]
        limits = (container.get("resources") or {}).get("limits") or {}
        unknown = sorted(r for r in limits if r.startswith(MIG_RESOURCE_PREFIX)
                         and r[len(MIG_RESOURCE_PREFIX):] not in
                         {m.profile for m in node.mig_instances})
        if unknown:
            raise AllocationError(f"node {node.name} has no {unknown}")
        dra = self._dra_devices(pod, container, node)  # API reads outside the lock
        with self._lock:
            if key in self._by_pod:
                return [_gpu(device) for device in self._by_pod[key]]
            chosen = list(dra)
            for resource, candidates in node.device_pools():
                wanted = _requested(container, resource)
                # A device the DRA driver handed out is not the device plugin's to give.
                free = [u for u in candidates if u not in self._holders and u not in chosen
                        and _gpu(u) not in dra]
                if wanted > len(free):
                    raise AllocationError(
                        f"Allocate failed due to requested number of devices unavailable for "
                        f"{resource}. Requested: {wanted}, Available: {len(free)}")
                chosen += free[:wanted]
            for device in chosen:
                self._holders.setdefault(device, set()).add(key)
            self._by_pod[key] = chosen
            self._pod_names[key] = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            return [_gpu(device) for device in chosen]

    def _dra_devices(self, pod: Obj, container: Obj, node: NodeSpec) -> list[str]:
        """UUIDs of the DRA devices allocated to the claims this container uses."""
        used = {claim["name"] for claim in (container.get("resources") or {}).get("claims") or []}
        if not used:
            return []
        namespace = pod["metadata"]["namespace"]
        generated = {s["name"]: s.get("resourceClaimName")
                     for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
        uuids = []
        for entry in pod["spec"].get("resourceClaims") or []:
            if entry["name"] not in used:
                continue
            claim_name = entry.get("resourceClaimName") or generated.get(entry["name"])
            if not claim_name:
                raise AllocationError(f"claim {entry['name']} has no ResourceClaim yet")
            claim = self._api_get(
                f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{claim_name}")
            allocation = ((claim or {}).get("status") or {}).get("allocation")
            if not allocation:
                raise AllocationError(f"ResourceClaim {namespace}/{claim_name} is not allocated")
            for result in allocation["devices"].get("results") or []:
                if result["driver"] == DRA_DRIVER:
                    uuids.append(self._slice_uuid(node, result["pool"], result["device"]))
        return uuids

    def _slice_uuid(self, node: NodeSpec, pool: str, device: str) -> str:
        slices = self._api_get(
            f"/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3D{node.name}")
        for item in (slices or {}).get("items") or []:
            spec = item["spec"]
            if spec["driver"] != DRA_DRIVER or spec["pool"]["name"] != pool:
                continue
            for candidate in spec.get("devices") or []:
                if candidate["name"] == device:
                    return str(candidate["attributes"]["uuid"]["string"])
        raise AllocationError(f"device {pool}/{device} is in no {DRA_DRIVER} ResourceSlice "
                              f"of node {node.name}")
