"""The fake GPU nodes: one description from which every view of them is derived.

Owns the `NodeSpec`/`Gpu`/`MigInstance` dataclasses, the default node list, and what is
made from them: the Node object (labels as GPU Feature Discovery sets them, extended
resources as the NVIDIA device plugin advertises them, the GPU Operator's taint — under
either MIG strategy, and with time-slicing's replicas, renamed or not), the
ResourceSlice the NVIDIA DRA driver would publish, the DeviceClasses, and the device JSON
of the fake NVML (tests/fakes/README.md) that processes on that node see.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

DRA_DRIVER = "gpu.nvidia.com"
GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"  # time-slicing with renameByDefault
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
REPLICA_SEPARATOR = "::"  # a time-sliced GPU's replicas: "<uuid>::<replica>"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
# In a cluster with a real node too, every fake node carries this: only pods that say they
# may run under the stand-in kubelet (a toleration) go there, never the chart's operator.
STAND_IN_TAINT = {"key": "whisperfleet.io/stand-in-kubelet", "value": "true",
                  "effect": "NoSchedule"}
_UUID_NAMESPACE = uuid.UUID("6f1c2a4e-8d0b-4f57-9a52-3c1d7e0b9a10")  # keeps UUIDs stable
Obj = dict[str, Any]


def _stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, "/".join(parts)))


@dataclass(frozen=True)
class MigInstance:
    """One MIG device carved out of a GPU."""

    uuid: str
    profile: str  # e.g. "1g.10gb"
    memory_mib: int
    slot: int


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as NVML reports it."""

    uuid: str
    name: str  # NVML's product name, e.g. "NVIDIA H100 80GB HBM3"
    pci_bus_id: str
    memory_mib: int
    cc: str  # CUDA compute capability "major.minor"
    architecture: str
    mig: tuple[MigInstance, ...] | None = None  # None: MIG off; a tuple: MIG on
    mig_capable: bool = False  # can MIG be turned on (NVML then reports it off, not absent)

    @property
    def gfd_product(self) -> str:
        return self.name.replace(" ", "-")  # GFD's nvidia.com/gpu.product spelling

    def nvml_device(self) -> Obj:
        """This GPU in the fake NVML's device JSON (tests/fakes/README.md)."""
        device: Obj = {"uuid": self.uuid, "name": self.name, "pci_bus_id": self.pci_bus_id,
                       "memory_total_mib": self.memory_mib, "memory_used_mib": 0, "cc": self.cc}
        if self.mig is not None:
            device["mig"] = [{"uuid": m.uuid, "profile": m.profile,
                              "memory_total_mib": m.memory_mib, "slot": m.slot}
                             for m in self.mig]
        elif self.mig_capable:
            device["mig"] = None  # the fake's "supported but off"
        return device


def make_gpus(node: str, count: int, *, name: str, memory_mib: int, cc: str,
              architecture: str, mig_capable: bool = False,
              mig_profile: tuple[str, int, int] | None = None, first: int = 0,
              ) -> tuple[Gpu, ...]:
    """`count` identical GPUs with UUIDs and bus ids that are stable for (node, index).

    `mig_profile` = (profile, instances per GPU, MiB per instance) turns MIG on. `first`:
    the first GPU's index, for a node with GPUs of several kinds.
    """
    gpus = []
    for index in range(first, first + count):
        mig = None
        if mig_profile is not None:
            profile, instances, mib = mig_profile
            mig = tuple(MigInstance(f"MIG-{_stable_uuid(node, str(index), 'mig', str(slot))}",
                                    profile, mib, slot) for slot in range(instances))
        gpus.append(Gpu(uuid=f"GPU-{_stable_uuid(node, str(index))}", name=name,
                        pci_bus_id=f"00000000:{0x18 + 0x10 * index:02X}:00.0",
                        memory_mib=memory_mib, cc=cc, architecture=architecture, mig=mig,
                        mig_capable=mig_capable or mig is not None))
    return tuple(gpus)


@dataclass(frozen=True)
class NodeSpec:
    """A fake node: its name, its GPUs, and what it adds to the Node object."""

    name: str
    gpus: tuple[Gpu, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()  # besides the GPU taint every GPU node gets
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"
    # The device plugin's MIG strategy: "mixed" (a resource per profile) or "single" (every
    # GPU sliced alike, each slice an nvidia.com/gpu).
    mig_strategy: str = "mixed"
    replicas: int = 1  # time-slicing: pods per GPU (1: not shared)
    rename_shared: bool = False  # time-slicing's renameByDefault: nvidia.com/gpu.shared

    @property
    def mig_instances(self) -> tuple[MigInstance, ...]:
        return tuple(m for gpu in self.gpus for m in gpu.mig or ())

    @property
    def whole_gpus(self) -> tuple[Gpu, ...]:
        """GPUs handed out whole (MIG "mixed" strategy: a MIG-enabled GPU is not one)."""
        return tuple(gpu for gpu in self.gpus if gpu.mig is None)

    @property
    def gpu_resource(self) -> str:
        return SHARED_GPU_RESOURCE if self.replicas > 1 and self.rename_shared else GPU_RESOURCE

    def device_pools(self) -> list[tuple[str, list[str]]]:
        """(resource, device ids) as the device plugin advertises them: a time-sliced GPU is
        `replicas` devices "<uuid>::<replica>" (REPLICA_SEPARATOR), one per pod."""
        single = self.mig_strategy == "single"
        whole = [m.uuid for m in self.mig_instances] if single else \
            [gpu.uuid for gpu in self.whole_gpus]
        if self.replicas > 1:
            whole = [f"{uuid}{REPLICA_SEPARATOR}{r}" for uuid in whole
                     for r in range(self.replicas)]
        pools = [(self.gpu_resource, whole)] if whole else []
        if not single:
            for profile in sorted({m.profile for m in self.mig_instances}):
                pools.append((MIG_RESOURCE_PREFIX + profile,
                              [m.uuid for m in self.mig_instances if m.profile == profile]))
        return pools

    def extended_resources(self) -> dict[str, str]:
        return {resource: str(len(devices)) for resource, devices in self.device_pools()}

    def gfd_labels(self) -> dict[str, str]:
        if not self.gpus:
            return {}
        first = self.gpus[0]
        major, minor = first.cc.split(".")
        product, memory, count = first.gfd_product, first.memory_mib, len(self.gpus)
        if self.mig_strategy == "single" and first.mig:
            # The slice is the product: its profile appended, its memory, one per slice.
            product += f"-MIG-{first.mig[0].profile}"
            memory, count = first.mig[0].memory_mib, len(self.mig_instances)
        shared = self.replicas > 1
        if shared and not self.rename_shared:
            product += "-SHARED"
        labels = {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.memory": str(memory),
            "nvidia.com/gpu.compute.major": major,
            "nvidia.com/gpu.compute.minor": minor,
            "nvidia.com/gpu.count": str(count),
            "nvidia.com/gpu.family": first.architecture.lower().replace(" ", "-"),
            "nvidia.com/gpu.replicas": str(self.replicas),
            "nvidia.com/gpu.sharing-strategy": "time-slicing" if shared else "none",
        }
        if self.mig_strategy == "single":
            labels["nvidia.com/mig.strategy"] = "single"
        if self.mig_instances:
            labels["nvidia.com/mig.capable"] = "true"
        if self.mig_instances and self.mig_strategy != "single":
            labels["nvidia.com/mig.strategy"] = "mixed"
            for instance in self.mig_instances:
                prefix = f"nvidia.com/mig-{instance.profile}"
                labels[f"{prefix}.count"] = self.extended_resources()[MIG_RESOURCE_PREFIX
                                                                      + instance.profile]
                labels[f"{prefix}.memory"] = str(instance.memory_mib)
        return labels

    def node_manifest(self) -> Obj:
        """The Node object, status included (the API server keeps status given at create)."""
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods,
                    **self.extended_resources()}
        taints = [dict(GPU_TAINT)] if self.gpus else []
        taints += [dict(taint) for taint in self.taints]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {
                "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", **self.gfd_labels(), **self.labels}},
            "spec": {"taints": taints} if taints else {},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "whisperfleet stand-in kubelet"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": _NODE_INFO,
            },
        }

    def dra_devices(self) -> list[Obj]:
        """The devices of this node's ResourceSlice, named as the NVIDIA DRA driver does."""
        devices = []
        for index, gpu in enumerate(self.gpus):
            common = {
                "productName": {"string": gpu.name},
                "architecture": {"string": gpu.architecture},
                "brand": {"string": "Nvidia"},
                "cudaComputeCapability": {"version": f"{gpu.cc}.0"},
            }
            if gpu.mig is None:
                devices.append({"name": f"gpu-{index}", "attributes": {
                    **common, "type": {"string": "gpu"}, "uuid": {"string": gpu.uuid},
                    "index": {"int": index},
                    "resource.kubernetes.io/pciBusID": {"string": gpu.pci_bus_id[4:].lower()},
                }, "capacity": {"memory": {"value": f"{gpu.memory_mib}Mi"}}})
                continue
            for instance in gpu.mig:
                devices.append({
                    "name": f"gpu-{index}-mig-{instance.profile.replace('.', '')}-{instance.slot}",
                    "attributes": {**common, "type": {"string": "mig"},
                                   "uuid": {"string": instance.uuid},
                                   "profile": {"string": instance.profile},
                                   "parentUUID": {"string": gpu.uuid},
                                   "parentIndex": {"int": index}},
                    "capacity": {"memory": {"value": f"{instance.memory_mib}Mi"}}})
        return devices

    def resource_slice_manifest(self) -> Obj:
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{self.name}-{DRA_DRIVER}"},
            "spec": {"driver": DRA_DRIVER, "nodeName": self.name,
                     "pool": {"name": self.name, "generation": 1, "resourceSliceCount": 1},
                     "devices": self.dra_devices()},
        }

    def nvml_devices(self) -> list[Obj]:
        return [gpu.nvml_device() for gpu in self.gpus]

    def nvml_env_value(self) -> str:
        """WHISPERFLEET_FAKE_NVML for processes on this node ("none": no driver here)."""
        return json.dumps(self.nvml_devices()) if self.gpus else "none"


_NODE_INFO = {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
              "osImage": "whisperfleet stand-in", "containerRuntimeVersion": "none://0",
              "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux",
              "architecture": "amd64"}


def device_class_manifests() -> list[Obj]:
    """The NVIDIA DRA driver's DeviceClasses: whole GPUs and MIG devices."""
    return [{
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": (
            f'device.driver == "{DRA_DRIVER}" && '
            f'device.attributes["{DRA_DRIVER}"].type == "{device_type}"')}}]},
    } for name, device_type in (("gpu.nvidia.com", "gpu"), ("mig.nvidia.com", "mig"))]


def default_nodes() -> list[NodeSpec]:
    """A CPU node, 4×H100, 2×T4 and an A100-80GB in MIG mode (3 × 1g.10gb)."""
    return [
        NodeSpec("cpu-1"),
        NodeSpec("h100-1", make_gpus("h100-1", 4, name="NVIDIA H100 80GB HBM3",
                                     memory_mib=81559, cc="9.0", architecture="Hopper",
                                     mig_capable=True)),
        NodeSpec("t4-1", make_gpus("t4-1", 2, name="Tesla T4", memory_mib=15360, cc="7.5",
                                   architecture="Turing")),
        NodeSpec("a100-mig-1", make_gpus("a100-mig-1", 1, name="NVIDIA A100-SXM4-80GB",
                                         memory_mib=81920, cc="8.0", architecture="Ampere",
                                         mig_profile=("1g.10gb", 3, 9728))),
    ]
