"""A shard pod given several GPUs works on all of them: one worker process per GPU over the
shard's one queue, each GPU named in the records and the report, failures kept to the GPU
they happened on. GPUs come from the fake NVML (the one mocked boundary); the models run on
the CPU under the narrow test switch, so each worker really transcribes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.contract import OutputOptions, ShardReport, WorkOrder
from whisperfleet_runner.gpu import devices
from whisperfleet_runner.pipeline.ledger import merge, read_ledger
from whisperfleet_runner.pod.planner import plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
H100 = "NVIDIA H100 80GB HBM3"
SOURCES = ["hello.wav", "nested/numbers.wav", "with space é.wav", "nested/deeper/hello.wav"]
# A "CUDA" allocation failure raised inside one worker, as CTranslate2 words it: no CUDA here,
# so this stands in for the allocator at the model call, in the chosen GPU's process only.
OOM_HOOK = """
import os
if os.environ.get("OOM_ON_GPU"):
    from whisperfleet_runner.decode import encoder
    real = encoder.encode
    def encode(whisper, features):
        # A worker binds itself to its GPU after start-up: decide at call time. The
        # encoder's activations grow with the windows encoded at once (on a GPU,
        # encoder.encode hands it the whole batch).
        bound = os.environ.get("CUDA_VISIBLE_DEVICES") == os.environ["OOM_ON_GPU"]
        if bound and features.ndim == 3 and features.shape[0] > 2:
            raise RuntimeError("CUDA failed with error out of memory")
        return real(whisper, features)
    encoder.encode = encode
"""

def gpus(count: int, lost_when: Path | None = None) -> list[dict[str, Any]]:
    return [{"uuid": f"GPU-{i}aaaaaaa-0000-4000-8000-00000000000{i}", "name": H100,
             "pci_bus_id": f"00000000:{0x18 + i:02X}:00.0", "memory_total_mib": 81559,
             "cc": "9.0", **({"lost_when": str(lost_when)} if lost_when and i == 1 else {})}
            for i in range(count)]


def make_inputs(folder: Path, audio_dir: Path, count: int) -> None:
    for n in range(count):
        source = audio_dir / SOURCES[n % len(SOURCES)]
        shutil.copy(source, folder / f"clip{n:02d}.wav")


def planned(tmp_path: Path, audio_dir: Path, model: Path, files: int) -> WorkOrder:
    (tmp_path / "in").mkdir()
    make_inputs(tmp_path / "in", audio_dir, files)
    order = WorkOrder(job_uid="uid-multi", input_uri=str(tmp_path / "in"),
                      output=OutputOptions(uri=str(tmp_path / "out"), formats=("json",)),
                      shards=1)
    order.model.name = str(model)
    assert plan(order).files == files
    return order


def pod_env(fake_nvml: Any, devices_: list[dict[str, Any]], order: WorkOrder,
            **extra: str) -> dict[str, str]:
    env = fake_nvml(devices_)
    env.update({contract.ENV_WORK_ORDER: order.to_json(), contract.ENV_COMPLETION_INDEX: "0",
                "NVIDIA_VISIBLE_DEVICES": ",".join(d["uuid"] for d in devices_),
                devices.ENV_GPU_ON_CPU: "1", "POD_NAME": "multi-0", **extra})
    return env


def run_shard(env: dict[str, str], log: Path) -> tuple[subprocess.CompletedProcess[str],
                                                        ShardReport]:
    result = subprocess.run([str(WHISPERFLEET), "run-shard", "--termination-log", str(log)],
                            env=env, capture_output=True, text=True, timeout=500)
    return result, ShardReport.from_json(log.read_text())


@pytest.mark.parametrize("count", [2, 4])
def test_every_allocated_gpu_gets_a_fair_share(
    count: int, fake_nvml: Any, tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    files = 12
    order = planned(tmp_path, audio_dir, tiny_model_path, files)
    result, report = run_shard(pod_env(fake_nvml, gpus(count), order), tmp_path / "log")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (report.total, report.succeeded, report.failed) == (files, files, 0)
    assert report.device == f"cuda:{','.join(map(str, range(count)))}"
    assert [g.uuid for g in report.gpus] == [d["uuid"] for d in gpus(count)]
    assert [g.device_index for g in report.gpus] == list(range(count))
    # None below a quarter of its even share, and no file twice.
    assert sum(g.files for g in report.gpus) == files
    assert all(g.files >= files / count / 4 for g in report.gpus), report.gpus
    # Each file's ledger record names the GPU that did it, by ordinal and by UUID.
    records = merge(read_ledger(order.ledger_uri)).values()
    by_gpu = Counter((r.device, r.gpu) for r in records)
    assert {k: v for k, v in by_gpu.items()} == {
        (f"cuda:{g.device_index}", g.uuid): g.files for g in report.gpus}


def test_an_out_of_memory_on_one_gpu_halves_only_that_workers_batch(
    fake_nvml: Any, tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    # 16 files: each of the 2 workers holds up to 4, so its batches reach 4 chunks.
    order = planned(tmp_path, audio_dir, tiny_model_path, 16)
    order.transcription.pack_short_clips = False  # chunk batches, where OOM bites
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(OOM_HOOK)
    two = gpus(2)
    env = pod_env(fake_nvml, two, order, OOM_ON_GPU=two[1]["uuid"])
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    result, report = run_shard(env, tmp_path / "log")
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.succeeded == 16 and all(g.files for g in report.gpus)
    halvings = [line for line in result.stderr.splitlines() if "out of memory" in line]
    assert halvings and all("retrying with batch size" in line for line in halvings)
    # The worker on GPU 1 halved (8 -> 4 -> 2) once and kept the lower size; GPU 0 never did.
    assert [h.split("retrying with batch size ")[1].strip() for h in halvings] == ["4", "2"]


def test_a_gpu_lost_mid_run_fails_only_its_files_and_a_retry_does_them(
    fake_nvml: Any, tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    # One file a batch, and enough of them that GPU 1 has batches left when it is lost
    # (with 12 files in batches of 3 it once started its last before the loss was seen).
    files = 24
    order = planned(tmp_path, audio_dir, tiny_model_path, files)
    order.transcription.pack_short_clips = False  # chunk batches in the model's hands
    order.transcription.batch_size = 1
    flag = tmp_path / "gpu-1-lost"
    env = pod_env(fake_nvml, gpus(2, lost_when=flag), order)
    log = tmp_path / "log"
    proc = subprocess.Popen([str(WHISPERFLEET), "run-shard", "--termination-log", str(log)],
                            env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any("on cuda:1" in line and "succeeded" in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.05)  # polling the log for the condition, not waiting a fixed time
    flag.touch()  # GPU 1 falls off the bus after it has done a file
    assert proc.wait(timeout=300) == contract.EXIT_SOME_FAILED, "".join(lines)[-3000:]
    reader.join(timeout=10)
    first = ShardReport.from_json(log.read_text())
    lost = [f for f in first.failures if f.code == contract.Reason.GPU_LOST]
    assert lost and len(lost) == first.failed, first.failures  # nothing else failed
    records = merge(read_ledger(order.ledger_uri))
    assert {records[f.uri].gpu for f in lost} == {gpus(2)[1]["uuid"]}
    assert first.succeeded + first.failed == files  # GPU 0 did the rest: no file lost
    # The Job controller retries the index: the next pod does exactly the failed files.
    flag.unlink()
    again, second = run_shard(pod_env(fake_nvml, gpus(2), order, POD_NAME="multi-0-again"),
                              tmp_path / "log2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (second.succeeded, second.skipped) == (len(lost), files - len(lost))
    final = merge(read_ledger(order.ledger_uri))
    assert Counter(r.status for r in final.values()) == {"succeeded": files}
    assert json.loads(log.read_text())["gpus"][1]["failed"] == len(lost)
