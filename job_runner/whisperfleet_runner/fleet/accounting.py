"""What a scheduled run adds up to: the summary, one row per worker, and the book-keeping of
the events workers send (`worker`). Every worker, a spawned process or the thread of a
one-device run, is counted here alike, so both kinds of run report the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from whisperfleet_runner.contract import GpuIdentity, Reason, Tally
from whisperfleet_runner.fleet.worker import (
    Began,
    Crashed,
    Event,
    Finished,
    Logged,
    Recorded,
    Tuned,
    WorkerSpec,
)
from whisperfleet_runner.pipeline.ledger import LedgerRecord
from whisperfleet_runner.storage import InputFile, store_lost

if TYPE_CHECKING:  # prometheus_client only when a run serves metrics
    from whisperfleet_runner.fleet.metrics import RunMetrics


@dataclass
class WorkerRow(Tally):
    """One worker's share of a run, and what it was."""

    worker: int = 0
    label: str = ""
    model_device: str = ""
    compute_type: str = ""
    gpu: GpuIdentity | None = None
    cuda_visible_devices: str = ""
    wall_seconds: float = 0.0
    error: str = ""
    error_reason: str = ""  # a Reason, when the worker stopped early


@dataclass
class RunSummary(Tally):
    not_attempted: int = 0  # left when interrupted (a re-run does them)
    duplicates: int = 0
    interrupted: bool = False
    wall_seconds: float = 0.0
    workers: list[WorkerRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # worker-level: model load, crashes

    @property
    def real_time_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def device_seconds(self) -> float:
        """Seconds each device (GPU, or the CPU) was held by its worker, summed."""
        return sum(w.wall_seconds for w in self.workers)

    @property
    def throughput(self) -> float:
        """Audio hours per GPU hour held (per CPU hour on the CPU), as in a
        TranscriptionJob's status.throughput: several GPUs working at once each count."""
        held = self.device_seconds
        return self.audio_seconds / held if held > 0 else 0.0

    @property
    def storage_lost(self) -> str:
        """The reason a worker stopped for when the store itself failed ('' if none did):
        the run is unfinished, and a re-run once the store is back does the rest."""
        return next((w.error_reason for w in self.workers if store_lost(w.error_reason)), "")

    @property
    def nothing_usable(self) -> bool:
        """Every worker failed before transcribing anything (e.g. the model is missing)."""
        return bool(self.errors) and self.succeeded == 0 and all(w.error for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {k: data.pop(k) for k in
                         ("total", "succeeded", "partial", "failed", "skipped", "not_attempted")}
        data.pop("bad_input")
        for row in data["workers"]:
            row["files"] = row.pop("total")
            row.pop("failures")
            row.pop("partial_files")
            row.pop("bad_input")
        data["real_time_factor"] = round(self.real_time_factor, 3)
        data["throughput"] = round(self.throughput, 3)
        data["device_seconds"] = round(self.device_seconds, 3)
        data["audio_seconds"] = round(self.audio_seconds, 3)
        data["wall_seconds"] = round(self.wall_seconds, 3)
        return data


class Observer(Protocol):
    """What a display hears about a run (all calls come from the scheduling thread)."""

    def started(self, summary: RunSummary, files: int, total_bytes: int) -> None: ...
    def file_started(self, worker: int, uri: str) -> None: ...
    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None: ...
    def stopping(self) -> None: ...


def row(spec: WorkerSpec) -> WorkerRow:
    return WorkerRow(worker=spec.index, label=spec.label, model_device=spec.placement.device,
                     compute_type=spec.placement.compute_type, gpu=spec.gpu,
                     cuda_visible_devices=spec.env.get("CUDA_VISIBLE_DEVICES", ""))


class Accounts:
    """The scheduling thread's book-keeping of worker events."""

    def __init__(self, summary: RunSummary, observer: Observer, sizes: dict[str, int],
                 on_record: Callable[[LedgerRecord], None] | None,
                 metrics: RunMetrics | None, *, queued: int) -> None:
        self.summary, self.observer, self.sizes = summary, observer, sizes
        self.on_record, self.metrics = on_record, metrics
        self.queued = queued
        self.done: set[int] = set()
        self.begun = 0  # files taken from the queue (a requeued file counts again)
        self.recorded: set[str] = set()
        self.in_hand: dict[int, set[str]] = {r.worker: set() for r in summary.workers}

    def handle(self, event: Event) -> list[InputFile]:
        """Apply one event; returns files a worker handed back, to queue again."""
        summary = self.summary
        if isinstance(event, Logged):
            logger = logging.getLogger(event.record.name)
            if logger.isEnabledFor(event.record.levelno):  # the parent's levels decide
                logger.handle(event.record)
        elif isinstance(event, Began):
            self.begun += 1
            self.in_hand[event.worker].add(event.uri)
            self.observer.file_started(event.worker, event.uri)
        elif isinstance(event, Recorded):
            record = event.record
            self.in_hand[event.worker].discard(record.uri)
            self.recorded.add(record.uri)
            summary.add(record, keep_failures=1 << 30)
            summary.workers[event.worker].add(record, keep_failures=0)
            if self.on_record is not None:
                self.on_record(record)
            if self.metrics is not None:
                self.metrics.record(record)
            self.observer.file_finished(event.worker, record, self.sizes.get(record.uri, 0))
        elif isinstance(event, Tuned):
            if self.metrics is not None:
                label = summary.workers[event.worker].label
                self.metrics.tuned(label, event.batch_size, event.halvings)
        elif isinstance(event, Finished):
            self.done.add(event.worker)
            report, row_ = event.report, summary.workers[event.worker]
            row_.cuda_visible_devices = event.cuda_visible_devices
            row_.wall_seconds = round(report.wall_seconds, 3)
            if report.error_reason:
                row_.error_reason = report.error_reason
                row_.error = f"{report.error_reason}: {report.error_message}"
                summary.errors.append(f"{row_.label}: {row_.error}")
            self.in_hand[event.worker].clear()
            if store_lost(report.error_reason):
                return []  # the other workers would only fail them alike, after retries
            return list(event.returned)
        elif isinstance(event, Crashed):
            self.done.add(event.worker)
            summary.workers[event.worker].error = event.message
            summary.errors.append(f"{summary.workers[event.worker].label}: {event.message}")
            self._lose(event.worker, f"worker {summary.workers[event.worker].label} failed: "
                                     f"{event.message}")
        return []

    def crashed(self, worker: int, exitcode: int | None) -> None:
        self.done.add(worker)
        row_ = self.summary.workers[worker]
        if self.summary.interrupted:
            self.in_hand[worker].clear()  # terminated on request: not attempted, not failed
            return
        why = f"worker {row_.label} exited unexpectedly (exit code {exitcode})"
        row_.error = why
        self.summary.errors.append(why)
        self._lose(worker, f"{why} while it held this file")

    def _lose(self, worker: int, reason: str) -> None:
        for uri in sorted(self.in_hand[worker]):
            self.recorded.add(uri)
            self.summary.add(_unrecorded(uri, reason), keep_failures=1 << 30)
        self.in_hand[worker].clear()

    def account_unfinished(self, files: Sequence[InputFile]) -> None:
        """Once every worker is done: count the files no worker recorded."""
        summary = self.summary
        left = [f.uri for f in files if f.uri not in self.recorded]
        if summary.interrupted:
            summary.not_attempted = len(left)
            summary.total += len(left)  # the run's files: done, failed, skipped or not attempted
            return
        # The worker errors are reported once, in the summary; each file just points at them.
        lost = summary.storage_lost
        reason = "not attempted: " + (
            f"the storage failed ({lost}; see the worker errors); a re-run does it" if lost
            else "no worker could run it (see the worker errors)" if summary.errors
            else "no worker took it")
        for uri in left:
            summary.add(_unrecorded(uri, reason, lost or Reason.TRANSCRIPTION_FAILED.value),
                        keep_failures=1 << 30)


def _unrecorded(uri: str, reason: str, code: str = Reason.TRANSCRIPTION_FAILED.value
                ) -> LedgerRecord:
    # Whatever killed the worker may strike again on a retry: not a bad-input failure.
    return LedgerRecord(uri=uri, key="", status="failed", reason=reason, code=code)
