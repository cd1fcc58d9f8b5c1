"""A run with one device works in its own process: no worker to spawn, no second start-up.

A spawned worker costs a new interpreter that imports everything again (click, the CLI,
numpy, faster-whisper) before it can load the model: most of a short run's fixed cost. With
one device (the CPU, or one GPU) there is nothing to isolate, so `ThreadWorker` runs the same
worker body (`worker.run_worker`) on a thread and tells the scheduler the same events over
an in-memory queue; the scheduler's loop and accounting do not know the difference.

`ModelPreload` loads that worker's model on a thread of its own as soon as the run knows it
has a file to transcribe, so the import of faster-whisper and the load overlap the rest of
the start-up and the first reads instead of following them.

Both bind this process to the worker's device (`WorkerSpec.env`, e.g. CUDA_VISIBLE_DEVICES)
before CTranslate2 can initialise CUDA, for the rest of the process, as a single-device pod
does (pod/shard).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import TYPE_CHECKING

from whisperfleet_runner.contract import JobOptions, ModelOptions, TranscriptionOptions
from whisperfleet_runner.fleet.worker import (
    EngineGetter,
    EventQueue,
    Flag,
    TaskQueue,
    WorkerSpec,
    run_worker,
)
from whisperfleet_runner.pipeline.failures import LossBoard

if TYPE_CHECKING:  # faster-whisper is imported on the loading thread only
    from whisperfleet_runner.decode.engine import WhisperEngine

log = logging.getLogger(__name__)

# How often a thread waiting for the model looks up: a second Ctrl-C reaches a thread only
# between two Python instructions, never inside one blocking wait.
_WAKE_SECONDS = 0.2


def bind(spec: WorkerSpec) -> None:
    """Bind this process to the worker's device (see module docstring)."""
    os.environ.update(spec.env)


class ModelPreload:
    """The model of a one-device run, loading on a background thread from `start()`.

    `get()` waits for it (the worker's engine getter); a load that failed raises its own
    error there, so the run reports it exactly as a load in the worker would."""

    def __init__(self, model: ModelOptions, spec: WorkerSpec,
                 options: TranscriptionOptions | None = None) -> None:
        self.model, self.spec = model, spec
        self.options = options  # the run's: if it may pack short clips, prepare for that
        self._loaded = threading.Event()
        self._settled = threading.Event()  # loaded, and done with CTranslate2 (warm_packing)
        self._outlive = threading.Event()  # never set (see _load)
        self._engine: WhisperEngine | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        bind(self.spec)
        self._thread = threading.Thread(target=self._load, name="whisperfleet-model-load",
                                        daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            from whisperfleet_runner.decode import engine

            self._engine = engine.load(self.model, self.spec.placement)
        except BaseException as exc:  # handed to the worker, which reports it
            self._error = exc
        finally:
            self._loaded.set()
        try:  # beside the first reads; the first packed call would do it otherwise
            engine_ = self._engine
            if engine_ is not None and self.options is not None:
                from whisperfleet_runner.decode import packing  # imports faster-whisper

                if packing.can_pack(self.options) and packing.shares_windows(
                        self.options, engine_.multilingual):
                    engine_.warm_packing()
        except Exception:  # the first packed call meets the same error, and reports it
            log.debug("warming packing failed", exc_info=True)
        finally:
            self._settled.set()
        # This thread must outlive the model's use: once the thread that built a CTranslate2
        # model has ended, the model ran 2-4x slower (benchmarks/README.md, "Measurements
        # behind design choices").
        # So it waits here, a daemon, until the process ends.
        self._outlive.wait()

    def get(self) -> WhisperEngine:
        self.start()
        while not self._loaded.wait(_WAKE_SECONDS):
            pass
        if self._error is not None:
            raise self._error
        assert self._engine is not None
        return self._engine

    def wait(self, timeout: float) -> bool:
        """Whether a started load, and the encoding that may follow it, has ended (waiting
        at most `timeout` s): the process must not exit while CTranslate2 is still working
        on another thread (its static state is torn down at exit)."""
        return self._thread is None or self._settled.wait(timeout)


class ThreadWorker:
    """`worker.run_worker` on a thread of this process, looking to the scheduler like the
    `multiprocessing.Process` a spawned worker is (start, is_alive, join, terminate)."""

    exitcode: int | None = None  # a thread has none; it always ends with an event or on request

    def __init__(self, spec: WorkerSpec, options: JobOptions, tasks: TaskQueue,
                 events: EventQueue, stop: Flag, no_more: Flag, board: LossBoard,
                 load: EngineGetter | None = None) -> None:
        self.spec = spec
        self._thread = threading.Thread(
            target=run_worker, args=(spec, options, tasks, events, stop, no_more, board, load),
            name=f"whisperfleet-{spec.label}", daemon=True)

    def start(self) -> None:
        bind(self.spec)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def terminate(self) -> None:
        """A second Ctrl-C: raise KeyboardInterrupt in the worker thread, as SIGTERM does in
        a spawned worker, so it unwinds the same way (files in hand are abandoned, temporary
        outputs removed). It lands at the thread's next Python instruction: a model call
        in progress finishes first, as in a spawned worker."""
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                   ctypes.py_object(KeyboardInterrupt))
