"""The Prometheus metrics every runner process serves: the ONE list the chart's monitoring
relies on (its dashboard may query only these) and the runner's own check compares against.

Names are as Prometheus stores and queries them: a counter's name ends in `_total`. Labels
are the metric's own; the scrape adds the target labels (namespace, pod, node, job_uid,
transcriptionjob: see the chart's PodMonitor relabelings).
"""

from __future__ import annotations

from dataclasses import dataclass

from whisperfleet_runner.contract import FAILED, SKIPPED, SUCCEEDED

# The container port the runner serves /metrics on, in worker pods (default number 9471).
PORT_NAME = "metrics"
PATH = "/metrics"
# The values of whisperfleet_files_total's `status` label.
FILE_STATUSES = (SUCCEEDED, FAILED, SKIPPED)


@dataclass(frozen=True)
class Metric:
    kind: str  # "counter" or "gauge"
    labels: frozenset[str] = frozenset()


METRICS: dict[str, Metric] = {
    "whisperfleet_files_total": Metric("counter", frozenset({"status"})),
    "whisperfleet_files_planned": Metric("gauge"),
    "whisperfleet_audio_seconds_total": Metric("counter"),
    "whisperfleet_real_time_factor": Metric("gauge"),
    "whisperfleet_batch_size": Metric("gauge", frozenset({"device"})),
    "whisperfleet_oom_halvings_total": Metric("counter", frozenset({"device"})),
    "whisperfleet_gpu_memory_used_bytes": Metric("gauge", frozenset({"gpu_uuid", "gpu_name"})),
    "whisperfleet_gpu_utilization_ratio": Metric("gauge", frozenset({"gpu_uuid", "gpu_name"})),
}
