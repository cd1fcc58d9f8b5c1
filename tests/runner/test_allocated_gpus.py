"""Allocated GPU -> device_index and local GPU choice, through the fake NVML."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from whisperfleet_runner import contract
from whisperfleet_runner.gpu import choice as gpu_choice
from whisperfleet_runner.gpu import devices
from whisperfleet_runner.gpu.devices import GpuNotVisibleError, NoGpuError


def uuid(i: int) -> str:
    return f"GPU-{i}a{i}b{i}c{i}d-1111-4000-8000-00000000000{i}"


def gpu(i: int, *, free: int = 40000, total: int = 40960, cc: str = "8.0", **extra: Any) -> dict:
    return {"uuid": uuid(i), "name": "NVIDIA A100-SXM4-40GB",
            "pci_bus_id": f"00000000:{i + 7:02X}:00.0", "memory_total_mib": total,
            "memory_used_mib": total - free, "cc": cc, **extra}


def four(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1), gpu(2), gpu(3)])


def uuids(selection: Any) -> list[str]:
    return [g.uuid for g in selection.gpus]


# --- NVIDIA_VISIBLE_DEVICES ------------------------------------------------------------


def test_uuid_allocation_in_a_proper_container(fake_nvml) -> None:
    fake_nvml([gpu(1)])  # the container runtime exposes only the allocated GPU
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": uuid(1)})
    assert (sel.device, sel.device_index, uuids(sel)) == ("cuda", [0], [uuid(1)])
    assert sel.warnings == [] and sel.cuda_visible_devices is None


def test_all_leak_restricts_to_allocated_in_pci_order(fake_nvml) -> None:
    four(fake_nvml)  # NVML sees every GPU of the node
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": f"{uuid(2)},{uuid(0)}"})
    assert uuids(sel) == [uuid(0), uuid(2)] and sel.device_index == [0, 1]
    assert sel.cuda_visible_devices == f"{uuid(0)},{uuid(2)}"
    (warning,) = sel.warnings
    assert "4 GPU(s) are visible" in warning and "allocates 2" in warning
    assert uuid(3) in warning and "restricting" in warning
    env: dict[str, str] = {}
    sel.apply(env)
    assert env == {"CUDA_VISIBLE_DEVICES": f"{uuid(0)},{uuid(2)}",
                   "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_index_allocation_renumbered_inside_the_container(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1)])  # host GPUs 2 and 3 appear as NVML 0 and 1 in the pod
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": "2,3"})
    assert uuids(sel) == [uuid(0), uuid(1)] and sel.device_index == [0, 1]
    assert sel.cuda_visible_devices is None and sel.warnings == []


def test_index_allocation_with_the_leak_uses_host_indices(fake_nvml) -> None:
    four(fake_nvml)
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": "1"})
    assert uuids(sel) == [uuid(1)] and sel.cuda_visible_devices == uuid(1)
    assert len(sel.warnings) == 1


def test_mig_instance_allocation(fake_nvml) -> None:
    fake_nvml([
        {**gpu(0), "mig": [{"uuid": "MIG-aaaa-1111", "profile": "1g.10gb",
                            "memory_total_mib": 9984},
                           {"uuid": "MIG-bbbb-2222", "profile": "2g.20gb",
                            "memory_total_mib": 19968}]},
        gpu(1),
    ])
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": "MIG-bbbb-2222"})
    assert uuids(sel) == ["MIG-bbbb-2222"] and sel.device_index == [0]
    assert sel.cuda_visible_devices == "MIG-bbbb-2222"
    (identity,) = sel.identities()
    assert identity == contract.GpuIdentity(
        uuid="MIG-bbbb-2222", name="NVIDIA A100-SXM4-40GB MIG 2g.20gb", memory_mib=19968,
        device_index=0, pci_bus_id="00000000:07:00.0", compute_capability="8.0",
        mig_profile="2g.20gb",
    )


def test_a_whole_gpu_in_mig_mode_is_named_with_its_mig_devices(fake_nvml) -> None:
    fake_nvml([{**gpu(0), "mig": [{"uuid": "MIG-aaaa-1111", "profile": "1g.10gb"},
                                  {"uuid": "MIG-bbbb-2222", "profile": "1g.10gb"}]}])
    with pytest.raises(GpuNotVisibleError) as info:
        devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": uuid(0)})
    message = str(info.value)
    assert f"{uuid(0)} (from NVIDIA_VISIBLE_DEVICES={uuid(0)}) is in MIG mode" in message
    assert "MIG-aaaa-1111 1g.10gb" in message and "MIG-bbbb-2222 1g.10gb" in message
    assert "nvidia.com/mig-1g.10gb" in message and "not visible" not in message


def test_all_uses_every_gpu_and_says_so(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1)])
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": "all"})
    assert uuids(sel) == [uuid(0), uuid(1)] and sel.device_index == [0, 1]
    assert sel.cuda_visible_devices is None
    assert sel.warnings == ["NVIDIA_VISIBLE_DEVICES=all: using every visible GPU (2)"]


def test_unset_means_a_bare_host_and_uses_what_nvml_sees(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1)])
    sel = devices.select_allocated("cuda", {})
    assert sel.device_index == [0, 1] and sel.warnings == []


@pytest.mark.parametrize("value", ["none", "void", "", "NONE"])
def test_nothing_allocated_with_cuda_fails_and_with_auto_runs_on_cpu(
    fake_nvml, value: str
) -> None:
    fake_nvml([gpu(0)])  # even though NVML (leak) sees a GPU
    with pytest.raises(NoGpuError, match="allocates no GPU") as info:
        devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": value})
    assert info.value.exit_code == contract.EXIT_NO_GPU == 3
    sel = devices.select_allocated("auto", {"NVIDIA_VISIBLE_DEVICES": value})
    assert (sel.device, sel.device_index, sel.gpus) == ("cpu", [], [])
    assert len(sel.warnings) == 1 and "running on CPU" in sel.warnings[0]
    assert sel.cuda_visible_devices == ""  # the leaked GPU stays hidden from CUDA


def test_volume_mounts_directory_names_the_devices(fake_nvml, tmp_path: Path) -> None:
    four(fake_nvml)
    (tmp_path / uuid(3)).touch()
    (tmp_path / uuid(1)).touch()
    env = {"NVIDIA_VISIBLE_DEVICES": devices.VOLUME_MOUNTS_DIR}
    sel = devices.select_allocated("cuda", env, volume_mounts_dir=tmp_path)
    assert uuids(sel) == [uuid(1), uuid(3)]
    assert sel.cuda_visible_devices == f"{uuid(1)},{uuid(3)}"
    # The device plugin's mounts also win over an image's NVIDIA_VISIBLE_DEVICES=all.
    sel = devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": "all"}, tmp_path)
    assert uuids(sel) == [uuid(1), uuid(3)]


def test_empty_volume_mounts_directory_is_no_gpu(fake_nvml, tmp_path: Path) -> None:
    four(fake_nvml)
    env = {"NVIDIA_VISIBLE_DEVICES": devices.VOLUME_MOUNTS_DIR}
    with pytest.raises(NoGpuError, match="allocates no GPU"):
        devices.select_allocated("cuda", env, volume_mounts_dir=tmp_path)


# --- CUDA_VISIBLE_DEVICES --------------------------------------------------------------


def test_cuda_visible_devices_reorders(fake_nvml) -> None:
    four(fake_nvml)
    sel = devices.select_allocated("cuda", {"CUDA_VISIBLE_DEVICES": "2,0"})
    assert uuids(sel) == [uuid(2), uuid(0)] and sel.device_index == [0, 1]
    assert sel.cuda_visible_devices is None and sel.warnings == []


def test_cuda_visible_devices_accepts_unique_uuid_prefixes(fake_nvml) -> None:
    four(fake_nvml)
    sel = devices.select_allocated("cuda", {"CUDA_VISIBLE_DEVICES": "GPU-3a3,gpu-1A1B"})
    assert uuids(sel) == [uuid(3), uuid(1)]


@pytest.mark.parametrize(
    ("value", "kept", "bad"),
    [("1,7,0", [1], "'7'"), ("2,GPU-,0", [2], "'GPU-'"), ("1,1,0", [1], "'1'"),
     ("3,-1,0", [3], "'-1'")],
)
def test_an_invalid_entry_hides_everything_after_it(
    fake_nvml, value: str, kept: list[int], bad: str
) -> None:
    four(fake_nvml)
    sel = devices.select_allocated("auto", {"CUDA_VISIBLE_DEVICES": value})
    assert uuids(sel) == [uuid(i) for i in kept]
    assert any(bad in w and "every entry after it" in w for w in sel.warnings)


def test_an_invalid_first_entry_hides_everything(fake_nvml) -> None:
    four(fake_nvml)
    with pytest.raises(NoGpuError, match="CUDA_VISIBLE_DEVICES='foo,0' hides every"):
        devices.select_allocated("cuda", {"CUDA_VISIBLE_DEVICES": "foo,0"})


def test_cuda_visible_devices_on_top_of_a_leaky_allocation(fake_nvml) -> None:
    four(fake_nvml)
    env = {"NVIDIA_VISIBLE_DEVICES": f"{uuid(0)},{uuid(1)}", "CUDA_VISIBLE_DEVICES": "1,3"}
    sel = devices.select_allocated("cuda", env)
    assert uuids(sel) == [uuid(1)] and sel.cuda_visible_devices == uuid(1)
    text = "\n".join(sel.warnings)
    assert f"{uuid(0)} (" in text and "hidden by CUDA_VISIBLE_DEVICES" in text
    assert "restricting" in text and uuid(3) in text


def test_empty_cuda_visible_devices_hides_every_gpu(fake_nvml) -> None:
    fake_nvml([gpu(0)])
    with pytest.raises(NoGpuError, match="CUDA_VISIBLE_DEVICES"):
        devices.select_allocated("cuda", {"CUDA_VISIBLE_DEVICES": ""})
    assert devices.select_allocated("auto", {"CUDA_VISIBLE_DEVICES": ""}).device == "cpu"


# --- failures --------------------------------------------------------------------------


def test_an_allocated_gpu_nvml_cannot_see_is_named(fake_nvml) -> None:
    fake_nvml([gpu(0)])
    env = {"NVIDIA_VISIBLE_DEVICES": f"{uuid(0)},GPU-dead-beef"}
    for device in ("cuda", "auto"):
        with pytest.raises(GpuNotVisibleError, match="GPU-dead-beef") as info:
            devices.select_allocated(device, env)
        assert uuid(0) in str(info.value)  # and what NVML does see
        assert info.value.exit_code == contract.EXIT_NO_GPU


def test_allocated_gpu_without_a_driver_says_why(fake_nvml) -> None:
    fake_nvml(None)
    with pytest.raises(GpuNotVisibleError, match="Driver Not Loaded"):
        devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": uuid(0)})


def test_no_driver_cuda_fails_auto_falls_back_with_one_warning(fake_nvml) -> None:
    fake_nvml(None)
    with pytest.raises(NoGpuError, match="Driver Not Loaded"):
        devices.select_allocated("cuda", {})
    sel = devices.select_allocated("auto", {"NVIDIA_VISIBLE_DEVICES": "all"})
    assert sel.device == "cpu" and sel.device_index == [] and sel.cuda_visible_devices is None
    (warning,) = sel.warnings
    assert "Driver Not Loaded" in warning and "CPU" in warning


def test_cpu_never_touches_nvml(fake_nvml) -> None:
    fake_nvml(None)
    sel = devices.select_allocated("cpu", {"NVIDIA_VISIBLE_DEVICES": "GPU-dead"})
    assert (sel.device, sel.device_index, sel.warnings) == ("cpu", [], [])
    with pytest.raises(ValueError, match="auto, cuda or cpu"):
        devices.select_allocated("gpu", {})


def test_the_chosen_identity_is_logged(fake_nvml, caplog: pytest.LogCaptureFixture) -> None:
    fake_nvml([{**gpu(0), "mig": [{"uuid": "MIG-cafe", "profile": "3g.20gb",
                                   "memory_total_mib": 19968}]}])
    caplog.set_level(logging.INFO, logger="whisperfleet_runner.gpu.devices")
    devices.select_allocated("cuda", {"NVIDIA_VISIBLE_DEVICES": "MIG-cafe"})
    line = next(r.getMessage() for r in caplog.records if "MIG-cafe" in r.getMessage())
    for part in ("CUDA device 0", "NVIDIA A100-SXM4-40GB", "00000000:07:00.0", "19968 MiB",
                 "cc 8.0", "MIG 3g.20gb"):
        assert part in line


def test_ensure_pci_bus_order() -> None:
    env = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    devices.ensure_pci_bus_order(env)
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


# --- local choice ----------------------------------------------------------------------


def test_choose_local_skips_busy_gpus(fake_nvml) -> None:
    fake_nvml([gpu(0, free=30000), gpu(1, free=1000), gpu(2, free=20000), gpu(3, free=500)])
    choice = gpu_choice.choose_local("all", min_free_mib=gpu_choice.parse_size("4GiB"))
    assert choice.device == "cuda" and [g.index for g in choice.gpus] == [0, 2]
    assert {r.gpu.index: r.reason for r in choice.refused if r.gpu} == {
        1: "busy: 1000 MiB free < 4096 MiB required",
        3: "busy: 500 MiB free < 4096 MiB required",
    }
    report = "\n".join(choice.report())
    assert f"GPU 1 {uuid(1)}" in report and "refused, busy" in report and "used" in report


def test_choose_local_all_honours_a_preset_cuda_visible_devices(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1), gpu(2), gpu(3)])
    choice = gpu_choice.choose_local("all", environ={"CUDA_VISIBLE_DEVICES": f"2,{uuid(0)}"})
    assert [g.index for g in choice.gpus] == [0, 2]
    hidden = {r.gpu.index: r.reason for r in choice.refused if r.gpu}
    assert set(hidden) == {1, 3} and "hidden by CUDA_VISIBLE_DEVICES" in hidden[1]
    # An explicit --gpus is the user's newer word and wins over the exported variable.
    explicit = gpu_choice.choose_local("1", environ={"CUDA_VISIBLE_DEVICES": "2"})
    assert [g.index for g in explicit.gpus] == [1]


def test_choose_local_by_index_and_uuid(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1), gpu(2)])
    choice = gpu_choice.choose_local("0,2")
    assert [g.index for g in choice.gpus] == [0, 2]
    assert [(r.gpu.index, r.reason) for r in choice.refused if r.gpu] == [
        (1, "not selected by --gpus 0,2")]
    assert [g.index for g in gpu_choice.choose_local(f"{uuid(1)[:8]}").gpus] == [1]


def test_choose_local_reports_missing_and_ambiguous(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1)])
    choice = gpu_choice.choose_local("1,5,GPU-")
    assert [g.index for g in choice.gpus] == [1]
    reasons = {r.target: r.reason for r in choice.refused if r.gpu is None}
    assert reasons["5"].startswith("not found") and "GPUs seen: 0, 1" in reasons["5"]
    assert reasons["GPU-"].startswith("ambiguous")


def test_choose_local_nothing_usable(fake_nvml) -> None:
    fake_nvml([gpu(0, free=100), gpu(1, free=200)])
    choice = gpu_choice.choose_local("all", min_free_mib=1000)
    assert choice.device == "cpu" and choice.gpus == []
    (warning,) = choice.warnings
    assert "running on CPU" in warning and "busy: 100 MiB free" in warning
    with pytest.raises(NoGpuError, match="busy: 200 MiB free") as info:
        gpu_choice.choose_local("all", min_free_mib=1000, device="cuda")
    assert info.value.choice is not None and len(info.value.choice.refused) == 2


def test_choose_local_without_driver(fake_nvml) -> None:
    fake_nvml(None)
    choice = gpu_choice.choose_local()
    assert choice.device == "cpu" and "Driver Not Loaded" in choice.warnings[0]
    assert gpu_choice.choose_local(device="cpu").device == "cpu"


def test_choose_local_mig_addresses(fake_nvml) -> None:
    fake_nvml([{**gpu(0), "mig": [{"uuid": "MIG-a", "profile": "1g.5gb", "memory_total_mib": 4864},
                                  {"uuid": "MIG-b", "profile": "1g.5gb",
                                   "memory_total_mib": 4864}]}, gpu(1)])
    assert [g.uuid for g in gpu_choice.choose_local("0:1").gpus] == ["MIG-b"]
    assert [g.uuid for g in gpu_choice.choose_local("0").gpus] == ["MIG-a", "MIG-b"]


@pytest.mark.parametrize("spec", ["abc", "0,x", "", " , "])
def test_choose_local_rejects_bad_specs(fake_nvml, spec: str) -> None:
    fake_nvml([gpu(0)])
    with pytest.raises(ValueError, match="--gpus"):
        gpu_choice.choose_local(spec)


@pytest.mark.parametrize(
    ("text", "mib"),
    [("4GiB", 4096), ("4Gi", 4096), ("512MiB", 512), ("4096", 4096), ("1.5GiB", 1536),
     ("4GB", 3814), ("0", 0), (" 2 gib ", 2048), ("1TiB", 1048576)],
)
def test_parse_size(text: str, mib: int) -> None:
    assert gpu_choice.parse_size(text) == mib


@pytest.mark.parametrize("text", ["four", "4XB", "-1GiB", "", "GiB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        gpu_choice.parse_size(text)


# --- worker binding, compute type, identity --------------------------------------------


def test_bind_environment_pins_a_worker_to_its_gpus(fake_nvml) -> None:
    fake_nvml([gpu(0), gpu(1), gpu(2)])
    chosen = gpu_choice.choose_local("2,0").gpus
    assert devices.bind_environment(chosen) == {
        "CUDA_VISIBLE_DEVICES": f"{uuid(0)},{uuid(2)}", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    # Inside such a worker, the same GPUs are all that is visible: ordinals 0..n-1.
    env = devices.bind_environment(chosen[1:])
    sel = devices.select_allocated("cuda", env)
    assert uuids(sel) == [uuid(2)] and sel.device_index == [0]


@pytest.mark.parametrize(
    ("requested", "device", "cc", "expected"),
    [("auto", "cuda", "8.0", "float16"), ("auto", "cuda", "7.0", "float16"),
     ("auto", "cuda", "10.0", "float16"), ("auto", "cuda", "6.1", "int8_float32"),
     ("auto", "cuda", "", "int8_float32"), ("auto", "cpu", "", "int8"),
     ("auto", "cpu", "8.0", "int8"), ("int8_float16", "cuda", "8.0", "int8_float16"),
     ("float32", "cpu", None, "float32")],
)
def test_resolve_compute_type(requested: str, device: str, cc: str | None, expected: str) -> None:
    assert devices.resolve_compute_type(requested, device, cc) == expected


def test_resolve_compute_type_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown compute type 'fp8'"):
        devices.resolve_compute_type("fp8", "cuda", "9.0")


def test_selection_compute_capability_is_the_lowest(fake_nvml) -> None:
    fake_nvml([gpu(0, cc="8.6"), gpu(1, cc="7.5"), gpu(2, cc="10.0")])
    sel = devices.select_allocated("cuda", {})
    assert sel.compute_capability == "7.5"
    assert devices.resolve_compute_type("auto", sel.device, sel.compute_capability) == "float16"


def test_to_identity(fake_nvml) -> None:
    fake_nvml([gpu(0, free=1000, cc="8.9")])
    (info,) = gpu_choice.choose_local().gpus
    identity = devices.to_identity(info, 3)
    assert identity == contract.GpuIdentity(
        uuid=uuid(0), name="NVIDIA A100-SXM4-40GB", memory_mib=40960, device_index=3,
        pci_bus_id="00000000:07:00.0", compute_capability="8.9", mig_profile="")
