"""The Prometheus metrics a runner serves: what a scrape of a working shard pod or local run
shows, and the GPU figures it reads from NVML (the fake one here) at scrape time."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import runner_metrics
from tests.support.paths import AUDIO
from whisperfleet_runner.contract import OutputOptions, WorkOrder
from whisperfleet_runner.fleet import metrics
from whisperfleet_runner.gpu import devices
from whisperfleet_runner.pipeline.ledger import LedgerRecord
from whisperfleet_runner.pod.planner import plan
from whisperfleet_runner.pod.shard import run_shard

GPU = {"uuid": "GPU-7e57ab1e-0000-4000-8000-000000000000", "name": "NVIDIA L4",
       "memory_total_mib": 23034, "memory_used_mib": 3072, "utilization": 87, "cc": "8.9"}


def scrape(port: int, host: str = "127.0.0.1") -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                       float]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_records_and_tuning_become_counters_and_gauges(fake_nvml: Any) -> None:
    fake_nvml([GPU])
    run = metrics.RunMetrics(gpus=[GPU["uuid"]])
    port = run.serve(0, "127.0.0.1").server_port
    run.plan(3)
    for status, seconds in (("succeeded", 12.5), ("succeeded", 7.5), ("failed", 0.0)):
        run.record(LedgerRecord(uri="s3://b/x.wav", key="x.wav", status=status,
                                audio_seconds=seconds))
    run.tuned("cuda:0", 8, 0)
    run.tuned("cuda:0", 4, 1)
    seen = scrape(port)
    assert seen[("whisperfleet_files_total", (("status", "succeeded"),))] == 2
    assert seen[("whisperfleet_files_total", (("status", "failed"),))] == 1
    assert seen[("whisperfleet_files_total", (("status", "skipped"),))] == 0
    assert seen[("whisperfleet_files_planned", ())] == 3
    assert seen[("whisperfleet_audio_seconds_total", ())] == 20.0
    assert seen[("whisperfleet_real_time_factor", ())] > 0
    assert seen[("whisperfleet_batch_size", (("device", "cuda:0"),))] == 4
    assert seen[("whisperfleet_oom_halvings_total", (("device", "cuda:0"),))] == 1
    gpu = (("gpu_name", GPU["name"]), ("gpu_uuid", GPU["uuid"]))
    assert seen[("whisperfleet_gpu_memory_used_bytes", gpu)] == 3072 * 2**20
    assert seen[("whisperfleet_gpu_utilization_ratio", gpu)] == pytest.approx(0.87)
    # What the chart's dashboard and monitors rely on is exactly what a runner serves.
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    served = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # prometheus_client's own counter-creation timestamps
        name = family.name + ("_total" if family.type == "counter" else "")
        served[name] = runner_metrics.Metric(
            family.type, frozenset(k for s in family.samples for k in s.labels))
    assert served == runner_metrics.METRICS


@pytest.mark.slow
def test_a_shard_pod_serves_its_progress_on_its_own_address(
    fake_nvml: Any, tmp_path: Path, tiny_model_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    for n, name in enumerate(["hello.wav", "nested/numbers.wav", "with space é.wav"]):
        (tmp_path / "in" / f"f{n}.wav").write_bytes((AUDIO / name).read_bytes())
    order = WorkOrder(job_uid="uid-metrics", input_uri=str(tmp_path / "in"),
                      output=OutputOptions(uri=str(tmp_path / "out"), formats=("json",)),
                      shards=1, metrics_port=free_port())
    order.model.name = str(tiny_model_path)
    assert plan(order).files == 3
    environ = {**fake_nvml([GPU]), "NVIDIA_VISIBLE_DEVICES": GPU["uuid"],
               devices.ENV_GPU_ON_CPU: "1", "POD_IP": "127.0.0.1"}
    report = run_shard(order, 0, environ)
    assert report.succeeded == 3
    seen = scrape(order.metrics_port)  # the server outlives the shard until the pod exits
    assert seen[("whisperfleet_files_total", (("status", "succeeded"),))] == 3
    assert seen[("whisperfleet_files_planned", ())] == 3
    assert seen[("whisperfleet_audio_seconds_total", ())] == pytest.approx(
        report.audio_seconds)
    assert seen[("whisperfleet_batch_size", (("device", "cuda:0"),))] >= 1
