"""What a pod's container process is started with: environment, argv, working directory.

Owns the node- and image-like environment every container gets before its own (PATH of
this Python environment, HOME in the pod folder, HF_HUB_OFFLINE=1, the fake NVML of the
node, on GPU nodes the GPU-on-CPU test switch, NVIDIA_VISIBLE_DEVICES for allocated
devices), relocating container paths to host paths, `$(VAR)` expansion of command/args and
resolving the executable against PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.fake_nodes import NodeSpec
from tests.cluster.pod_env import EnvBuilder, expand, relocate
from tests.cluster.pod_volumes import container_mounts

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "fakes"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class StartFailure(Exception):
    """The container process cannot be started (the runtime's StartError)."""


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    workdir: Path


def node_env(node: NodeSpec, devices: list[str], pod: Obj, home: Path) -> dict[str, str]:
    """What the node and "image" give every container before its own env."""
    env = {
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), "/usr/bin", "/bin")),
        "HOME": str(home),
        "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
        "LANG": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",  # no model hub in tests
        "PYTHONPATH": str(FAKES),  # `import pynvml` finds the fake NVML
        "WHISPERFLEET_FAKE_NVML": node.nvml_env_value(),
    }
    if node.gpus:
        env["WHISPERFLEET_TEST_GPU_ON_CPU"] = "1"
    if devices:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(devices)
    return env


def launch_spec(pod: Obj, container: Obj, node: NodeSpec, devices: list[str], *,
                pod_dir: Path, message_file: Path, state_dir: Path,
                env_builder: EnvBuilder) -> LaunchSpec:
    """Raises ContainerConfigError (the pod waits) or StartFailure (the container fails)."""
    mounts = container_mounts(pod, container, pod_dir, state_dir, env_builder.read_source)
    mounts[container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)] = \
        message_file
    spec_env = relocate(env_builder.build(pod, container, {}), mounts)
    env = {**node_env(node, devices, pod, pod_dir), **spec_env}
    if not container.get("command"):
        raise StartFailure(f"container {container['name']} has no `command`: the stand-in "
                           "kubelet knows no image entrypoints")
    argv = [expand(part, spec_env)
            for part in [*container["command"], *(container.get("args") or [])]]
    if "/" not in argv[0]:
        found = shutil.which(argv[0], path=env["PATH"])
        if found is None:
            raise StartFailure(f'exec: "{argv[0]}": executable file not found in $PATH')
        argv[0] = found
    workdir = pod_dir
    if container.get("workingDir"):
        relocated = relocate({"dir": container["workingDir"]}, mounts)["dir"]
        if relocated != container["workingDir"]:
            workdir = Path(relocated)
    return LaunchSpec(argv=argv, env=env, workdir=workdir)
