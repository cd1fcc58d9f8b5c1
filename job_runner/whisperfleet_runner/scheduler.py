"""The local batch run: spread gathered inputs over one worker process per chosen GPU.

Workers (`worker`) are spawned processes fed from one shared queue, longest files
first; the parent never imports CTranslate2, so CUDA is never initialised in it. Inputs are
gathered by `inputs.gather`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from whisperfleet_runner.config import FileFailure, ShardReport, WorkOrder
from whisperfleet_runner.ledger import SKIPPED, SUCCEEDED, LedgerRecord
from whisperfleet_runner.local.inputs import Gathered
from whisperfleet_runner.worker import (
    BEGIN,
    DONE,
    ERROR,
    FILE,
    LOG,
    WorkerSpec,
    worker_main,
)

log = logging.getLogger(__name__)

class Observer(Protocol):
    """What the progress display hears about a run (all calls come from the parent)."""

    def started(self, files: int, total_bytes: int, workers: list[WorkerSpec]) -> None: ...
    def file_started(self, worker: int, uri: str) -> None: ...
    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None: ...
    def stopping(self) -> None: ...


@dataclass
class RunSummary:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    not_attempted: int = 0  # left when interrupted (a re-run does them)
    duplicates: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures: list[FileFailure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # worker-level: model load, crashes

    @property
    def real_time_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def nothing_usable(self) -> bool:
        """Every worker failed before transcribing anything (e.g. the model is missing)."""
        return bool(self.errors) and self.succeeded == 0 and all(
            w["error"] for w in self.workers
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {k: data.pop(k) for k in
                         ("total", "succeeded", "failed", "skipped", "not_attempted")}
        data["real_time_factor"] = round(self.real_time_factor, 3)
        data["audio_seconds"] = round(self.audio_seconds, 3)
        data["wall_seconds"] = round(self.wall_seconds, 3)
        return data


class _Interrupts:
    """First Ctrl-C: stop taking files. Second: terminate the workers (they unwind cleanly)."""

    def __init__(self, on_first: Any, on_second: Any) -> None:
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


def run(
    gathered: Gathered, order: WorkOrder, specs: list[WorkerSpec], observer: Observer
) -> RunSummary:
    """Run `gathered.files` on one spawned worker per spec; blocks until all are done."""
    ctx = mp.get_context("spawn")  # fork would copy a parent that may hold CUDA/NVML state
    tasks, events, stop, no_more = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    sizes = {f.uri: f.size for f in gathered.files}
    summary = RunSummary(total=len(gathered.files) + len(gathered.refused),
                         duplicates=gathered.duplicates)
    summary.failures.extend(gathered.refused)
    summary.failed = len(gathered.refused)
    for file in gathered.files:
        tasks.put((file.uri, file.key, file.size))
    queued = len(gathered.files)
    started = time.monotonic()
    procs = [ctx.Process(target=worker_main,
                         args=(s, order.to_json(), tasks, events, stop, no_more),
                         name=f"whisperfleet-{s.label}", daemon=True) for s in specs]
    observer.started(len(gathered.files), sum(sizes.values()), specs)
    state = _State(specs)

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
            if state.begun >= queued:  # every file was taken: an empty queue is the end
                no_more.set()
            dead = [i for i, p in enumerate(procs) if i not in state.done and not p.is_alive()]
            try:
                event = events.get(timeout=0.25)
            except queue.Empty:
                for i in dead:  # exited, and everything it sent has been read: it crashed
                    state.crashed(i, procs[i].exitcode, summary)
                continue
            requeue = state.handle(event, summary, observer, sizes)
            if requeue and not stop.is_set():
                for item in requeue:
                    tasks.put(item)
                queued += len(requeue)
                no_more.clear()  # workers still alive wait for them (a race loses them:
                # they are then reported as not attempted, with the reason)
        for proc in procs:
            proc.join(timeout=10)
    summary.wall_seconds = time.monotonic() - started
    _account_unfinished(gathered, state, summary)
    return summary


class _State:
    """The parent's book-keeping of worker messages."""

    def __init__(self, specs: list[WorkerSpec]) -> None:
        self.specs = specs
        self.done: set[int] = set()
        self.begun = 0  # files taken from the queue (a requeued file counts again)
        self.recorded: set[str] = set()
        self.in_hand: dict[int, set[str]] = {s.index: set() for s in specs}
        self.workers = {s.index: _worker_row(s) for s in specs}

    def handle(self, event: tuple[Any, ...], summary: RunSummary, observer: Observer,
               sizes: dict[str, int]) -> list[tuple[str, str, int]]:
        kind, index = event[0], event[1]
        if kind == LOG:
            record: logging.LogRecord = event[1]
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):  # the parent's levels and handlers decide
                logger.handle(record)
        elif kind == BEGIN:
            self.begun += 1
            self.in_hand[index].add(event[2])
            observer.file_started(index, event[2])
        elif kind == FILE:
            rec = LedgerRecord.from_dict(event[2])
            self.in_hand[index].discard(rec.uri)
            self.recorded.add(rec.uri)
            _count(summary, self.workers[index], rec)
            observer.file_finished(index, rec, sizes.get(rec.uri, 0))
        elif kind == DONE:
            self.done.add(index)
            report = ShardReport.from_json(event[2])
            row = self.workers[index]
            row["cuda_visible_devices"] = event[3]  # as the worker process itself saw it
            row["wall_seconds"] = round(report.wall_seconds, 3)
            if report.error_reason:
                row["error"] = f"{report.error_reason}: {report.error_message}"
                summary.errors.append(f"{row['label']}: {row['error']}")
            self.in_hand[index].clear()
            return list(event[4])
        elif kind == ERROR:
            self.done.add(index)
            self.workers[index]["error"] = event[2]
            summary.errors.append(f"{self.workers[index]['label']}: {event[2]}")
            self._lose(index, f"worker {self.workers[index]['label']} failed: {event[2]}",
                       summary)
        return []

    def crashed(self, index: int, exitcode: int | None, summary: RunSummary) -> None:
        self.done.add(index)
        label = self.workers[index]["label"]
        if summary.interrupted:
            self.in_hand[index].clear()  # terminated on request: not attempted, not failed
            return
        why = f"worker {label} exited unexpectedly (exit code {exitcode})"
        self.workers[index]["error"] = why
        summary.errors.append(why)
        self._lose(index, f"{why} while it held this file", summary)

    def _lose(self, index: int, reason: str, summary: RunSummary) -> None:
        for uri in sorted(self.in_hand[index]):
            self.recorded.add(uri)
            summary.failed += 1
            summary.failures.append(FileFailure(uri=uri, reason=reason))
        self.in_hand[index].clear()


def _worker_row(spec: WorkerSpec) -> dict[str, Any]:
    return {
        "worker": spec.index, "label": spec.label, "device": spec.device,
        "model_device": spec.model_device, "compute_type": spec.compute_type,
        "gpu": asdict(spec.gpu) if spec.gpu else None,
        "cuda_visible_devices": spec.env.get("CUDA_VISIBLE_DEVICES", ""),
        "files": 0, "succeeded": 0, "failed": 0, "skipped": 0,
        "audio_seconds": 0.0, "wall_seconds": 0.0, "error": "",
    }


def _count(summary: RunSummary, row: dict[str, Any], rec: LedgerRecord) -> None:
    row["files"] += 1
    if rec.status == SUCCEEDED:
        summary.succeeded += 1
        row["succeeded"] += 1
        summary.audio_seconds += rec.audio_seconds
        row["audio_seconds"] = round(row["audio_seconds"] + rec.audio_seconds, 3)
    elif rec.status == SKIPPED:
        summary.skipped += 1
        row["skipped"] += 1
    else:
        summary.failed += 1
        row["failed"] += 1
        summary.failures.append(FileFailure(uri=rec.uri, reason=rec.reason))


def _account_unfinished(gathered: Gathered, state: _State, summary: RunSummary) -> None:
    summary.workers = [state.workers[s.index] for s in state.specs]
    left = [f.uri for f in gathered.files if f.uri not in state.recorded]
    if summary.interrupted:
        summary.not_attempted = len(left)
        return
    # The worker errors are reported once, in the summary; each file just points at them.
    reason = "not attempted: " + (
        "no worker could run it (see the worker errors)" if summary.errors
        else "no worker took it")
    for uri in left:
        summary.failed += 1
        summary.failures.append(FileFailure(uri=uri, reason=reason))
