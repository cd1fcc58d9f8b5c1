"""A run with one device (the CPU, or one GPU) works in its own process, its model loading
while the run starts, and a user sees it behave as a run with a spawned worker did: Ctrl-C,
a lost GPU, a model that does not load, a re-run of finished work.

The console script runs as a subprocess with the bundled tiny.en on the CPU. A
`sitecustomize` put first on PYTHONPATH watches from inside that process: it refuses to
start processes, or notes every model lookup in a file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import WHISPERFLEET

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
FORMATS = ("json", "txt", "srt", "vtt")
GPU = {"uuid": "GPU-0aaaaaaa-0000-4000-8000-000000000000", "name": "NVIDIA L4",
       "pci_bus_id": "00000000:18:00.0", "memory_total_mib": 23034, "cc": "8.9"}

# Any process started from the run fails it: a worker, the multiprocessing resource tracker
# (which one multiprocessing queue or lock is enough to start), or a subprocess.
NO_PROCESSES = """
import multiprocessing.process, multiprocessing.resource_tracker, subprocess

def refuse(*args, **kwargs):
    raise RuntimeError("whisperfleet started a process")

multiprocessing.process.BaseProcess.start = refuse
multiprocessing.resource_tracker.ResourceTracker.ensure_running = refuse
multiprocessing.resource_tracker.ensure_running = refuse
subprocess.Popen.__init__ = refuse
"""
# Every model lookup (the first step of any load, ahead or in a worker) adds a line.
MODEL_LOOKUPS = """
import os
from whisperfleet_runner.decode import models

real = models.resolve_model

def resolve_model(name, *args, **kwargs):
    with open(os.environ["MODEL_LOOKUPS"], "a") as fh:
        fh.write(name + "\\n")
    return real(name, *args, **kwargs)

models.resolve_model = resolve_model
"""


def hooked(tmp_path: Path, code: str, env: dict[str, str] | None = None) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(code)
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    return env


def transcribe(*args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WHISPERFLEET), "transcribe", *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def clips(folder: Path, audio_dir: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for n in range(count):
        shutil.copy(audio_dir / "nested" / "numbers.wav", folder / f"clip{n}.wav")
    return folder


def summary(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def whole_sets(out: Path) -> list[str]:
    """Stems with outputs, after checking that each has all of them and no temporary file
    is left."""
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    stems = sorted(p.stem for p in out.glob("*.json"))
    assert all((out / f"{s}.{fmt}").is_file() for s in stems for fmt in FORMATS), stems
    return stems


def test_one_device_spawns_no_process_and_several_do(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path, fake_nvml: Any
) -> None:
    out, report = tmp_path / "out", tmp_path / "summary.json"
    env = hooked(tmp_path, NO_PROCESSES, fake_nvml(None))
    result = transcribe(str(audio_dir / "hello.wav"), "-o", str(out), "--model",
                        str(tiny_model_path), "--summary-json", str(report), env=env)
    assert result.returncode == 0, result.stderr
    assert "hello" in (out / "hello.txt").read_text(encoding="utf-8").lower()
    data = summary(report)
    assert [(w["label"], w["files"], w["cuda_visible_devices"]) for w in data["workers"]] == [
        ("cpu", 1, "")]
    # The hook does stop a run that needs processes: two GPUs, one spawned worker each.
    two = [GPU, {**GPU, "uuid": GPU["uuid"].replace("0aaa", "1bbb"),
                 "pci_bus_id": "00000000:19:00.0"}]
    env = hooked(tmp_path, NO_PROCESSES, {**fake_nvml(two), "WHISPERFLEET_TEST_GPU_ON_CPU": "1"})
    several = transcribe(str(audio_dir / "hello.wav"), str(audio_dir / "nested"), "-o",
                         str(tmp_path / "out2"), "--model", str(tiny_model_path), env=env)
    assert several.returncode != 0 and "whisperfleet started a process" in several.stderr


@pytest.mark.parametrize("interrupts", [1, 2])
def test_ctrl_c_finishes_the_files_in_hand_and_twice_abandons_them(
    interrupts: int, tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    # Six files are all taken at once (read ahead), and done one at a time.
    source = clips(tmp_path / "in", audio_dir, 6)
    out, report = tmp_path / "out", tmp_path / "summary.json"
    proc = subprocess.Popen(
        [str(WHISPERFLEET), "transcribe", str(source), "-o", str(out), "--model",
         str(tiny_model_path), "--summary-json", str(report), "--quiet", "--no-pack",
         "--batch-size", "1", "--no-vad"], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not list(out.glob("*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.02)  # polling for the first output, not waiting a fixed time
    proc.send_signal(signal.SIGINT)
    if interrupts == 2:
        # Two signals before the handler runs would count once: wait until it has spoken.
        while not any("stopping" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130, "".join(lines)[-3000:]
    reader.join(timeout=10)
    data = summary(report)
    assert data["interrupted"]
    files = data["files"]
    assert len(whole_sets(out)) == files["succeeded"]
    assert files["succeeded"] + files["not_attempted"] == 6 and files["failed"] == 0
    if interrupts == 1:
        assert files["not_attempted"] == 0  # every file in hand was finished
    else:
        assert files["not_attempted"] >= 1  # the files in hand were abandoned


def test_a_rerun_of_finished_work_never_loads_the_model(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    source, out = clips(tmp_path / "in", audio_dir, 2), tmp_path / "out"
    first = transcribe(str(source), "-o", str(out), "--model", str(tiny_model_path))
    assert first.returncode == 0, first.stderr
    # A model that cannot load: the re-run must not even look for it.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    lookups, report = tmp_path / "lookups.txt", tmp_path / "summary.json"
    env = hooked(tmp_path, MODEL_LOOKUPS, {**os.environ, "MODEL_LOOKUPS": str(lookups)})
    again = transcribe(str(source), "-o", str(out), "--model", str(broken),
                       "--summary-json", str(report), env=env)
    assert again.returncode == 0, again.stderr
    assert summary(report)["files"]["skipped"] == 2
    assert not lookups.exists()
    # With work to do the same model is looked up (so the hook sees loads), fails to load,
    # and is reported once, as the run's error, with the usual exit code.
    redo = transcribe(str(source), "-o", str(out), "--model", str(broken), "--overwrite",
                      "--summary-json", str(report), env=env)
    assert redo.returncode == 2, redo.stderr
    assert lookups.read_text().splitlines() == [str(broken)]
    data = summary(report)
    assert [w["error_reason"] for w in data["workers"]] == ["ModelLoad"]
    assert "cannot load the model" in data["errors"][0]
    assert {f["reason"] for f in data["failures"]} == {
        "not attempted: no worker could run it (see the worker errors)"}
    assert "cannot load the model" in redo.stdout + redo.stderr


def test_a_lost_gpu_fails_the_files_in_its_hands_and_a_rerun_does_them(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path, fake_nvml: Any
) -> None:
    # Files enough that some are left when the loss is seen, on a loaded machine too.
    source, out, report = clips(tmp_path / "in", audio_dir, 12), tmp_path / "out", tmp_path / "s"
    flag = tmp_path / "gpu-lost"
    env = {**fake_nvml([{**GPU, "lost_when": str(flag)}]), "WHISPERFLEET_TEST_GPU_ON_CPU": "1"}
    args = [str(source), "-o", str(out), "--model", str(tiny_model_path), "--quiet",
            "--device", "cuda", "--no-pack", "--batch-size", "1", "--summary-json", str(report)]
    proc = subprocess.Popen([str(WHISPERFLEET), "transcribe", *args], env=env,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any("succeeded" in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.02)  # polling the log for the condition, not waiting a fixed time
    flag.touch()  # the GPU falls off the bus after it has done a file
    assert proc.wait(timeout=300) == 1, "".join(lines)[-3000:]
    reader.join(timeout=10)
    first = summary(report)
    assert [w["error_reason"] for w in first["workers"]] == ["GpuLost"]
    assert first["files"]["failed"] >= 1 and first["files"]["succeeded"] >= 1
    assert first["files"]["succeeded"] + first["files"]["failed"] == 12
    assert len(whole_sets(out)) == first["files"]["succeeded"]
    flag.unlink()
    again = transcribe(*args, env=env)
    assert again.returncode == 0, again.stderr
    files = summary(report)["files"]
    assert (files["skipped"], files["succeeded"]) == (first["files"]["succeeded"],
                                                      first["files"]["failed"])
