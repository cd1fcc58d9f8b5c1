"""Spread files over one worker per device: one shared queue, longest files first.

The local CLI runs it over every chosen GPU of a machine, and a shard pod over the GPUs it
was allocated. With several devices, workers (`worker`) are spawned processes bound to one
GPU each; the parent never imports CTranslate2, so CUDA is never initialised in it. Each
worker holds at most its fair share of a small batch, so all of them start with work, and a
worker that stops early (no model, a lost GPU) hands back the files it never started, for
the others to do. With one device the worker is a thread of this process (`inprocess`):
nothing to isolate, and no second interpreter to start. Either way the events go through
the same loop and the same accounting (`accounting`).
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from whisperfleet_runner.contract import FileFailure, JobOptions
from whisperfleet_runner.fleet.accounting import Accounts, Observer, RunSummary, WorkerRow, row
from whisperfleet_runner.fleet.inprocess import ModelPreload, ThreadWorker
from whisperfleet_runner.fleet.worker import (
    Event,
    ProcessBoard,
    ThreadBoard,
    WorkerSpec,
    worker_main,
)
from whisperfleet_runner.gpu import cpus, devices
from whisperfleet_runner.gpu.nvml import GpuInfo
from whisperfleet_runner.pipeline.ledger import LedgerRecord
from whisperfleet_runner.storage import InputFile

if TYPE_CHECKING:  # prometheus_client only when a run serves metrics
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue as MpQueue
    from multiprocessing.synchronize import Event as MpEvent

    from whisperfleet_runner.fleet.metrics import RunMetrics

__all__ = ["Observer", "RunSummary", "WorkerRow", "fair_share", "run", "worker_specs"]

log = logging.getLogger(__name__)


def worker_specs(gpus: Sequence[tuple[str, GpuInfo]], compute_type: str,
                 environ: Mapping[str, str], *, files: int, shard: int = 0,
                 memory_budget_mib: int = 0) -> list[WorkerSpec]:
    """One spec per (label, GPU), each bound to its GPU alone, or one CPU worker using every
    CPU this process may use when `gpus` is empty. At most one worker per file.
    `memory_budget_mib`: each GPU's memory this run may use (0: what is free)."""
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
                       devices.place_model(gpu, compute_type, environ, cpu_threads=threads,
                                           memory_budget_mib=memory_budget_mib),
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

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        self._on[min(self.count, 2) - 1]()


def run(files: Sequence[InputFile], options: JobOptions, specs: list[WorkerSpec],
        observer: Observer, *, refused: Sequence[FileFailure] = (),
        on_record: Callable[[LedgerRecord], None] | None = None,
        metrics: RunMetrics | None = None, preload: ModelPreload | None = None,
        on_store_lost: Callable[[], None] | None = None) -> RunSummary:
    """Run `files` on one worker per spec, longest first; blocks until all are done.
    `refused` are files failed before the run (they count in the totals); `on_record`
    hears every record (a pod's ledger); `metrics` counts them and the workers' tuning.
    `preload`: the one device's model, already loading (ignored with several devices).
    `on_store_lost` is called once, as soon as a worker found the store gone (before the
    records that follow): what the caller still has to store should then try it once."""
    ordered = sorted(files, key=lambda f: (-f.size, f.uri))  # deterministic for a given set
    sizes = {f.uri: f.size for f in ordered}
    summary = RunSummary(workers=[row(s) for s in specs])
    for failure in refused:
        summary.add(LedgerRecord(uri=failure.uri, key="", status="failed", reason=failure.reason,
                                 code=failure.code), keep_failures=len(refused))
    workers = _Workers(specs, options, preload)
    for file in ordered:
        workers.tasks.put(file)
    state = Accounts(summary, observer, sizes, on_record, metrics, queued=len(ordered))
    started = time.monotonic()
    procs, events, stop, no_more = workers.procs, workers.events, workers.stop, workers.no_more
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

    with _Interrupts(first, second) as interrupts:
        for proc in procs:
            proc.start()
        while len(state.done) < len(procs):
            if on_store_lost is not None and workers.board.read():
                on_store_lost()
                on_store_lost = None
            if state.begun >= state.queued:  # every file was taken: an empty queue is the end
                no_more.set()
            dead = [i for i, p in enumerate(procs) if i not in state.done and not p.is_alive()]
            try:
                event = events.get(timeout=0.25)
            except queue.Empty:
                for i in dead:  # exited, and everything it sent has been read: it crashed
                    state.crashed(i, procs[i].exitcode)
                continue
            if on_store_lost is not None and workers.board.read():  # posted before `event`
                on_store_lost()
                on_store_lost = None
            returned = state.handle(event)
            if returned and not stop.is_set():
                for file in returned:
                    workers.tasks.put(file)
                state.queued += len(returned)
                no_more.clear()  # workers still alive wait for them (a race loses them:
                # they are then reported as not attempted, with the reason)
        for proc in procs:
            proc.join(timeout=10)
        # A load no file needed (Ctrl-C came first) must end before the process does,
        # unless a second Ctrl-C asks to stop at once.
        preload = workers.preload
        while preload is not None and interrupts.count < 2 and not preload.wait(0.25):
            pass
    summary.wall_seconds = time.monotonic() - started
    state.account_unfinished(ordered)
    return summary


class _Workers:
    """The queues, flags and workers of one run: a thread over in-memory queues with one
    device, else a spawned process per device over multiprocessing queues."""

    def __init__(self, specs: list[WorkerSpec], options: JobOptions,
                 preload: ModelPreload | None) -> None:
        self.preload = preload if len(specs) == 1 else None
        self.procs: list[ThreadWorker] | list[BaseProcess]
        self.tasks: queue.Queue[InputFile | None] | MpQueue[InputFile | None]
        self.events: queue.Queue[Event] | MpQueue[Event]
        self.stop: threading.Event | MpEvent
        self.no_more: threading.Event | MpEvent
        self.board: ThreadBoard | ProcessBoard  # the store found gone, by any worker
        if len(specs) == 1:
            # No multiprocessing object at all: even one queue would start the resource
            # tracker, a process of its own.
            self.tasks, self.events = queue.Queue(), queue.Queue()
            self.stop, self.no_more = threading.Event(), threading.Event()
            self.board = ThreadBoard()
            self.procs = [ThreadWorker(specs[0], options, self.tasks, self.events, self.stop,
                                       self.no_more, self.board,
                                       self.preload.get if self.preload else None)]
            return
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork would copy a parent that may hold CUDA/NVML state
        self.tasks, self.events = ctx.Queue(), ctx.Queue()
        self.stop, self.no_more = ctx.Event(), ctx.Event()
        self.board = ProcessBoard(ctx)
        self.procs = [ctx.Process(target=worker_main,
                                  args=(s, options, self.tasks, self.events, self.stop,
                                        self.no_more, self.board),
                                  name=f"whisperfleet-{s.label}", daemon=True) for s in specs]
