"""`whisperfleet gpus` through the installed console script, with the fake NVML on PYTHONPATH."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.support.paths import WHISPERFLEET

BUSY = "GPU-0a0b0c0d-1111-4000-8000-000000000000"
FREE = "GPU-1a1b1c1d-1111-4000-8000-000000000001"
DEVICES: list[dict[str, Any]] = [
    {"uuid": BUSY, "name": "NVIDIA A100-SXM4-40GB", "pci_bus_id": "00000000:07:00.0",
     "memory_total_mib": 40960, "memory_used_mib": 39000, "cc": "8.0", "utilization": 91,
     "processes": 3},
    {"uuid": FREE, "name": "Tesla T4", "pci_bus_id": "00000000:3B:00.0",
     "memory_total_mib": 15360, "memory_used_mib": 360, "cc": "7.5", "utilization": 4},
    {"uuid": "GPU-2a2b", "name": "NVIDIA H100 80GB HBM3", "cc": "9.0",
     "mig": [{"uuid": "MIG-5e5e", "profile": "1g.10gb", "memory_total_mib": 9984}]},
]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WHISPERFLEET), "gpus", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_table_shows_every_gpu_and_which_pass(fake_nvml) -> None:
    result = run(fake_nvml(DEVICES), "--min-free-memory", "4GiB")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    busy = next(line for line in lines if BUSY in line)
    free = next(line for line in lines if FREE in line)
    mig = next(line for line in lines if "MIG-5e5e" in line)
    for part in ("NVIDIA A100-SXM4-40GB", "39000/40960 MiB", "91%", "8.0", " 3 ", "busy"):
        assert part in busy
    for part in ("Tesla T4", "360/15360 MiB", "7.5", "yes"):
        assert part in free
    assert "2:0" in mig and "1g.10gb" in mig and "n/a" in mig  # no per-MIG utilisation
    assert "4096 MiB" in result.stdout


def test_json_output(fake_nvml) -> None:
    result = run(fake_nvml(DEVICES), "--json", "--min-free-memory", "2000")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["uuid"] for r in rows] == [BUSY, FREE, "MIG-5e5e"]
    assert [r["passes_min_free"] for r in rows] == [False, True, True]
    assert rows[0]["memory_free_mib"] == 1960 and rows[0]["process_count"] == 3
    assert rows[2]["mig_profile"] == "1g.10gb" and rows[2]["label"] == "2:0"


@pytest.mark.parametrize("as_json", [False, True])
def test_no_driver_is_one_clear_line_and_success(fake_nvml, as_json: bool) -> None:
    result = run(fake_nvml(None), *(["--json"] if as_json else []))
    assert result.returncode == 0
    text = result.stderr if as_json else result.stdout
    assert text.strip().splitlines() == [
        "No NVIDIA GPU: NVML could not start: Driver Not Loaded "
        "(no NVIDIA driver on this machine?)"
    ]
    if as_json:
        assert json.loads(result.stdout) == []


def test_bad_min_free_memory_is_a_usage_error(fake_nvml) -> None:
    result = run(fake_nvml(DEVICES), "--min-free-memory", "lots")
    assert result.returncode == 2
    assert "cannot read memory size 'lots'" in result.stderr
