"""Which GPU(s) this process may use, and the `device_index` faster-whisper gets.

Pure logic over `nvml.list_gpus()` and an environment mapping; nothing here touches CUDA.
Call `ensure_pci_bus_order()` (or apply a selection's env) BEFORE anything initialises CUDA
(i.e. before ctranslate2 / faster-whisper loads a model): CUDA reads CUDA_DEVICE_ORDER and
CUDA_VISIBLE_DEVICES once, and its default "fastest first" order disagrees with NVML's
PCI-bus order, which would map index-valued entries onto the wrong GPUs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperfleet_runner import contract
from whisperfleet_runner.gpu import nvml
from whisperfleet_runner.gpu.nvml import GpuInfo

log = logging.getLogger(__name__)

VOLUME_MOUNTS_DIR = "/var/run/nvidia-container-devices"
# Test switch (deliberately narrow): with this set to 1 AND the fake NVML the module loaded
# as `pynvml` (tests/fakes/pynvml, `nvml.is_fake`), a process bound to a fake GPU keeps that
# binding and its reported identity but runs the model on the CPU. Under the real NVML it is
# ignored with a warning, whatever else is set: it never moves a real GPU's model to the CPU.
ENV_GPU_ON_CPU = "WHISPERFLEET_TEST_GPU_ON_CPU"
_NOTHING = ("", "none", "void")
INDEX_PATTERN = re.compile(r"^(\d+)(?::(\d+))?$")  # "2" or the MIG address "2:1"


class NoGpuError(RuntimeError):
    """A GPU was required but none is usable; the process should exit with `exit_code`."""

    exit_code = contract.EXIT_NO_GPU

    def __init__(self, message: str, choice: Any = None) -> None:
        super().__init__(message)
        # gpu_choice.LocalChoice, for choose_local: what was seen and why each was refused
        self.choice = choice


class GpuNotVisibleError(NoGpuError):
    """A GPU this pod was allocated is not visible to NVML (driver/toolkit misconfiguration)."""


@dataclass
class DeviceSelection:
    device: str  # "cuda" or "cpu"
    device_index: list[int]  # CUDA ordinals for faster-whisper, valid once env_updates() applied
    gpus: list[GpuInfo]  # gpus[i] is CUDA ordinal device_index[i]
    warnings: list[str] = field(default_factory=list)
    cuda_visible_devices: str | None = None  # set when this process must be restricted

    def env_updates(self) -> dict[str, str]:
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        if self.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        return env

    def apply(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Export env_updates() into `environ` (os.environ); must precede CUDA initialisation."""
        (os.environ if environ is None else environ).update(self.env_updates())

    def identities(self) -> list[contract.GpuIdentity]:
        return [to_identity(g, i) for g, i in zip(self.gpus, self.device_index, strict=True)]

    @property
    def compute_capability(self) -> str:
        """The lowest compute capability among the chosen GPUs ("" on CPU)."""
        known = [g.compute_capability for g in self.gpus if g.compute_capability]
        return min(known, key=_cc_tuple, default="")


def ensure_pci_bus_order(environ: MutableMapping[str, str] | None = None) -> None:
    """Make CUDA number devices in PCI-bus order, as NVML and nvidia-smi do.

    Must run before ctranslate2 (or anything else) initialises CUDA in this process.
    """
    env = os.environ if environ is None else environ
    previous = env.get("CUDA_DEVICE_ORDER")
    if previous not in (None, "PCI_BUS_ID"):
        log.warning("overriding CUDA_DEVICE_ORDER=%s with PCI_BUS_ID to match NVML", previous)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def select_allocated(
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
    volume_mounts_dir: str | Path = VOLUME_MOUNTS_DIR,
) -> DeviceSelection:
    """Map the GPUs this pod was allocated to CUDA ordinals (see module docstring).

    NVIDIA_VISIBLE_DEVICES: unset = no allocation information (a bare host: use what NVML
    sees); `all` = every GPU; `none`/`void`/empty = no GPU; a list of UUIDs, indices or MIG
    ids; or the volume-mounts directory, whose entries name the devices. The device plugin's
    volume-mount list also wins over an image's `all`. Raises NoGpuError (device="cuda" and
    nothing usable) or GpuNotVisibleError (an allocated GPU NVML cannot see).
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
    if device == "cpu":
        return DeviceSelection("cpu", [], [])
    env = os.environ if environ is None else environ
    source, wanted = _read_allocation(env, Path(volume_mounts_dir))
    warnings: list[str] = []
    try:
        visible = nvml.list_gpus()
        unavailable = ""
    except nvml.NvmlUnavailable as exc:
        visible, unavailable = [], str(exc)

    if wanted is None:
        allocated = list(visible)
    else:
        allocated = _match_allocation(source, wanted, visible, unavailable)
    if "CUDA_VISIBLE_DEVICES" in env:
        cuda_view = cuda_enumeration(visible, env["CUDA_VISIBLE_DEVICES"], warnings)
    else:
        cuda_view = list(visible)
    chosen = [g for g in cuda_view if g in allocated]
    for gpu in allocated if wanted is not None else []:  # unset/all: nothing was allocated
        if gpu not in cuda_view:
            warnings.append(f"allocated {gpu.describe()} is hidden by CUDA_VISIBLE_DEVICES="
                            f"{env['CUDA_VISIBLE_DEVICES']!r} and will not be used")
    extra = [g for g in cuda_view if g not in allocated]
    restrict = bool(extra)
    if extra:
        warnings.append(
            f"{len(cuda_view)} GPU(s) are visible but {source} allocates {len(allocated)} "
            f"(the NVIDIA_VISIBLE_DEVICES=all leak?); restricting this process to "
            f"{[g.uuid for g in chosen]} and ignoring {[g.uuid for g in extra]}"
        )
    elif source == "NVIDIA_VISIBLE_DEVICES=all" and chosen:
        warnings.append(f"NVIDIA_VISIBLE_DEVICES=all: using every visible GPU ({len(chosen)})")

    if not chosen:
        reason = _why_no_gpu(source, wanted, visible, unavailable, env)
        if device == "cuda":
            raise NoGpuError(f"device cuda was requested but no GPU is usable: {reason}")
        warnings = [f"no usable GPU ({reason}); running on CPU"]
        for line in warnings:
            log.warning("%s", line)
        return DeviceSelection("cpu", [], [], warnings, "" if restrict else None)

    selection = DeviceSelection(
        device="cuda",
        device_index=list(range(len(chosen))),
        gpus=chosen,
        warnings=warnings,
        cuda_visible_devices=",".join(g.uuid for g in chosen) if restrict else None,
    )
    for line in warnings:
        log.warning("%s", line)
    for ordinal, gpu in zip(selection.device_index, chosen, strict=True):
        log.info("CUDA device %d: %s", ordinal, gpu.describe())
    return selection


def _read_allocation(env: Mapping[str, str], volume_dir: Path) -> tuple[str, list[str] | None]:
    """(description for messages, allocated ids or None for "no restriction")."""
    raw = env.get("NVIDIA_VISIBLE_DEVICES")
    value = raw.strip() if raw is not None else None
    if value is not None and value.startswith("/"):
        folder = volume_dir if value.rstrip("/") == VOLUME_MOUNTS_DIR else Path(value)
        return f"the volume mounts in {folder}", _volume_entries(folder) or []
    if value is None or value.lower() == "all":
        mounted = _volume_entries(volume_dir)
        if mounted:  # the device plugin's volume-mount list is the real allocation
            return f"the volume mounts in {volume_dir}", mounted
        return ("NVIDIA_VISIBLE_DEVICES=all" if value else "NVIDIA_VISIBLE_DEVICES (unset)"), None
    if value.lower() in _NOTHING:
        return f"NVIDIA_VISIBLE_DEVICES={value!r}", []
    ids = [part.strip() for part in value.split(",") if part.strip()]
    return f"NVIDIA_VISIBLE_DEVICES={value}", ids


def _volume_entries(folder: Path) -> list[str] | None:
    if not folder.is_dir():
        return None
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _match_allocation(
    source: str, wanted: list[str], visible: list[GpuInfo], unavailable: str
) -> list[GpuInfo]:
    found: list[GpuInfo] = []
    missing: list[str] = []
    for ident in wanted:
        matches = lookup(visible, ident, prefix=False)
        found.extend(g for g in matches if g not in found)
        if not matches:
            missing.append(ident)
    indices_only = all(INDEX_PATTERN.match(i) for i in wanted)
    if missing and indices_only and len(visible) == len(wanted):
        # The container runtime renumbers: host GPUs 2,3 appear as NVML 0,1 inside the pod.
        return list(visible)
    in_mig_mode = {ident: [g for g in visible if g.parent_uuid.lower() == ident.lower()]
                   for ident in missing}
    for ident, instances in in_mig_mode.items():
        if instances:
            # CUDA cannot use a GPU in MIG mode as a whole, only its MIG devices.
            raise GpuNotVisibleError(
                f"allocated GPU {ident} (from {source}) is in MIG mode: CUDA can use only "
                f"its MIG devices ({', '.join(f'{g.uuid} {g.mig_profile}' for g in instances)})"
                "; request a MIG resource (e.g. nvidia.com/mig-"
                f"{instances[0].mig_profile}) instead of the whole GPU, or disable MIG on it")
    if missing:
        seen = ", ".join(g.uuid for g in visible) or "none"
        why = f"NVML is unavailable: {unavailable}" if unavailable else f"NVML sees: {seen}"
        raise GpuNotVisibleError(
            f"allocated GPU {', '.join(missing)} (from {source}) is not visible; {why}"
        )
    return [g for g in visible if g in found]  # NVML (PCI) order, as CUDA will number them


def lookup(gpus: Sequence[GpuInfo], ident: str, *, prefix: bool) -> list[GpuInfo]:
    """GPUs named by an index ("2", every MIG instance of GPU 2), "2:1", or a uuid (prefix)."""
    index = INDEX_PATTERN.match(ident)
    if index:
        gpu_index, mig = int(index.group(1)), index.group(2)
        return [g for g in gpus if g.index == gpu_index
                and (mig is None or g.mig_index == int(mig))]
    key = ident.lower()
    if prefix:
        return [g for g in gpus if g.uuid.lower().startswith(key)]
    return [g for g in gpus if g.uuid.lower() == key]


def cuda_enumeration(visible: list[GpuInfo], value: str, warnings: list[str]) -> list[GpuInfo]:
    """What CUDA enumerates under CUDA_VISIBLE_DEVICES=value, in that order.

    Entries are CUDA ordinals (PCI order), UUIDs or unique UUID prefixes ("GPU-8f3", "MIG-…").
    Like CUDA, the first invalid entry (unknown, ambiguous or repeated) hides itself and
    every entry after it.
    """
    entries = [e.strip() for e in value.split(",")]
    result: list[GpuInfo] = []
    if not value.strip():
        return result
    for pos, entry in enumerate(entries):
        if entry.isdigit():
            matches = [visible[int(entry)]] if int(entry) < len(visible) else []
        elif entry[:4].upper() in ("GPU-", "MIG-"):
            matches = lookup(visible, entry, prefix=True)
        else:
            matches = []
        if len(matches) != 1 or matches[0] in result:
            warnings.append(
                f"CUDA_VISIBLE_DEVICES entry {entry!r} is invalid (unknown, ambiguous or "
                f"repeated); CUDA ignores it and every entry after it: {','.join(entries[pos:])}"
            )
            break
        result.append(matches[0])
    return result


def _why_no_gpu(
    source: str,
    wanted: list[str] | None,
    visible: list[GpuInfo],
    unavailable: str,
    env: Mapping[str, str],
) -> str:
    if wanted == []:
        return f"{source} allocates no GPU"
    if unavailable:
        return f"NVML is unavailable: {unavailable}"
    if not visible:
        return "NVML sees no GPU"
    return f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r} hides every allocated GPU"


def gpu_on_cpu(environ: Mapping[str, str]) -> bool:
    """True when the test switch is on and the NVML loaded is the fake (see ENV_GPU_ON_CPU)."""
    if environ.get(ENV_GPU_ON_CPU, "") != "1":
        return False
    if nvml.is_fake():
        return True
    log.warning("%s=1 is ignored: the NVML this process loaded is not the test stand-in, so "
                "its GPUs are real and models run on them", ENV_GPU_ON_CPU)
    return False


@dataclass(frozen=True)
class ModelPlacement:
    """Where one process's model runs and how: all `engine.load` needs besides the model."""

    device: str  # "cuda" or "cpu": where the model runs
    device_index: int = 0  # the CUDA ordinal in this process's view
    compute_type: str = "int8"  # concrete ("auto" resolved)
    cpu_threads: int = 0  # 0: every CPU this process may use
    # NVML's free memory before loading, within the memory budget if one is given: bounds the
    # batch
    free_memory_mib: int | None = None


def place_model(gpu: GpuInfo | None, compute_type: str, environ: Mapping[str, str], *,
                device_index: int = 0, cpu_threads: int = 0,
                memory_budget_mib: int = 0) -> ModelPlacement:
    """The one path from a device to a model placement, for pods and local workers alike:
    the CPU when `gpu` is None; under the test switch (the only place it is read) a GPU
    keeps its binding but the model runs on the CPU, with CPU compute types.

    `memory_budget_mib` (> 0) is this process's share of a GPU others use too: what is free
    now may be what another tenant allocates next, so the batch is sized from the budget
    (and never from more than is free)."""
    if gpu is None or gpu_on_cpu(environ):
        if gpu is not None:
            log.warning("test switch %s: the model for %s runs on the CPU", ENV_GPU_ON_CPU,
                        gpu.uuid)
            compute_type = "auto"  # GPU compute types make no sense there
        return ModelPlacement("cpu", 0, resolve_compute_type(compute_type, "cpu", None),
                              cpu_threads)
    room = gpu.memory_free_mib
    if memory_budget_mib > 0:
        if memory_budget_mib > room:
            log.warning("GPU %s has %d MiB free, less than the memory budget of %d MiB: the "
                        "batch is sized from what is free", gpu.uuid, room, memory_budget_mib)
        room = min(room, memory_budget_mib)
    return ModelPlacement("cuda", device_index,
                          resolve_compute_type(compute_type, "cuda", gpu.compute_capability),
                          cpu_threads, room)


def bind_environment(gpus: Sequence[GpuInfo]) -> dict[str, str]:
    """Env for a worker process that must see only `gpus`; its device_index is then 0..n-1."""
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(g.uuid for g in gpus),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def resolve_compute_type(requested: str, device: str, compute_capability: str | None) -> str:
    """`auto` → float16 on cc ≥ 7.0 (Tensor Cores), int8_float32 below or unknown, int8 on CPU."""
    if requested not in contract.COMPUTE_TYPES:
        raise ValueError(
            f"unknown compute type {requested!r}; choose one of {', '.join(contract.COMPUTE_TYPES)}"
        )
    if requested != "auto":
        return requested
    if device == "cpu":
        return "int8"
    cc = _cc_tuple(compute_capability or "")
    return "float16" if cc >= (7, 0) else "int8_float32"


def _cc_tuple(cc: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", cc)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def to_identity(gpu: GpuInfo, device_index: int) -> contract.GpuIdentity:
    return contract.GpuIdentity(
        uuid=gpu.uuid,
        name=gpu.name,
        memory_mib=gpu.memory_total_mib,
        device_index=device_index,
        pci_bus_id=gpu.pci_bus_id,
        compute_capability=gpu.compute_capability,
        mig_profile=gpu.mig_profile,
    )
