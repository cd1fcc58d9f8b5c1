"""CPU budget: affinity mask capped by the cgroup CFS quota (v2 and v1 layouts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from whisperfleet_runner.gpu.cpus import available_cpus, cgroup_cpu_quota


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_v2_quota_caps_and_rounds_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(affinity(), 2)


def test_v2_unlimited_uses_the_affinity_mask(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert available_cpus(tmp_path) == affinity()


def test_tiny_quota_still_gives_one_thread(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("10000 100000\n")
    assert available_cpus(tmp_path) == 1


@pytest.mark.parametrize("folder", ["cpu,cpuacct", "cpu"])
def test_v1_quota(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0
    assert available_cpus(tmp_path) == 1


def test_v1_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_affinity_is_respected(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus(tmp_path) == 1  # no cgroup files: the mask alone decides
    finally:
        os.sched_setaffinity(0, before)


def test_this_machine_is_not_overcounted() -> None:
    assert 1 <= available_cpus() <= affinity()


def test_the_local_cpu_worker_uses_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from whisperfleet_runner.fleet import scheduler

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    (spec,) = scheduler.worker_specs([], "auto", {}, files=10)
    assert spec.placement.cpu_threads == 1 and spec.placement.compute_type == "int8"
