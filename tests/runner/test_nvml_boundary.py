"""nvml.py against the fake pynvml, and the fake's and nvml.py's agreement with real pynvml."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from whisperfleet_runner.gpu import nvml

A100 = "NVIDIA A100-SXM4-40GB"


def _real_pynvml() -> ModuleType:
    """The installed nvidia-ml-py, even while tests/fakes shadows it on sys.path."""
    paths = [p for p in sys.path if not p.rstrip("/").endswith("fakes")]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", paths)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get("pynvml")
    sys.modules["pynvml"] = module  # pynvml looks itself up there while it loads
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            del sys.modules["pynvml"]
        else:
            sys.modules["pynvml"] = previous
    return module


def test_every_pynvml_name_nvml_uses_exists_in_the_real_library_and_the_fake(fake_nvml) -> None:
    import pynvml as fake

    source = Path(nvml.__file__).read_text()
    used = set(re.findall(r"\bnv\.(\w+)", source))
    assert {"nvmlInit", "nvmlDeviceGetMigDeviceHandleByIndex", "NVMLError_NotFound"} <= used
    real = _real_pynvml()
    assert sorted(n for n in used if not hasattr(real, n)) == []
    assert sorted(n for n in used if not hasattr(fake, n)) == []
    # The error classes are built from codes in both, so `except NVMLError_NotFound` works.
    assert isinstance(fake.NVMLError(fake.NVML_ERROR_NOT_FOUND), fake.NVMLError_NotFound)
    assert fake.NVML_ERROR_NOT_FOUND == real.NVML_ERROR_NOT_FOUND
    assert fake.NVML_DEVICE_MIG_ENABLE == real.NVML_DEVICE_MIG_ENABLE


def test_real_pynvml_without_a_driver_is_a_clear_nvml_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No NVIDIA driver on this machine: the REAL library must surface as NvmlUnavailable.
    real = _real_pynvml()
    try:
        real.nvmlInit()
    except real.NVMLError:
        pass
    else:  # pragma: no cover - only on a machine with a GPU
        real.nvmlShutdown()
        pytest.skip("a real NVIDIA driver is present")
    monkeypatch.setitem(sys.modules, "pynvml", real)
    with pytest.raises(nvml.NvmlUnavailable, match="NVML"):
        nvml.list_gpus()


def test_list_gpus_reports_every_field(fake_nvml) -> None:
    fake_nvml([
        {"uuid": "GPU-aaaa", "name": A100, "pci_bus_id": "00000000:07:00.0",
         "memory_total_mib": 40960, "memory_used_mib": 1024, "cc": "8.0",
         "utilization": 37, "processes": 2},
        {"uuid": "GPU-bbbb", "name": "Tesla T4", "pci_bus_id": "00000000:3B:00.0",
         "memory_total_mib": 15360, "cc": "7.5"},
    ])
    first, second = nvml.list_gpus()
    assert first == nvml.GpuInfo(
        index=0, uuid="GPU-aaaa", name=A100, pci_bus_id="00000000:07:00.0",
        memory_total_mib=40960, memory_used_mib=1024, memory_free_mib=39936,
        compute_capability="8.0", utilization_percent=37, process_count=2,
    )
    assert (second.index, second.name, second.compute_capability) == (1, "Tesla T4", "7.5")
    assert second.memory_free_mib == 15360 and not second.is_mig and second.label == "1"


def test_mig_instances_replace_their_parent(fake_nvml) -> None:
    fake_nvml([
        {"uuid": "GPU-parent", "name": A100, "pci_bus_id": "00000000:07:00.0", "cc": "8.0",
         "mig": [
             {"uuid": "MIG-one", "profile": "1g.5gb", "memory_total_mib": 4864, "slot": 0},
             {"uuid": "MIG-three", "profile": "3g.20gb", "memory_total_mib": 19968,
              "memory_used_mib": 100, "slot": 2},  # slots need not be contiguous
         ]},
        {"uuid": "GPU-off", "name": A100, "mig": None},  # MIG capable but disabled
        {"uuid": "GPU-empty", "name": A100, "mig": []},  # MIG on, no instances: unusable
    ])
    gpus = nvml.list_gpus()
    assert [g.uuid for g in gpus] == ["MIG-one", "MIG-three", "GPU-off"]
    one, three, off = gpus
    assert one.is_mig and one.mig_profile == "1g.5gb" and one.label == "0:0"
    assert three.mig_profile == "3g.20gb" and three.label == "0:2"
    assert three.memory_total_mib == 19968 and three.memory_free_mib == 19868
    assert three.parent_uuid == "GPU-parent" and three.pci_bus_id == "00000000:07:00.0"
    assert three.compute_capability == "8.0"
    assert three.name == f"{A100} MIG 3g.20gb"
    assert three.utilization_percent is None  # NVML has no per-instance utilisation
    assert off.index == 1 and not off.is_mig


@pytest.mark.parametrize(
    ("setting", "message"),
    [("none", "Driver Not Loaded"), ("nolib", "Shared Library Not Found")],
)
def test_no_driver_or_library_is_nvml_unavailable(
    fake_nvml, monkeypatch: pytest.MonkeyPatch, setting: str, message: str
) -> None:
    monkeypatch.setenv("WHISPERFLEET_FAKE_NVML", setting)
    with pytest.raises(nvml.NvmlUnavailable, match=message):
        nvml.list_gpus()


def test_missing_binding_is_nvml_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(nvml.NvmlUnavailable, match="nvidia-ml-py"):
        nvml.list_gpus()


def test_unsupported_queries_and_lost_gpus_do_not_hide_healthy_ones(fake_nvml) -> None:
    import pynvml

    fake_nvml([
        {"uuid": "GPU-lost", "fail": {"nvmlDeviceGetName": "GpuIsLost"}},
        {"uuid": "GPU-locked", "fail": {"nvmlDeviceGetComputeRunningProcesses": "NoPermission",
                                        "nvmlDeviceGetUtilizationRates": "NotSupported"}},
    ])
    (gpu,) = nvml.list_gpus()
    assert gpu.uuid == "GPU-locked" and gpu.index == 1
    assert gpu.process_count is None and gpu.utilization_percent is None
    assert pynvml._state["refcount"] == 0  # NVML shut down again


def test_devices_from_a_json_file(fake_nvml, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps([{"uuid": "GPU-file", "name": "NVIDIA L4", "cc": "8.9"}]))
    monkeypatch.setenv("WHISPERFLEET_FAKE_NVML", str(path))
    assert [(g.uuid, g.compute_capability) for g in nvml.list_gpus()] == [("GPU-file", "8.9")]
    assert nvml.driver_version().endswith("fake")


H100 = {"uuid": "GPU-0a1b2c3d-0000-4000-8000-000000000000", "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "00000000:18:00.0", "memory_total_mib": 81559, "cc": "9.0"}


def test_the_gpu_on_cpu_switch_acts_only_under_the_fake_nvml(
    fake_nvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from whisperfleet_runner.gpu import devices

    env = {**fake_nvml([H100]), devices.ENV_GPU_ON_CPU: "1"}
    [gpu] = nvml.list_gpus()
    assert devices.place_model(gpu, "auto", env).device == "cpu"  # the tests' fake GPU
    # The real NVML loaded, and everything else as before (the fake's variable set too): a
    # real GPU keeps its model, and the switch is reported as ignored.
    monkeypatch.setitem(sys.modules, "pynvml", _real_pynvml())
    placement = devices.place_model(gpu, "auto", env)
    assert (placement.device, placement.compute_type) == ("cuda", "float16")
    assert f"{devices.ENV_GPU_ON_CPU}=1 is ignored" in caplog.text
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML binding at all
    assert devices.place_model(gpu, "auto", env).device == "cuda"
