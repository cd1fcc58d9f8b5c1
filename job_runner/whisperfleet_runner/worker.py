"""One local worker process: bound to one GPU (or the CPU), fed from the shared queue.

The body runs in a *spawned* process. It exports its binding (CUDA_VISIBLE_DEVICES = its
GPU's UUID, CUDA_DEVICE_ORDER) before anything imports CTranslate2, so CUDA in this process
only ever sees that GPU and no memory lands on the others; the model is then device 0.
Files come from the task queue and go through `batch.run_files`, the same loop a pod runs.

Under the narrow test switch (`devices.ENV_GPU_ON_CPU`, effective only with the fake NVML),
a worker bound to a fake GPU keeps that binding but runs the model on the CPU.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import signal
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from whisperfleet_runner.config import GpuIdentity, WorkOrder
from whisperfleet_runner.gpu import devices
from whisperfleet_runner.gpu.cpus import available_cpus
from whisperfleet_runner.gpu.nvml import GpuInfo

# Read-ahead per worker (decoded samples, 64 KB per audio second: about 8 minutes). Files a
# worker holds are not available to the others, so a small window keeps the GPUs finishing
# together and lets Ctrl-C stop soon; it still hides a read and a decode behind inference.
PREFETCH_BYTES = 32 * 1024 * 1024

# Messages on the events queue (worker -> parent), each a tuple starting with the kind.
BEGIN, FILE, DONE, ERROR, LOG = "begin", "file", "done", "error", "log"


@dataclass
class WorkerSpec:
    index: int
    label: str  # for people: "GPU 2" (nvidia-smi index) or "CPU"
    device: str  # what the worker is bound to: "cuda" or "cpu"
    model_device: str  # where the model runs: the same, except under the test switch
    compute_type: str
    cpu_threads: int = 0  # 0: CTranslate2's default
    env: dict[str, str] = field(default_factory=dict)  # exported before CUDA can initialise
    gpu: GpuIdentity | None = None
    free_memory_mib: int | None = None  # bounds the batch size (NVML, before loading)
    log_level: int = logging.INFO


def plan_workers(
    device: str, gpus: list[GpuInfo], compute_type: str, environ: Mapping[str, str]
) -> list[WorkerSpec]:
    """One spec per chosen GPU, or one CPU worker using all the machine's cores."""
    level = logging.getLogger().getEffectiveLevel()
    cores = available_cpus()  # the affinity mask and cgroup quota, not the host's count
    if device == "cpu" or not gpus:
        # An empty CUDA_VISIBLE_DEVICES keeps the CPU worker off every GPU.
        return [WorkerSpec(0, "CPU", "cpu", "cpu",
                           devices.resolve_compute_type(compute_type, "cpu", None),
                           cpu_threads=cores, env={"CUDA_VISIBLE_DEVICES": ""},
                           log_level=level)]
    on_cpu = devices.gpu_on_cpu(environ)
    specs = []
    for index, gpu in enumerate(gpus):
        if on_cpu:  # GPU compute types make no sense on the CPU: auto picks int8 there
            model_device, threads = "cpu", max(1, cores // len(gpus))
            resolved = devices.resolve_compute_type("auto", "cpu", None)
        else:
            model_device, threads = "cuda", 0
            resolved = devices.resolve_compute_type(compute_type, "cuda", gpu.compute_capability)
        specs.append(WorkerSpec(
            index, f"GPU {gpu.label}", "cuda", model_device, resolved, cpu_threads=threads,
            env=devices.bind_environment([gpu]), gpu=devices.to_identity(gpu, 0),
            free_memory_mib=gpu.memory_free_mib, log_level=level,
        ))
    return specs


class _EventLogHandler(logging.handlers.QueueHandler):
    """Sends log records to the parent, which hands them to whatever logging it configured."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put((LOG, record))


def _terminate(_signum: int, _frame: Any) -> None:
    # A second Ctrl-C in the parent terminates workers: unwind (publish removes its
    # temporary file on the way out) instead of dying with a half-written one.
    raise KeyboardInterrupt


def worker_main(spec: WorkerSpec, order_json: str, tasks: Any, events: Any, stop: Any,
                no_more: Any) -> None:
    """The spawned process's body (module level, so spawn can pickle a reference to it).

    `stop` (Ctrl-C): take no further file. `no_more`: the parent has seen every queued file
    taken, so an empty queue means the end (a file handed back can still clear it).
    """
    os.environ.update(spec.env)  # first: before anything may initialise CUDA
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, _terminate)
    root = logging.getLogger()
    root.handlers[:] = [_EventLogHandler(events)]
    root.setLevel(spec.log_level)
    try:
        _work(spec, WorkOrder.from_json(order_json), tasks, events, stop, no_more)
    except KeyboardInterrupt:
        pass  # terminated: the parent counts the files in hand as not attempted
    except Exception as exc:  # report, so the parent can name the worker and the reason
        logging.getLogger(__name__).exception("worker %s failed", spec.label)
        events.put((ERROR, spec.index, f"{type(exc).__name__}: {exc}"))


def _work(spec: WorkerSpec, order: WorkOrder, tasks: Any, events: Any, stop: Any,
          no_more: Any) -> None:
    from whisperfleet_runner import batch, storage

    # Taken from the queue, not yet recorded. run_files reads ahead (prefetch, short-clip
    # packing), so several files can be in hand at once.
    taken: dict[str, storage.InputFile] = {}

    def files() -> Iterator[storage.InputFile]:
        while not stop.is_set():
            try:
                item = tasks.get(timeout=0.2)
            except queue.Empty:
                if no_more.is_set():
                    return
                continue
            if item is None:
                return
            file = storage.InputFile(*item)
            taken[file.uri] = file
            events.put((BEGIN, spec.index, file.uri))
            yield file

    def progress(record: Any) -> None:
        taken.pop(record.uri, None)
        events.put((FILE, spec.index, asdict(record)))

    def get_engine() -> Any:
        from whisperfleet_runner.engine import get_engine as load

        return load(order.model, device=spec.model_device, device_index=0,
                    compute_type=spec.compute_type, cpu_threads=spec.cpu_threads,
                    free_memory_mib=spec.free_memory_mib)

    report = batch.run_files(files(), order, get_engine, device=spec.label,
                             gpus=[spec.gpu] if spec.gpu else [], progress=progress,
                             prefetch_bytes=PREFETCH_BYTES)
    # A worker that cannot load the model hands its files back: the parent requeues them
    # for the workers that can.
    returned = [(f.uri, f.key, f.size) for f in taken.values()] if report.error_reason else []
    events.put((DONE, spec.index, report.to_json(limit=1 << 30),
                os.environ.get("CUDA_VISIBLE_DEVICES", ""), returned))
