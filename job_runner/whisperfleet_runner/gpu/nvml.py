"""The NVML boundary: the ONLY module that imports `pynvml` (package nvidia-ml-py).

Everything NVML reports is turned into plain dataclasses here, so the rest of the runner
(and its tests, which swap in `tests/fakes/pynvml`) never touch NVML handles or ctypes.
NVML is initialised and shut down around each query: queries are rare (start-up, the
`gpus` command) and this keeps no driver state alive in forked or spawned workers.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
# NVML names a MIG device like its parent plus the profile: "NVIDIA A100-SXM4-40GB MIG 1g.5gb".
_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)\s*$")


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here: nvidia-ml-py missing, no libnvidia-ml, or no driver loaded."""


class GpuLost(RuntimeError):
    """NVML reports a GPU as lost (fallen off the bus): nothing more will run on it."""


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA-usable device as NVML sees it: a whole GPU or one MIG instance."""

    index: int  # NVML (nvidia-smi) index; for a MIG instance, its parent GPU's index
    uuid: str  # "GPU-…" or, for a MIG instance, "MIG-…"
    name: str
    pci_bus_id: str  # e.g. "00000000:3B:00.0"; a MIG instance shares its parent's
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    compute_capability: str  # "8.0"; "" when NVML cannot tell
    mig_profile: str = ""  # e.g. "1g.10gb" for a MIG instance, "" for a whole GPU
    mig_index: int | None = None  # slot of a MIG instance within its parent
    parent_uuid: str = ""  # the parent GPU's uuid, for a MIG instance
    utilization_percent: int | None = None  # None: not supported (e.g. on MIG instances)
    process_count: int | None = None  # running compute processes; None when NVML cannot tell

    @property
    def is_mig(self) -> bool:
        return bool(self.mig_profile) or self.uuid.startswith("MIG-")

    @property
    def label(self) -> str:
        """nvidia-smi's address: "2" for a GPU, "2:1" for MIG instance 1 of GPU 2."""
        return f"{self.index}:{self.mig_index}" if self.mig_index is not None else str(self.index)

    def describe(self) -> str:
        mig = f", MIG {self.mig_profile}" if self.mig_profile else ""
        cc = self.compute_capability or "?"
        return (
            f"GPU {self.label} {self.uuid} ({self.name}{mig}, pci {self.pci_bus_id}, "
            f"{self.memory_free_mib}/{self.memory_total_mib} MiB free, cc {cc})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise NvmlUnavailable(
            "the NVML Python binding is not installed (pip install nvidia-ml-py)"
        ) from exc


def is_fake() -> bool:
    """Whether the `pynvml` this process loads is the tests' stand-in (tests/fakes/pynvml,
    marked IS_FAKE): the one NVML under which the GPU-on-CPU test switch may act."""
    try:
        module = _import_pynvml()
    except NvmlUnavailable:
        return False
    return getattr(module, "IS_FAKE", False) is True


@contextmanager
def _session() -> Iterator[ModuleType]:
    nv = _import_pynvml()
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        raise NvmlUnavailable(
            f"NVML could not start: {exc} (no NVIDIA driver on this machine?)"
        ) from exc
    try:
        yield nv
    finally:
        try:
            nv.nvmlShutdown()
        except nv.NVMLError as exc:  # shutting down must never hide the real outcome
            log.debug("nvmlShutdown failed: %s", exc)


def driver_version() -> str:
    """The NVIDIA driver version, e.g. "550.54.15"; raises NvmlUnavailable without a driver."""
    with _session() as nv:
        return _text(nv.nvmlSystemGetDriverVersion())


def list_gpus() -> list[GpuInfo]:
    """Every CUDA-usable device NVML can see, in NVML index order.

    A GPU in MIG mode is not usable by CUDA itself, so it is replaced by its MIG instances
    (in slot order); a GPU whose MIG mode is on but holds no instances yields nothing, and
    a GPU NVML fails to query (e.g. "GPU is lost") is skipped with a warning.
    Raises NvmlUnavailable when NVML or the driver is missing.
    """
    with _session() as nv:
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            raise NvmlUnavailable(f"NVML could not count GPUs: {exc}") from exc
        gpus: list[GpuInfo] = []
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                if _mig_enabled(nv, handle):
                    gpus.extend(_mig_instances(nv, handle, index))
                else:
                    gpus.append(_describe(nv, handle, index))
            except nv.NVMLError as exc:
                # A lost or inaccessible GPU must not hide the healthy ones; callers that
                # were allocated it will report it by name as not visible.
                log.warning("skipping NVML device %d: %s", index, exc)
        return gpus


# A worker checks its GPU before every inference, so NVML stays initialised in that process
# for its life instead of a session per query (nvmlInit can take a noticeable time).
_health: dict[str, Any] = {}


def check_healthy(uuid: str) -> None:
    """Raise GpuLost when NVML says the GPU (or MIG device) `uuid` is lost. Any other NVML
    trouble passes with a debug line: a health check must never fail healthy work."""
    try:
        nv = _health.get("nv")
        if nv is None:
            nv = _import_pynvml()
            nv.nvmlInit()
            _health["nv"] = nv
        nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByUUID(uuid))
    except NvmlUnavailable:
        return
    except Exception as exc:
        nv = _health.get("nv")
        lost = getattr(nv, "NVMLError_GpuIsLost", None)
        if lost is not None and isinstance(exc, lost):
            raise GpuLost(f"GPU {uuid} is lost (NVML: {exc})") from exc
        log.debug("NVML health check of %s failed: %s", uuid, exc)


def gpus_running(pid: int) -> list[str]:
    """UUIDs of the GPUs on which process `pid` holds a CUDA context."""
    with _session() as nv:
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        return [_text(nv.nvmlDeviceGetUUID(h)) for h in handles
                if any(p.pid == pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h))]


def _mig_enabled(nv: ModuleType, handle: Any) -> bool:
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
    except nv.NVMLError:  # NotSupported on GPUs without MIG
        return False
    return bool(current == nv.NVML_DEVICE_MIG_ENABLE)


def _mig_instances(nv: ModuleType, parent: Any, index: int) -> Iterator[GpuInfo]:
    parent_uuid = _text(nv.nvmlDeviceGetUUID(parent))
    parent_cc = _compute_capability(nv, parent)
    pci = _pci_bus_id(nv, parent)
    for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(parent)):
        try:
            mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
        except nv.NVMLError_NotFound:  # empty slot: instances need not be contiguous
            continue
        yield _describe(
            nv, mig, index, mig_index=slot, parent_uuid=parent_uuid, cc=parent_cc, pci=pci
        )


def _describe(
    nv: ModuleType,
    handle: Any,
    index: int,
    *,
    mig_index: int | None = None,
    parent_uuid: str = "",
    cc: str | None = None,
    pci: str | None = None,
) -> GpuInfo:
    name = _text(nv.nvmlDeviceGetName(handle))
    memory = nv.nvmlDeviceGetMemoryInfo(handle)
    profile = ""
    if mig_index is not None:
        match = _MIG_PROFILE.search(name)
        profile = match.group(1) if match else "unknown"
    return GpuInfo(
        index=index,
        uuid=_text(nv.nvmlDeviceGetUUID(handle)),
        name=name,
        pci_bus_id=pci if pci is not None else _pci_bus_id(nv, handle),
        memory_total_mib=int(memory.total) // _MIB,
        memory_used_mib=int(memory.used) // _MIB,
        memory_free_mib=int(memory.free) // _MIB,
        compute_capability=cc if cc is not None else _compute_capability(nv, handle),
        mig_profile=profile,
        mig_index=mig_index,
        parent_uuid=parent_uuid,
        utilization_percent=_optional(nv, lambda: nv.nvmlDeviceGetUtilizationRates(handle).gpu),
        process_count=_optional(nv, lambda: len(nv.nvmlDeviceGetComputeRunningProcesses(handle))),
    )


def _pci_bus_id(nv: ModuleType, handle: Any) -> str:
    return _text(nv.nvmlDeviceGetPciInfo(handle).busId)


def _compute_capability(nv: ModuleType, handle: Any) -> str:
    try:
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
    except nv.NVMLError as exc:
        log.warning("NVML could not report the compute capability: %s", exc)
        return ""
    return f"{major}.{minor}"


def _optional(nv: ModuleType, query: Any) -> int | None:
    # Utilisation and process lists are unsupported on some devices (MIG, vGPU) or need
    # privileges a pod lacks; the GPU is still usable, so report "unknown" instead of failing.
    try:
        return int(query())
    except nv.NVMLError as exc:
        log.debug("optional NVML query failed: %s", exc)
        return None


def _text(value: str | bytes) -> str:
    # pynvml decodes most strings itself, but struct fields such as busId stay bytes.
    return value.decode() if isinstance(value, bytes) else str(value)
