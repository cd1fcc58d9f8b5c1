"""A shared GPU's memory budget: the runner sizes its batch from its share, not from what
the GPU has free when it starts (the other tenants of a time-sliced GPU allocate later)."""

from __future__ import annotations

from typing import Any

import pytest

from whisperfleet_runner.decode.engine import batch_size_for_memory
from whisperfleet_runner.fleet import scheduler
from whisperfleet_runner.gpu import devices, nvml

# An idle T4 that four pods share by time-slicing: 15 GiB free now, 3.75 GiB each.
T4 = {"uuid": "GPU-5a1b2c3d-0000-4000-8000-000000000001", "name": "Tesla T4",
      "pci_bus_id": "00000000:18:00.0", "memory_total_mib": 15360, "memory_used_mib": 0,
      "cc": "7.5"}
LARGE_V3_MIB = 3087  # model.bin of large-v3 in float16


def placed(fake_nvml: Any, budget: int, used: int = 0) -> devices.ModelPlacement:
    env = fake_nvml([{**T4, "memory_used_mib": used}])
    [gpu] = nvml.list_gpus()
    return devices.place_model(gpu, "auto", env, memory_budget_mib=budget)


def test_the_budget_not_the_free_memory_sizes_the_batch(fake_nvml: Any) -> None:
    alone = placed(fake_nvml, 0)
    shared = placed(fake_nvml, 3840)
    assert (alone.device, alone.free_memory_mib) == ("cuda", 15360)
    assert shared.free_memory_mib == 3840
    # What the engine then starts with, for large-v3 asked at batch 16: alone it would take
    # the whole GPU's worth; on its share, a batch that leaves the others theirs.
    assert batch_size_for_memory(16, alone.free_memory_mib, LARGE_V3_MIB) == 16
    assert batch_size_for_memory(16, shared.free_memory_mib, LARGE_V3_MIB) == 1


def test_a_budget_above_what_is_free_is_held_to_what_is_free(
    fake_nvml: Any, caplog: pytest.LogCaptureFixture
) -> None:
    busy = placed(fake_nvml, 8000, used=12000)
    assert busy.free_memory_mib == 15360 - 12000
    assert "less than the memory budget of 8000 MiB" in caplog.text


def test_every_worker_of_a_pod_gets_the_budget(fake_nvml: Any) -> None:
    env = fake_nvml([T4, {**T4, "uuid": T4["uuid"][:-1] + "2",
                          "pci_bus_id": "00000000:28:00.0"}])
    gpus = [(f"cuda:{i}", g) for i, g in enumerate(nvml.list_gpus())]
    specs = scheduler.worker_specs(gpus, "auto", env, files=4, memory_budget_mib=5000)
    assert [s.placement.free_memory_mib for s in specs] == [5000, 5000]
    specs = scheduler.worker_specs(gpus, "auto", env, files=4)
    assert [s.placement.free_memory_mib for s in specs] == [15360, 15360]
