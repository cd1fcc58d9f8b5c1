"""The real node's fake GPUs, and the configuration its stand-in GPU plugins read.

Owns the real node's `NodeSpec` (two NVIDIA L4 and an A100 in MIG mode with two 1g.10gb
instances; node labels as GPU Feature Discovery sets them) and turns it into the JSON file
of go/gpuplugins (package fakegpu): one unit per device the kubelet hands out, with the
fake NVML's view of it, and the ResourceSlice devices. Everything comes from the same
`NodeSpec` the fake nodes use (fake_nodes), so the Node labels, the device plugin's
resources, the ResourceSlice and what NVML shows inside a container agree.

The real node carries no GPU taint: the chart's operator (which tolerates nothing by
default) must be able to run there, as on a cluster whose GPU nodes are not tainted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cluster.fake_nodes import (
    DRA_DRIVER,
    GPU_RESOURCE,
    MIG_RESOURCE_PREFIX,
    NodeSpec,
    make_gpus,
)

REAL_NODE_NAME = "real-1"
# Where the fake NVML (tests/fakes, holding `pynvml`) appears inside containers given a GPU.
CONTAINER_FAKE_NVML = "/opt/whisperfleet-fake-nvml"
FAKES = Path(__file__).resolve().parents[1] / "fakes"
Obj = dict[str, Any]


def real_node_spec(name: str = REAL_NODE_NAME) -> NodeSpec:
    l4 = make_gpus(name, 2, name="NVIDIA L4", memory_mib=23034, cc="8.9",
                   architecture="Ada Lovelace")
    a100 = make_gpus(name, 1, name="NVIDIA A100-SXM4-80GB", memory_mib=81920, cc="8.0",
                     architecture="Ampere", mig_profile=("1g.10gb", 2, 9728), first=len(l4))
    return NodeSpec(name, (*l4, *a100))


def plugin_config(node: NodeSpec) -> Obj:
    """The fakegpu.Node JSON for `node`."""
    units: list[Obj] = []
    dra_names = iter(device["name"] for device in node.dra_devices())
    for gpu in node.gpus:
        nvml = gpu.nvml_device()
        if gpu.mig is None:
            units.append({"resource": GPU_RESOURCE, "id": gpu.uuid, "parent": gpu.uuid,
                          "draDevice": next(dra_names), "nvml": nvml})
            continue
        for index, instance in enumerate(gpu.mig):
            units.append({"resource": MIG_RESOURCE_PREFIX + instance.profile,
                          "id": instance.uuid, "parent": gpu.uuid,
                          "draDevice": next(dra_names),
                          "nvml": {**nvml, "mig": [nvml["mig"][index]]}})
    return {
        "nodeName": node.name,
        "draDriver": DRA_DRIVER,
        "draDevices": node.dra_devices(),
        "hostFakeNvml": str(FAKES),
        "containerFakeNvml": CONTAINER_FAKE_NVML,
        # The runner's switch for "CTranslate2 on the CPU although NVML shows a GPU".
        "env": {"WHISPERFLEET_TEST_GPU_ON_CPU": "1"},
        "units": units,
    }


def write_plugin_config(node: NodeSpec, path: Path) -> Path:
    path.write_text(json.dumps(plugin_config(node), indent=1), encoding="utf-8")
    return path


def node_labels(node: NodeSpec) -> str:
    """The kubelet's --node-labels: what GPU Feature Discovery would label the node with."""
    return ",".join(f"{key}={value}" for key, value in sorted(node.gfd_labels().items()))
