"""Spread files over one worker process per device: one shared queue, longest files first.

The local CLI runs it over every chosen GPU of a machine, and a shard pod over the GPUs it
was allocated. Workers (`worker`) are spawned processes bound to one GPU each; the parent
never imports CTranslate2, so CUDA is never initialised in it. Each worker holds at most its
fair share of a small batch, so all of them start with work, and a worker that stops early
(no model, a lost GPU) hands back the files it never started, for the others to do.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from whisperfleet_runner.config import FileFailure, GpuIdentity, JobOptions, Reason, Tally
from whisperfleet_runner.gpu import cpus, devices
from whisperfleet_runner.gpu.nvml import GpuInfo
from whisperfleet_runner.ledger import LedgerRecord
from whisperfleet_runner.metrics import RunMetrics
from whisperfleet_runner.storage import InputFile, store_lost
from whisperfleet_runner.worker import (
    Began,
    Crashed,
    Event,
    Finished,
    Logged,
    Recorded,
    Tuned,
    WorkerSpec,
    worker_main,
)

log = logging.getLogger(__name__)


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
    """What a display hears about a run (all calls come from the parent)."""

    def started(self, summary: RunSummary, files: int, total_bytes: int) -> None: ...
    def file_started(self, worker: int, uri: str) -> None: ...
    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None: ...
    def stopping(self) -> None: ...


def worker_specs(gpus: Sequence[tuple[str, GpuInfo]], compute_type: str,
                 environ: Mapping[str, str], *, files: int, shard: int = 0
                 ) -> list[WorkerSpec]:
    """One spec per (label, GPU), each bound to its GPU alone, or one CPU worker using every
    CPU this process may use when `gpus` is empty. At most one worker per file."""
    level = logging.getLogger().getEffectiveLevel()
    cores = cpus.available_cpus()  # the affinity mask and cgroup quota, not the host's count
    if not gpus:
        # An empty CUDA_VISIBLE_DEVICES keeps the CPU worker off every GPU.
        return [WorkerSpec(0, "cpu", devices.place_model(None, compute_type, environ,
                                                          cpu_threads=cores),
                           env={"CUDA_VISIBLE_DEVICES": ""}, shard=shard, log_level=level)]
    chosen = list(gpus)[: max(1, files)]  # an idle worker would only cost a spawn
    share = fair_share(files, len(chosen))
    # CPU threads matter only where models run on the CPU (the test switch): split them.
    threads = max(1, cores // len(chosen))
    return [WorkerSpec(index, label,
                       devices.place_model(gpu, compute_type, environ, cpu_threads=threads),
                       env=devices.bind_environment([gpu]), gpu=devices.to_identity(gpu, 0),
                       max_in_hand=share, shard=shard, log_level=level)
            for index, (label, gpu) in enumerate(chosen)]


def fair_share(files: int, workers: int) -> int:
    """Files one worker may hold at once: half its even share (at least 1), so a small batch
    reaches every worker; one worker alone holds as many as it likes."""
    return 1 << 30 if workers <= 1 else max(1, math.ceil(files / workers / 2))


class _Interrupts:
    """First Ctrl-C: stop taking files. Second: terminate the workers (they unwind cleanly)."""

    def __init__(self, on_first: Callable[[], None], on_second: Callable[[], None]) -> None:
        self.count = 0
        self._on = (on_first, on_second)
        self._previous: Any = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.count += 1
        self._on[min(self.count, 2) - 1]()


def run(files: Sequence[InputFile], options: JobOptions, specs: list[WorkerSpec],
        observer: Observer, *, refused: Sequence[FileFailure] = (),
        on_record: Callable[[LedgerRecord], None] | None = None,
        metrics: RunMetrics | None = None) -> RunSummary:
    """Run `files` on one spawned worker per spec, longest first; blocks until all are done.
    `refused` are files failed before the run (they count in the totals); `on_record`
    hears every record (a pod's ledger); `metrics` counts them and the workers' tuning."""
    ctx = mp.get_context("spawn")  # fork would copy a parent that may hold CUDA/NVML state
    tasks, events, stop, no_more = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    ordered = sorted(files, key=lambda f: (-f.size, f.uri))  # deterministic for a given set
    sizes = {f.uri: f.size for f in ordered}
    summary = RunSummary(workers=[_row(s) for s in specs])
    for failure in refused:
        summary.add(LedgerRecord(uri=failure.uri, key="", status="failed", reason=failure.reason,
                                 code=failure.code), keep_failures=len(refused))
    for file in ordered:
        tasks.put(file)
    state = _State(summary, observer, sizes, on_record, metrics, queued=len(ordered))
    started = time.monotonic()
    procs = [ctx.Process(target=worker_main, args=(s, options, tasks, events, stop, no_more),
                         name=f"whisperfleet-{s.label}", daemon=True) for s in specs]
    observer.started(summary, len(ordered) + len(refused), sum(sizes.values()))

    def first() -> None:
        stop.set()
        summary.interrupted = True
        observer.stopping()
        no_more.set()

    def second() -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    with _Interrupts(first, second):
        for proc in procs:
            proc.start()
        while len(state.done) < len(procs):
            if state.begun >= state.queued:  # every file was taken: an empty queue is the end
                no_more.set()
            dead = [i for i, p in enumerate(procs) if i not in state.done and not p.is_alive()]
            try:
                event = events.get(timeout=0.25)
            except queue.Empty:
                for i in dead:  # exited, and everything it sent has been read: it crashed
                    state.crashed(i, procs[i].exitcode)
                continue
            returned = state.handle(event)
            if returned and not stop.is_set():
                for file in returned:
                    tasks.put(file)
                state.queued += len(returned)
                no_more.clear()  # workers still alive wait for them (a race loses them:
                # they are then reported as not attempted, with the reason)
        for proc in procs:
            proc.join(timeout=10)
    summary.wall_seconds = time.monotonic() - started
    _account_unfinished(ordered, state)
    return summary


def _row(spec: WorkerSpec) -> WorkerRow:
    return WorkerRow(worker=spec.index, label=spec.label, model_device=spec.placement.device,
                     compute_type=spec.placement.compute_type, gpu=spec.gpu,
                     cuda_visible_devices=spec.env.get("CUDA_VISIBLE_DEVICES", ""))


class _State:
    """The parent's book-keeping of worker events."""

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
            report, row = event.report, summary.workers[event.worker]
            row.cuda_visible_devices = event.cuda_visible_devices
            row.wall_seconds = round(report.wall_seconds, 3)
            if report.error_reason:
                row.error_reason = report.error_reason
                row.error = f"{report.error_reason}: {report.error_message}"
                summary.errors.append(f"{row.label}: {row.error}")
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
        row = self.summary.workers[worker]
        if self.summary.interrupted:
            self.in_hand[worker].clear()  # terminated on request: not attempted, not failed
            return
        why = f"worker {row.label} exited unexpectedly (exit code {exitcode})"
        row.error = why
        self.summary.errors.append(why)
        self._lose(worker, f"{why} while it held this file")

    def _lose(self, worker: int, reason: str) -> None:
        for uri in sorted(self.in_hand[worker]):
            self.recorded.add(uri)
            self.summary.add(_unrecorded(uri, reason), keep_failures=1 << 30)
        self.in_hand[worker].clear()


def _unrecorded(uri: str, reason: str, code: str = Reason.TRANSCRIPTION_FAILED.value
                ) -> LedgerRecord:
    # Whatever killed the worker may strike again on a retry: not a bad-input failure.
    return LedgerRecord(uri=uri, key="", status="failed", reason=reason, code=code)


def _account_unfinished(files: Sequence[InputFile], state: _State) -> None:
    summary = state.summary
    left = [f.uri for f in files if f.uri not in state.recorded]
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
