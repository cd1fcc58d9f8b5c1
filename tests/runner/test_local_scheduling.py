"""Multi-GPU scheduling of `whisperfleet transcribe`, with the fake NVML (the one mock).

The console script runs as a subprocess; its spawned workers inherit PYTHONPATH, so they
see the same fake GPUs. Runs over outputs that already exist transcribe nothing (no model
load), which makes GPU choice and worker binding cheap to check; one run really transcribes
on two fake GPUs, with the documented test switch that runs their model on the CPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import WHISPERFLEET

G0 = "GPU-00000000-aaaa-4000-8000-000000000000"
G1 = "GPU-11111111-bbbb-4000-8000-000000000001"
G2 = "GPU-22222222-cccc-4000-8000-000000000002"
G3 = "GPU-33333333-dddd-4000-8000-000000000003"
# Free memory: G0 1960 MiB (busy), G1 15000, G2 16576, G3 3034 (busy at 4GiB).
GPUS: list[dict[str, Any]] = [
    {"uuid": G0, "name": "NVIDIA A100-SXM4-40GB", "pci_bus_id": "00000000:07:00.0",
     "memory_total_mib": 40960, "memory_used_mib": 39000, "cc": "8.0"},
    {"uuid": G1, "name": "Tesla T4", "pci_bus_id": "00000000:3B:00.0",
     "memory_total_mib": 15360, "memory_used_mib": 360, "cc": "7.5"},
    {"uuid": G2, "name": "NVIDIA A10", "pci_bus_id": "00000000:5E:00.0",
     "memory_total_mib": 24576, "memory_used_mib": 8000, "cc": "8.6"},
    {"uuid": G3, "name": "NVIDIA L4", "pci_bus_id": "00000000:86:00.0",
     "memory_total_mib": 23034, "memory_used_mib": 20000, "cc": "8.9"},
]
FORMATS = ("json", "txt", "srt", "vtt")


def transcribe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WHISPERFLEET), "transcribe", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def inputs(tmp_path: Path, audio_dir: Path) -> Path:
    """Six real clips in three folders (two of them named alike)."""
    root = tmp_path / "in"
    for folder in ("a", "b", "c"):
        (root / folder).mkdir(parents=True)
        shutil.copy(audio_dir / "hello.wav", root / folder / "hello.wav")
        shutil.copy(audio_dir / "nested" / "numbers.wav", root / folder / "numbers.wav")
    return root


@pytest.fixture
def done_output(tmp_path: Path, inputs: Path) -> Path:
    """An output folder where every input's outputs already exist: a run skips them all."""
    out = tmp_path / "out"
    for wav in inputs.rglob("*.wav"):
        stem = out / wav.relative_to(inputs).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        for fmt in FORMATS:
            stem.with_suffix(f".{fmt}").write_text("done")
    return out


def _run_skipping(env: dict[str, str], inputs: Path, out: Path, tmp_path: Path,
                  *args: str) -> dict[str, Any]:
    summary = tmp_path / "summary.json"
    result = transcribe(env, str(inputs), "-o", str(out), "--model", "tiny.en",
                        "--summary-json", str(summary), *args)
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert data["files"]["skipped"] == 6 and data["files"]["succeeded"] == 0
    assert sum(w["files"] for w in data["workers"]) == 6  # each file taken exactly once
    return {**data, "stderr": result.stderr}


def _bindings(data: dict[str, Any]) -> list[str]:
    """What each worker process saw in CUDA_VISIBLE_DEVICES (reported by the worker)."""
    return [w["cuda_visible_devices"] for w in data["workers"]]


@pytest.mark.slow
def test_min_free_memory_skips_busy_gpus_and_names_them(
    fake_nvml, inputs: Path, done_output: Path, tmp_path: Path
) -> None:
    data = _run_skipping(fake_nvml(GPUS), inputs, done_output, tmp_path,
                         "--min-free-memory", "4GiB")
    assert data["device"] == "cuda"
    assert data["gpus_chosen"] == [G1, G2]
    assert _bindings(data) == [G1, G2]  # one worker per GPU, each bound to its own
    assert [w["label"] for w in data["workers"]] == ["GPU 1", "GPU 2"]
    refused = {r["target"].split()[2]: r["reason"] for r in data["gpus_refused"]}
    assert set(refused) == {G0, G3} and all("busy" in r for r in refused.values())
    assert G0 in data["stderr"] and G3 in data["stderr"]  # the user is told which were skipped


@pytest.mark.slow
def test_gpus_by_index_are_nvidia_smi_indices_in_pci_order(
    fake_nvml, inputs: Path, done_output: Path, tmp_path: Path
) -> None:
    data = _run_skipping(fake_nvml(GPUS), inputs, done_output, tmp_path, "--gpus", "3,0")
    assert data["gpus_chosen"] == [G0, G3]
    assert _bindings(data) == [G0, G3]


@pytest.mark.slow
def test_gpus_by_uuid_prefix(fake_nvml, inputs: Path, done_output: Path, tmp_path: Path) -> None:
    data = _run_skipping(fake_nvml(GPUS), inputs, done_output, tmp_path, "--gpus", G2[:12])
    assert data["gpus_chosen"] == [G2]
    assert _bindings(data) == [G2]
    assert data["workers"][0]["gpu"]["name"] == "NVIDIA A10"


@pytest.mark.slow
def test_auto_without_gpu_runs_on_cpu_with_one_warning(
    fake_nvml, inputs: Path, done_output: Path, tmp_path: Path
) -> None:
    data = _run_skipping(fake_nvml(None), inputs, done_output, tmp_path)
    assert data["device"] == "cpu" and data["gpus_chosen"] == []
    assert [(w["label"], w["model_device"]) for w in data["workers"]] == [("cpu", "cpu")]
    assert _bindings(data) == [""]  # the CPU worker sees no GPU at all
    assert data["stderr"].count("running on CPU") == 1


def test_device_cuda_with_nothing_usable_exits_2_and_explains(
    fake_nvml, inputs: Path, tmp_path: Path
) -> None:
    result = transcribe(fake_nvml(GPUS), str(inputs), "-o", str(tmp_path / "out"),
                        "--device", "cuda", "--gpus", "0,3,7", "--min-free-memory", "4GiB")
    assert result.returncode == 2
    for uuid in (G0, G3):
        line = next(ln for ln in result.stderr.splitlines() if uuid in ln)
        assert "busy" in line
    assert "7" in result.stderr and "not found" in result.stderr
    assert "not selected" in next(ln for ln in result.stderr.splitlines() if G1 in ln)
    assert not (tmp_path / "out").exists()


def test_bad_gpus_value_is_a_usage_error(fake_nvml, inputs: Path, tmp_path: Path) -> None:
    result = transcribe(fake_nvml(GPUS), str(inputs), "-o", str(tmp_path / "out"),
                        "--gpus", "first")
    assert result.returncode == 2
    assert "--gpus" in result.stderr and "first" in result.stderr


@pytest.mark.slow
def test_two_gpus_share_the_work_each_file_once(
    fake_nvml, inputs: Path, tmp_path: Path, tiny_model_path: Path
) -> None:
    env = {**fake_nvml(GPUS[1:3]), "WHISPERFLEET_TEST_GPU_ON_CPU": "1"}
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    result = transcribe(env, str(inputs), "-o", str(out), "--model", str(tiny_model_path),
                        "--summary-json", str(summary), "--quiet")
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert data["files"] == {"total": 6, "succeeded": 6, "partial": 0, "failed": 0,
                             "skipped": 0, "not_attempted": 0}
    assert _bindings(data) == [G1, G2]
    assert all(w["model_device"] == "cpu" for w in data["workers"])  # the test switch
    files = [w["files"] for w in data["workers"]]
    assert sum(files) == 6 and min(files) >= 1  # both GPUs worked, no file twice
    # Throughput counts what each GPU was held for: two GPUs at once count twice.
    held = sum(w["wall_seconds"] for w in data["workers"])
    assert held > 0 and data["device_seconds"] == pytest.approx(held, abs=0.01)
    assert data["throughput"] == pytest.approx(data["audio_seconds"] / held, rel=1e-2)
    assert f"{data['throughput']:.1f} audio h per GPU h" in result.stdout + result.stderr
    for wav in inputs.rglob("*.wav"):
        stem = out / wav.relative_to(inputs).with_suffix("")
        text = stem.with_suffix(".txt").read_text().lower()
        assert ("hello" in text) if wav.name == "hello.wav" else text.strip()
        assert all(stem.with_suffix(f".{fmt}").is_file() for fmt in FORMATS)


@pytest.mark.slow
def test_without_the_switch_fake_gpus_really_ask_cuda(
    fake_nvml, inputs: Path, tmp_path: Path, tiny_model_path: Path
) -> None:
    # No CUDA here: the workers must fail to load the model on their GPU, proving the
    # switch (not some silent fallback) is what moves the model to the CPU above.
    result = transcribe(fake_nvml(GPUS[1:2]), str(inputs / "a"), "-o", str(tmp_path / "out"),
                        "--model", str(tiny_model_path))
    assert result.returncode == 2, result.stderr
    assert "cannot load the model" in result.stdout + result.stderr
    assert not list((tmp_path / "out").rglob("*.json")) if (tmp_path / "out").exists() else True
