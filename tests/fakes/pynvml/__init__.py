"""A stand-in for the `pynvml` module (nvidia-ml-py), for machines without an NVIDIA GPU.

Put `tests/fakes` first on sys.path / PYTHONPATH and `import pynvml` finds this instead.
It implements the functions `whisperfleet_runner.nvml` calls, with the real names,
return shapes and exception classes (NVMLError and its NVMLError_<Name> subclasses).

Devices come from the environment variable WHISPERFLEET_FAKE_NVML, read at nvmlInit():
- unset or "none": nvmlInit raises NVMLError_DriverNotLoaded (a machine without a driver);
- "nolib": nvmlInit raises NVMLError_LibraryNotFound (no libnvidia-ml.so.1);
- inline JSON (starts with "[") or a path to a JSON file: a list of devices, in NVML
  index order (sorted by pci_bus_id when every device has one, as NVML numbers them).
  See tests/fakes/README.md for the device fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

IS_FAKE = True
ENV_VAR = "WHISPERFLEET_FAKE_NVML"

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: NVMLError(code) builds the matching NVMLError_<Name> subclass."""

    _valClassMapping: dict[int, type[NVMLError]] = {}  # noqa: RUF012 - mirrors pynvml

    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


def _error_class(code: int, name: str) -> type[NVMLError]:
    cls = type(f"NVMLError_{name}", (NVMLError,), {})
    NVMLError._valClassMapping[code] = cls
    return cls


NVMLError_Uninitialized = _error_class(NVML_ERROR_UNINITIALIZED, "Uninitialized")
NVMLError_InvalidArgument = _error_class(NVML_ERROR_INVALID_ARGUMENT, "InvalidArgument")
NVMLError_NotSupported = _error_class(NVML_ERROR_NOT_SUPPORTED, "NotSupported")
NVMLError_NoPermission = _error_class(NVML_ERROR_NO_PERMISSION, "NoPermission")
NVMLError_NotFound = _error_class(NVML_ERROR_NOT_FOUND, "NotFound")
NVMLError_DriverNotLoaded = _error_class(NVML_ERROR_DRIVER_NOT_LOADED, "DriverNotLoaded")
NVMLError_LibraryNotFound = _error_class(NVML_ERROR_LIBRARY_NOT_FOUND, "LibraryNotFound")
NVMLError_GpuIsLost = _error_class(NVML_ERROR_GPU_IS_LOST, "GpuIsLost")
NVMLError_Unknown = _error_class(NVML_ERROR_UNKNOWN, "Unknown")

_ERRORS_BY_NAME = {cls.__name__.removeprefix("NVMLError_"): code
                   for code, cls in NVMLError._valClassMapping.items()}

_MIB = 1024 * 1024


@dataclass
class _Handle:
    """What nvmlDeviceGetHandleByIndex returns: opaque to callers, like c_nvmlDevice_t."""

    spec: dict[str, Any]
    parent: _Handle | None = None
    mig_slots: dict[int, _Handle] = field(default_factory=dict)


_state: dict[str, Any] = {"refcount": 0, "devices": []}


def _load_devices() -> list[_Handle]:
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw in ("", "none"):
        raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
    if raw == "nolib":
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    text = raw if raw.startswith("[") else Path(raw).read_text(encoding="utf-8")
    handles = []
    for spec in json.loads(text):
        handle = _Handle(spec)
        for slot, mig in enumerate(spec.get("mig") or []):
            handle.mig_slots[int(mig.get("slot", slot))] = _Handle(mig, parent=handle)
        handles.append(handle)
    # NVML numbers GPUs in PCI bus order, whatever order a container's devices were
    # allocated in (the real-node stand-in plugins list them as the kubelet asked).
    if all(h.spec.get("pci_bus_id") for h in handles):
        handles.sort(key=lambda h: str(h.spec["pci_bus_id"]).lower())
    return handles


def _check(handle: _Handle, function: str) -> None:
    if _state["refcount"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    # A device may declare per-function failures: {"fail": {"nvmlDeviceGetName": "GpuIsLost"}}.
    failure = (handle.spec.get("fail") or {}).get(function)
    if failure:
        raise NVMLError(_ERRORS_BY_NAME[failure])
    # ... or be lost from the moment a file appears (a GPU that falls off the bus mid-run).
    device = handle.parent or handle
    flag = device.spec.get("lost_when")
    if flag and Path(flag).exists():
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)


# --- the pynvml API subset ------------------------------------------------------------


def nvmlInit() -> None:
    devices = _load_devices()
    if _state["refcount"] == 0:
        _state["devices"] = devices
    _state["refcount"] += 1


def nvmlShutdown() -> None:
    if _state["refcount"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    _state["refcount"] -= 1


def nvmlSystemGetDriverVersion() -> str:
    if _state["refcount"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return "550.54.15-fake"


def nvmlDeviceGetCount() -> int:
    if _state["refcount"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return len(_state["devices"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if _state["refcount"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if not 0 <= index < len(_state["devices"]):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _state["devices"][index]


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
    if _state["refcount"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for device in _state["devices"]:
        for handle in (device, *device.mig_slots.values()):
            if handle.spec.get("uuid") == wanted:
                return handle
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetName(handle: _Handle) -> str:
    _check(handle, "nvmlDeviceGetName")
    if handle.parent is not None:  # real NVML: "<parent name> MIG <profile>"
        return f"{handle.parent.spec['name']} MIG {handle.spec['profile']}"
    return str(handle.spec.get("name", "NVIDIA Fake GPU"))


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    _check(handle, "nvmlDeviceGetUUID")
    return str(handle.spec["uuid"])


def nvmlDeviceGetPciInfo(handle: _Handle) -> SimpleNamespace:
    _check(handle, "nvmlDeviceGetPciInfo")
    source = handle.parent.spec if handle.parent is not None else handle.spec
    # Real pynvml returns a ctypes struct whose char-array fields read back as bytes.
    return SimpleNamespace(busId=str(source.get("pci_bus_id", "00000000:00:00.0")).encode())


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> SimpleNamespace:
    _check(handle, "nvmlDeviceGetMemoryInfo")
    total = int(handle.spec.get("memory_total_mib", 16384)) * _MIB
    used = int(handle.spec.get("memory_used_mib", 0)) * _MIB
    return SimpleNamespace(total=total, used=used, free=total - used)


def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
    _check(handle, "nvmlDeviceGetCudaComputeCapability")
    source = handle.parent.spec if handle.parent is not None else handle.spec
    major, minor = str(source.get("cc", "8.0")).split(".")
    return int(major), int(minor)


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> SimpleNamespace:
    _check(handle, "nvmlDeviceGetUtilizationRates")
    if handle.parent is not None:  # real NVML does not report utilisation per MIG instance
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return SimpleNamespace(gpu=int(handle.spec.get("utilization", 0)), memory=0)


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[SimpleNamespace]:
    _check(handle, "nvmlDeviceGetComputeRunningProcesses")
    count = int(handle.spec.get("processes", 0))
    return [SimpleNamespace(pid=1000 + i, usedGpuMemory=None) for i in range(count)]


def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
    _check(handle, "nvmlDeviceGetMigMode")
    if handle.parent is not None or "mig" not in handle.spec:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # like a GPU without MIG support
    mode = NVML_DEVICE_MIG_ENABLE if handle.spec.get("mig") is not None else 0
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    _check(handle, "nvmlDeviceGetMaxMigDeviceCount")
    return 7 if handle.parent is None else 0


def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    _check(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
    if index not in handle.mig_slots:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return handle.mig_slots[index]
