"""One worker: a spawned process bound to one GPU (when a run has several), or a thread of the
run's own process (when it has one device: `inprocess`), fed from the scheduler's shared queue.

A spawned worker exports its binding (CUDA_VISIBLE_DEVICES = its GPU's UUID,
CUDA_DEVICE_ORDER) before anything imports CTranslate2, so CUDA in that process only ever
sees that GPU and no memory lands on the others; the model is then device 0. Either kind
runs `serve`: files come from the task queue and go through `pipeline.run.run_files`, the
loop a single-device pod runs in-process. What happens is sent to the scheduler as typed
events (below), the same from a process or a thread.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from whisperfleet_runner.contract import GpuIdentity, JobOptions, ShardReport
from whisperfleet_runner.decode.lazy_engine import EngineGetter
from whisperfleet_runner.decode.protocols import Engine
from whisperfleet_runner.fleet import allocator
from whisperfleet_runner.gpu.devices import ModelPlacement
from whisperfleet_runner.pipeline.failures import LossBoard
from whisperfleet_runner.pipeline.ledger import LedgerRecord
from whisperfleet_runner.storage import InputFile


@dataclass
class WorkerSpec:
    index: int
    label: str  # for people and records: "cuda:2" (a GPU by its CUDA ordinal) or "cpu"
    placement: ModelPlacement  # where and how the model runs in this worker
    env: dict[str, str] = field(default_factory=dict)  # exported before CUDA can initialise
    gpu: GpuIdentity | None = None
    # Files this worker may hold at once (taken, not yet recorded): its fair share of a
    # small batch, so one fast starter cannot take every file while the others load.
    max_in_hand: int = 1 << 30
    shard: int = 0  # for records, when a pod's shard is spread over its GPUs
    log_level: int = logging.INFO


# --- events: worker -> parent ------------------------------------------------------------
@dataclass
class Began:
    worker: int
    uri: str


@dataclass
class Recorded:
    worker: int
    record: LedgerRecord


@dataclass
class Finished:
    """The worker ran out of files (or stopped); `returned` were taken but never started."""

    worker: int
    report: ShardReport
    cuda_visible_devices: str  # as the worker process itself saw it
    returned: list[InputFile]


@dataclass
class Tuned:
    """The worker's batch size and out-of-memory halvings, when they change."""

    worker: int
    batch_size: int
    halvings: int


@dataclass
class Crashed:
    worker: int
    message: str


@dataclass
class Logged:
    record: logging.LogRecord


Event = Began | Recorded | Tuned | Finished | Crashed | Logged


# What a worker is given: queue.Queue / threading.Event for a thread, their multiprocessing
# counterparts for a spawned process.
class TaskQueue(Protocol):
    def get(self, block: bool = True, timeout: float | None = None) -> InputFile | None: ...


class EventQueue(Protocol):
    def put(self, item: Event) -> None: ...


class Flag(Protocol):
    def is_set(self) -> bool: ...


class ThreadBoard:
    """The LossBoard (pipeline.failures) of a run whose one worker is a thread."""

    def __init__(self) -> None:
        self._reason = ""
        self._lock = threading.Lock()

    def read(self) -> str:
        return self._reason

    def post(self, reason: str) -> None:
        with self._lock:
            self._reason = self._reason or reason


class ProcessBoard:
    """The LossBoard of spawned workers: a few bytes of shared memory, so the first worker
    to find the store gone stops every other one at its next file or batch, instead of each
    finding out through its own requests' retries."""

    def __init__(self, ctx: Any) -> None:  # a multiprocessing context (spawn)
        self._reason = ctx.Array("c", 64)

    def read(self) -> str:
        return bytes(self._reason.value).decode("ascii", "replace")

    def post(self, reason: str) -> None:
        with self._reason.get_lock():
            if not self._reason.value:
                self._reason.value = reason.encode("ascii", "replace")[:63]


class _EventLogHandler(logging.handlers.QueueHandler):
    """Sends log records to the parent, which hands them to whatever logging it configured."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put(Logged(record))


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    # The parent terminates workers on a second Ctrl-C: unwind (publish removes its
    # temporary file on the way out) instead of dying with a half-written one.
    raise KeyboardInterrupt


def _exit_with_parent() -> None:
    """End this worker as soon as its parent is gone. A parent killed outright (SIGKILL, the
    OOM killer) cannot stop its workers: they went on transcribing the files still queued,
    beside the re-run that took over the output's lock, then polled the empty queue
    forever, holding the model and its GPU memory."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:  # not a spawned worker
        return

    def watch() -> None:
        parent.join()  # returns when the parent process has ended
        os._exit(1)  # nobody is left to record what this process would still finish

    threading.Thread(target=watch, name="whisperfleet-parent-watch", daemon=True).start()


def worker_main(spec: WorkerSpec, options: JobOptions, tasks: TaskQueue, events: EventQueue,
                stop: Flag, no_more: Flag, board: LossBoard) -> None:
    """The spawned process's body (module level, so spawn can pickle a reference to it).

    `stop` (Ctrl-C): take no further file. `no_more`: the parent has seen every queued file
    taken, so an empty queue means the end (a file handed back can still clear it).
    `board`: where the workers tell each other that the store is gone.
    """
    os.environ.update(spec.env)  # first: before anything may initialise CUDA
    allocator.one_arena()  # before this process starts threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, _terminate)
    _exit_with_parent()
    root = logging.getLogger()
    root.handlers[:] = [_EventLogHandler(events)]
    root.setLevel(spec.log_level)
    run_worker(spec, options, tasks, events, stop, no_more, board)


def run_worker(spec: WorkerSpec, options: JobOptions, tasks: TaskQueue, events: EventQueue,
               stop: Flag, no_more: Flag, board: LossBoard,
               load: EngineGetter | None = None) -> None:
    """`serve`, with the worker's end reported as the scheduler expects: a KeyboardInterrupt
    (terminated on a second Ctrl-C) ends it silently, anything else is a Crashed event."""
    try:
        serve(spec, options, tasks, events, stop, no_more, board, load)
    except KeyboardInterrupt:
        pass  # terminated: the parent counts the files in hand as not attempted
    except Exception as exc:  # report, so the parent can name the worker and the reason
        logging.getLogger(__name__).exception("worker %s failed", spec.label)
        events.put(Crashed(spec.index, f"{type(exc).__name__}: {exc}"))


class _Taken:
    """Files taken from the queue and not yet recorded, at most `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.files: dict[str, InputFile] = {}
        self.changed = threading.Condition()

    def take(self, file: InputFile) -> None:
        with self.changed:
            self.files[file.uri] = file

    def done(self, uri: str) -> None:
        with self.changed:
            self.files.pop(uri, None)
            self.changed.notify_all()

    def wait_for_room(self, seconds: float) -> None:
        with self.changed:
            if len(self.files) >= self.limit:
                self.changed.wait(seconds)


def serve(spec: WorkerSpec, options: JobOptions, tasks: TaskQueue, events: EventQueue,
          stop: Flag, no_more: Flag, board: LossBoard, load: EngineGetter | None = None
          ) -> None:
    """Run files from `tasks` until the queue is done, `stop` is set or a worker posted on
    `board` that the store is gone. `load` returns the model (called when the first file
    needs it); by default this loads it here."""
    from whisperfleet_runner.gpu import nvml
    from whisperfleet_runner.pipeline.events import FLUSH, Flush
    from whisperfleet_runner.pipeline.run import run_files

    taken = _Taken(spec.max_in_hand)

    def files() -> Iterator[InputFile | Flush]:
        while not stop.is_set() and not board.read():
            if len(taken.files) >= taken.limit:
                # Transcribe what is held, so records free room; repeated while full,
                # because each FLUSH also lets the loop record what finished publishing.
                yield FLUSH
                taken.wait_for_room(0.2)
                continue
            try:
                file = tasks.get(timeout=0.2)
            except queue.Empty:
                if no_more.is_set():
                    return
                continue
            if file is None:
                return
            taken.take(file)
            events.put(Began(spec.index, file.uri))
            yield file

    loaded: list[Engine] = []  # the engine, once loaded (lazily, by run_files)
    reported: list[tuple[int, int]] = []  # the batch size and halvings last sent

    def get_engine() -> Engine:
        if load is not None:
            loaded[:] = [load()]
        else:
            from whisperfleet_runner.decode import engine

            loaded[:] = [engine.load(options.model, spec.placement)]
        return loaded[0]

    def recorded(record: LedgerRecord) -> None:
        taken.done(record.uri)
        events.put(Recorded(spec.index, record))
        if loaded and reported != [tuning := (loaded[0].batch_size, loaded[0].oom_halvings)]:
            reported[:] = [tuning]
            events.put(Tuned(spec.index, *tuning))

    def check_gpu() -> None:
        if spec.gpu is not None:
            nvml.check_healthy(spec.gpu.uuid)

    # The default read-ahead (overlap.DEFAULT_PREFETCH_BYTES) is small, as a worker needs it:
    # files it holds are not available to the others, so the GPUs finish together and
    # Ctrl-C stops soon.
    report = run_files(files(), options, get_engine, shard=spec.shard, device=spec.label,
                       gpus=[spec.gpu] if spec.gpu else [], progress=recorded,
                       check_device=check_gpu,
                       loss_board=board)
    # A worker that stops early (no model, a lost GPU) hands back what it never started:
    # the parent requeues those files for the workers that can.
    returned = list(taken.files.values()) if report.error_reason else []
    events.put(Finished(spec.index, report, os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                        returned))
