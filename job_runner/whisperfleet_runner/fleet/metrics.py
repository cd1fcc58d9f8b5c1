"""Prometheus metrics a runner process serves while it works.

The operator reads them from running shard pods for a TranscriptionJob's live progress, and
dashboards chart them. One `RunMetrics` per process (a pod's, or a local run's parent),
fed with every file's record and every worker's batch tuning; GPU memory and utilisation
are read from NVML when scraped. Nothing is served unless `serve` is called.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from whisperfleet_runner.contract import (
    FAILED,
    METRIC_AUDIO_SECONDS,
    METRIC_FILES,
    SKIPPED,
    SUCCEEDED,
    Outcome,
)
from whisperfleet_runner.gpu import nvml

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

class _GpuCollector(Collector):
    """Memory in use and utilisation of this process's GPUs, read from NVML at scrape time."""

    def __init__(self, uuids: Sequence[str]) -> None:
        self.uuids = set(uuids)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = GaugeMetricFamily("whisperfleet_gpu_memory_used_bytes",
                                   "GPU memory in use (NVML).", labels=["gpu_uuid", "gpu_name"])
        busy = GaugeMetricFamily("whisperfleet_gpu_utilization_ratio",
                                 "GPU utilisation over NVML's last sample period, 0..1.",
                                 labels=["gpu_uuid", "gpu_name"])
        try:
            gpus = [g for g in nvml.list_gpus() if g.uuid in self.uuids] if self.uuids else []
        except nvml.NvmlUnavailable:
            gpus = []
        for gpu in gpus:
            memory.add_metric([gpu.uuid, gpu.name], gpu.memory_used_mib * 2**20)
            if gpu.utilization_percent is not None:
                busy.add_metric([gpu.uuid, gpu.name], gpu.utilization_percent / 100)
        yield memory
        yield busy


class RunMetrics:
    """The metrics of one run; thread-safe (prometheus_client's own locks)."""

    def __init__(self, gpus: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.started = time.monotonic()
        self.files = Counter(METRIC_FILES, "Files finished, by outcome.", ["status"],
                             registry=self.registry)
        for status in (SUCCEEDED, FAILED, SKIPPED):
            self.files.labels(status)  # present at 0 from the start: rates need a baseline
        self.planned = Gauge("whisperfleet_files_planned", "Files this process has to do.",
                             registry=self.registry)
        self.audio = Counter(METRIC_AUDIO_SECONDS, "Audio transcribed, in seconds.",
                             registry=self.registry)
        self.rtf = Gauge("whisperfleet_real_time_factor",
                         "Audio seconds transcribed per wall second since the start.",
                         registry=self.registry)
        self.batch = Gauge("whisperfleet_batch_size", "The batch size a device runs now.",
                           ["device"], registry=self.registry)
        self.halvings = Counter("whisperfleet_oom_halvings",
                                "Batch halvings after CUDA out-of-memory.", ["device"],
                                registry=self.registry)
        self._halvings_seen: dict[str, int] = {}
        self._audio_seconds = 0.0
        self.registry.register(_GpuCollector(list(gpus)))

    def plan(self, files: int) -> None:
        self.planned.set(files)

    def record(self, outcome: Outcome) -> None:
        self.files.labels(outcome.status).inc()
        if outcome.status == SUCCEEDED:
            self.audio.inc(outcome.audio_seconds)
            self._audio_seconds += outcome.audio_seconds
        elapsed = time.monotonic() - self.started
        self.rtf.set(self._audio_seconds / elapsed if elapsed > 0 else 0.0)

    def tuned(self, device: str, batch_size: int, halvings: int) -> None:
        """A device's current batch size and its out-of-memory halvings so far."""
        self.batch.labels(device).set(batch_size)
        new = halvings - self._halvings_seen.get(device, 0)
        if new > 0:
            self.halvings.labels(device).inc(new)
            self._halvings_seen[device] = halvings

    def serve(self, port: int, host: str) -> WSGIServer:
        """Serve /metrics on host:port (port 0: a free one); returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return server
