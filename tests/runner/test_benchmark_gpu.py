"""benchmarks/bench.py's GPU mode, as far as code paths go: there is no GPU here.

The fake NVML (tests/fakes) stands in for a GPU; under WHISPERFLEET_TEST_GPU_ON_CPU every
side computes on the CPU, so the ratios printed here measure nothing. What is checked: the
GPU is found (or not) as on a real machine, every side is pinned to that one GPU with the
settings its comparison needs, the CPU run's commands are exactly today's, and a whole
benchmark run in GPU mode prints every ratio named with the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench, fixed_cost, gpu_scaling, long_recording
from tests.support.paths import REPO
from whisperfleet_runner import contract
from whisperfleet_runner.decode import engine
from whisperfleet_runner.fleet import scheduler
from whisperfleet_runner.gpu import cpus, devices, nvml

FakeNvml = Callable[[list[dict[str, Any]] | None], dict[str, str]]
H100 = {"uuid": "GPU-0a1b2c3d-0000-4000-8000-000000000000", "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "00000000:18:00.0", "memory_total_mib": 81559, "memory_used_mib": 559,
        "cc": "9.0"}
L4 = {"uuid": "GPU-11111111-0000-4000-8000-000000000000", "name": "NVIDIA L4",
      "pci_bus_id": "00000000:3B:00.0", "memory_total_mib": 23034, "memory_used_mib": 22000,
      "cc": "8.9"}
FOLDER, OUT, RESULT, MODEL = Path("in"), Path("out"), Path("r.json"), "tiny-model"


def gpu(info: dict[str, Any] = H100, memory_batch: int = 64, on_cpu: bool = False) -> Any:
    from whisperfleet_runner.gpu.nvml import GpuInfo

    free = info["memory_total_mib"] - info["memory_used_mib"]
    return bench.Gpu(GpuInfo(0, info["uuid"], info["name"], info["pci_bus_id"],
                             info["memory_total_mib"], info["memory_used_mib"], free,
                             info["cc"]), memory_batch, on_cpu)


def test_the_default_batch_is_the_runners() -> None:
    assert bench.DEFAULT_BATCH == contract.DEFAULT_BATCH_SIZE


def test_without_a_gpu_the_commands_are_todays_cpu_run() -> None:
    assert [s.name for s in bench.cpu_sides("long")] == ["whisperfleet", "bare"]
    # Packing touches clips of at most 14 s: the short and mixed corpora also run --no-pack.
    for kind in ("short", "mixed"):
        assert [s.name for s in bench.cpu_sides(kind)] == ["whisperfleet", "no_pack", "bare"]
    wf, no_pack, bare = bench.cpu_sides("short")
    assert bench.whisperfleet_command(FOLDER, MODEL, OUT, wf, None) == [
        str(bench.BIN / "whisperfleet"), "transcribe", "in", "-o", "out", "--model", MODEL,
        "--device", "cpu", "--compute-type", "int8", "--overwrite", "--quiet",
        "--include", "*.wav"]
    assert bench.whisperfleet_command(FOLDER, MODEL, OUT, no_pack, None) == [
        str(bench.BIN / "whisperfleet"), "transcribe", "in", "-o", "out", "--model", MODEL,
        "--device", "cpu", "--compute-type", "int8", "--no-pack", "--overwrite", "--quiet",
        "--include", "*.wav"]
    assert bench.bare_command("loop", FOLDER, MODEL, RESULT, bare, None) == [
        sys.executable, str(bench.HERE / "bare.py"), "loop", "in", "r.json", "--model", MODEL,
        "--threads", str(cpus.available_cpus())]
    assert bench.bare_env(None) is None
    assert [r.name for r in bench.ratios("short", bench.cpu_sides("short"))] == [
        "runner_vs_bare_loop", "packed_vs_unpacked"]
    assert [r.name for r in bench.ratios("long", bench.cpu_sides("long"))] == [
        "runner_vs_bare_batched"]


def test_every_cpu_benchmarks_bare_side_gets_whisperfleets_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A container whose cgroup quota allows 1 CPU of the 2 in its affinity mask: whisperfleet
    # runs its model on 1 thread (gpu.cpus), so bare faster-whisper must too; with the raw
    # affinity it would oversubscribe the quota and every ratio would favour whisperfleet.
    monkeypatch.setattr(cpus, "available_cpus", lambda *_: 1)
    bare = bench.cpu_sides("short")[-1]
    assert bench.bare_command("loop", FOLDER, MODEL, RESULT, bare, None)[-2:] == ["--threads", "1"]
    on_cpu = bench.bare_command("loop", FOLDER, MODEL, RESULT, bare, gpu(on_cpu=True))
    assert on_cpu[-2:] == ["--threads", "1"]
    assert fixed_cost.bare_argv(MODEL, FOLDER / "a.wav")[-1] == "1"
    assert long_recording.bare_command(FOLDER, RESULT, MODEL)[-2:] == ["--threads", "1"]


def test_gpu_scaling_on_fake_gpus_compares_only_counts_of_equal_compute(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert gpu_scaling.equal_compute([1, 2, 4], 2) == ([1, 2], [4])
    assert gpu_scaling.equal_compute([1, 2, 3, 4], 6) == ([1, 2, 3], [4])
    # The kept counts are those the runner's own split (scheduler.worker_specs) gives every
    # CPU thread, no more (4 workers on 2 CPUs run 4 threads) and no fewer (4 on 6 run 4).
    env = {**fake_nvml(gpu_scaling.fake_gpus(4)), devices.ENV_GPU_ON_CPU: "1"}
    gpus = [(g.label, g) for g in nvml.list_gpus()]
    for threads in (1, 2, 6, 8):
        monkeypatch.setattr(cpus, "available_cpus", lambda *_, n=threads: n)
        kept, _ = gpu_scaling.equal_compute([1, 2, 3, 4], threads)
        for n in (1, 2, 3, 4):
            specs = scheduler.worker_specs(gpus[:n], "auto", env, files=n)
            assert len(specs) == n and all(s.placement.device == "cpu" for s in specs)
            assert (sum(s.placement.cpu_threads for s in specs) == threads) == (n in kept), \
                (threads, n)


@pytest.mark.parametrize("kind", ["short", "long"])
def test_gpu_mode_pins_every_side_to_one_gpu_with_its_comparisons_settings(kind: str) -> None:
    on = gpu(memory_batch=96)
    sides = {s.name: s for s in bench.gpu_sides(kind, on.memory_batch)}
    packing = kind == "short"  # packing only touches short clips
    assert set(sides) == {"whisperfleet", "int8_float16", "memory_batch", "bare"} | (
        {"no_pack"} if packing else set())
    for side in sides.values():
        if side.bare:
            cmd = bench.bare_command("loop", FOLDER, MODEL, RESULT, side, on)
            env = bench.bare_env(on)
            assert env is not None and env["CUDA_VISIBLE_DEVICES"] == H100["uuid"]
            assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        else:
            cmd = bench.whisperfleet_command(FOLDER, MODEL, OUT, side, on)
            assert cmd[cmd.index("--gpus") + 1] == H100["uuid"]
            assert ("--no-pack" in cmd) == (side.name == "no_pack")
        assert cmd[cmd.index("--device") + 1] == "cuda"
        assert cmd[cmd.index("--compute-type") + 1] == (
            "int8_float16" if side.name == "int8_float16" else "float16")
        assert int(cmd[cmd.index("--batch-size") + 1]) == (
            96 if side.name == "memory_batch" else contract.DEFAULT_BATCH_SIZE)
    ratios = {r.name: (r.faster, r.slower) for r in bench.ratios(kind, list(sides.values()))}
    assert ratios == {
        f"runner_vs_bare_{'loop' if packing else 'batched'}": ("whisperfleet", "bare"),
        "float16_vs_int8_float16": ("whisperfleet", "int8_float16"),
        "memory_batch_vs_default_batch": ("memory_batch", "whisperfleet"),
    } | ({"packed_vs_unpacked": ("whisperfleet", "no_pack")} if packing else {})


def test_under_the_test_switch_bare_faster_whisper_computes_on_the_cpu_too() -> None:
    on = gpu(on_cpu=True)
    bare = bench.gpu_sides("long", 8)[-1]
    cmd = bench.bare_command("batched", FOLDER, MODEL, RESULT, bare, on)
    assert cmd[-6:] == ["--device", "cpu", "--compute-type", "int8",
                        "--threads", str(cpus.available_cpus())]
    assert bench.bare_env(on) is None


def test_the_gpu_is_found_through_nvml_and_its_absence_means_the_cpu_run(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml([H100, L4])
    assert bench.find_gpu("auto", "").uuid == H100["uuid"]
    assert bench.find_gpu("auto", "1").uuid == L4["uuid"]
    assert bench.find_gpu("cuda", L4["uuid"]).name == "NVIDIA L4"
    assert bench.find_gpu("cpu", "") is None
    with pytest.raises(SystemExit, match="no GPU 7"):
        bench.find_gpu("auto", "7")
    fake_nvml([])
    assert bench.find_gpu("auto", "") is None
    with pytest.raises(SystemExit, match="NVML sees: none"):
        bench.find_gpu("cuda", "")
    fake_nvml(None)  # no driver: NvmlUnavailable
    assert bench.find_gpu("auto", "") is None
    with pytest.raises(SystemExit, match="--device cuda: NVML could not start"):
        bench.find_gpu("cuda", "")


def test_the_memory_batch_follows_the_gpus_free_memory(
    fake_nvml: FakeNvml, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_nvml([H100, L4])
    monkeypatch.delenv(devices.ENV_GPU_ON_CPU, raising=False)
    big = bench.prepare_gpu(bench.find_gpu("auto", "0"), str(tiny_model_path))
    small = bench.prepare_gpu(bench.find_gpu("auto", "1"), str(tiny_model_path))
    assert big.memory_batch > contract.DEFAULT_BATCH_SIZE > small.memory_batch >= 1
    weights = (tiny_model_path / "model.bin").stat().st_size // 2**20
    assert small.memory_batch == engine.batch_size_for_memory(1 << 16, 1034, weights)
    assert not big.on_cpu
    monkeypatch.setenv(devices.ENV_GPU_ON_CPU, "1")
    assert bench.prepare_gpu(bench.find_gpu("auto", "0"), str(tiny_model_path)).on_cpu


@pytest.mark.slow
def test_a_gpu_mode_run_prints_every_ratio_named_with_the_gpu(
    fake_nvml: FakeNvml, tmp_path: Path,
) -> None:
    env = {**fake_nvml([H100]), devices.ENV_GPU_ON_CPU: "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "short", "--count", "1",
         "--rounds", "1", "--corpus", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert f"GPU: GPU 0 {H100['uuid']} (NVIDIA H100 80GB HBM3" in result.stdout
    assert "every side computes on the CPU" in result.stdout
    prefix = "on NVIDIA H100 80GB HBM3: "
    values = dict(line[len(prefix):].split(" = ") for line in result.stdout.splitlines()
                  if line.startswith(prefix))
    # Under the switch every side does the same work on the CPU (one clip: nothing to pack
    # or batch), so each ratio is about 1; a third or three times is a side that did other
    # work, or none.
    for ratio in ("runner_vs_bare_loop", "float16_vs_int8_float16",
                  "memory_batch_vs_default_batch", "packed_vs_unpacked"):
        assert 1 / 3 <= float(values[ratio]) <= 3, (ratio, result.stdout)
    wers = {side: float(values[f"wer_{side}"])
            for side in ("whisperfleet", "bare", "int8_float16", "memory_batch", "no_pack")}
    assert max(wers.values()) <= 0.5 and len(set(wers.values())) == 1, wers  # the same text
    assert not [line for line in result.stdout.splitlines()
                if " = " in line and not line.startswith(prefix)]
    assert os.path.isfile(tmp_path / "short-1" / "references.json")
