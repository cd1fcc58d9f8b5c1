"""The GPU acceptance script cannot rot: its CPU dry run goes through every check's code."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.slow
MODULE = "whisperfleet_runner.local.acceptance"
GPUS = [{"uuid": f"GPU-{c}0000000-0000-4000-8000-000000000000", "name": "NVIDIA H100 80GB HBM3",
         "pci_bus_id": f"00000000:1{i}:00.0", "cc": "9.0"} for i, c in enumerate("ab")]


def acceptance(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", MODULE, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_dry_run_passes_every_check_and_prints_the_ratios(fake_nvml: Any) -> None:
    result = acceptance(fake_nvml(GPUS), "--dry-run-cpu")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    # Both orders of both GPUs, by UUID and by index: four subprocesses agreed.
    assert sum(line.startswith("PASS order CUDA_VISIBLE_DEVICES=") for line in lines) == 4
    for check in ("compute type", "out-of-memory halves and completes", "throughput"):
        assert any(line.startswith(f"PASS {check}") for line in lines), result.stdout
    for ratio in ("packed_vs_per_file", "whisperfleet_per_file_vs_bare_faster_whisper"):
        value = next(line for line in lines if ratio in line).rsplit("= ", 1)[1]
        assert float(value) > 0
    assert not any(line.startswith("FAIL") for line in lines)


def test_without_a_gpu_the_real_run_fails_at_once_and_says_how_to_dry_run(
    fake_nvml: Any,
) -> None:
    result = acceptance(fake_nvml(None))
    assert result.returncode == 1
    assert "FAIL GPUs: NVML could not start" in result.stdout and "--dry-run-cpu" in result.stdout
