"""A shard pod's work: read this shard's manifest lines, pick the allocated GPUs, run them.

`run_shard` is what `whisperfleet run-shard` runs in a worker pod of the Indexed Job;
`run_on_allocated` is shared with manifest-less runs (`run-shard --input …`). Errors that
stop a whole shard come back in the report's error_reason/error_message, never as a raise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING

from whisperfleet_runner import storage
from whisperfleet_runner.contract import MAX_REPORTED_FAILURES, Reason, ShardReport, WorkOrder
from whisperfleet_runner.fleet.metrics import RunMetrics
from whisperfleet_runner.gpu.devices import DeviceSelection
from whisperfleet_runner.pipeline.ledger import LedgerRecord, LedgerWriter, attempt_name
from whisperfleet_runner.pipeline.run import run_files

if TYPE_CHECKING:
    from whisperfleet_runner.decode.protocols import Engine
    from whisperfleet_runner.fleet.accounting import RunSummary

log = logging.getLogger(__name__)


def run_shard(order: WorkOrder, index: int, environ: MutableMapping[str, str]) -> ShardReport:
    """Run shard `index` of a planned job (its manifest lines) on this pod's devices.

    `environ` is the process environment (os.environ in a pod): it supplies NODE_NAME,
    POD_NAME and the GPU allocation, and receives CUDA_DEVICE_ORDER/CUDA_VISIBLE_DEVICES
    before the model initialises CUDA. Errors that stop the whole shard come back in the
    report's error_reason/error_message (NoGPU, BadManifest, a storage reason, ModelNotFound…).
    """
    from whisperfleet_runner.pod import manifest

    try:
        files = manifest.shard_inputs(order, index)  # with what is known to be done already
    except storage.StorageError as exc:
        return _shard_error(_pod_report(index, environ), exc.reason,
                            f"cannot read the manifest: {exc}")
    except (ValueError, UnicodeDecodeError) as exc:
        return _shard_error(_pod_report(index, environ), Reason.BAD_MANIFEST,
                            f"{order.manifest_uri}: {exc}")
    ledger = LedgerWriter(order.ledger_uri, index, attempt_name(environ.get("POD_NAME")))
    ledger.start()
    return run_on_allocated(order, files, environ, shard=index, ledger=ledger)


def run_on_allocated(
    order: WorkOrder,
    files: list[storage.InputFile],
    environ: MutableMapping[str, str],
    *,
    shard: int = 0,
    ledger: LedgerWriter | None = None,
) -> ShardReport:
    """Select this process's allocated devices (see run_shard) and run `files` on them: on
    one device in this process, on several with one worker process per GPU."""
    from whisperfleet_runner.gpu import devices

    try:
        selection = devices.select_allocated(order.device, environ)
        devices.resolve_compute_type(order.model.compute_type, "cpu", None)  # a known type?
    except devices.NoGpuError as exc:
        return _shard_error(_pod_report(shard, environ), Reason.NO_GPU, str(exc))
    except ValueError as exc:
        return _shard_error(_pod_report(shard, environ), Reason.BAD_WORK_ORDER, str(exc))
    for warning in selection.warnings:
        log.warning("%s", warning)
    selection.apply(environ)  # before anything initialises CUDA
    gpus = selection.identities()
    for gpu in gpus:
        log.info("shard %d uses GPU %s (%s, %d MiB) as cuda:%d",
                 shard, gpu.uuid, gpu.name, gpu.memory_mib, gpu.device_index)
    log.info("shard %d: %d files on %s", shard, len(files),
             device_label(selection.device, selection.device_index))
    metrics = _serve_metrics(order, files, selection, environ)
    if len(selection.gpus) > 1:
        report = _run_on_each_gpu(order, files, selection, environ, shard, ledger, metrics)
    else:
        report = _run_here(order, files, selection, environ, shard, ledger, metrics)
    report.node, report.pod = environ.get("NODE_NAME", ""), environ.get("POD_NAME", "")
    # A shard stopped early (the model did not load) still had all its files to do.
    report.total = max(report.total, len(files))
    return report


def _serve_metrics(order: WorkOrder, files: list[storage.InputFile],
                   selection: DeviceSelection, environ: MutableMapping[str, str]
                   ) -> RunMetrics | None:
    """Prometheus metrics on the work order's port, on the pod's own IP (the operator reads
    them for live progress); None when the work order asks for none."""
    if order.metrics_port <= 0:
        return None
    metrics = RunMetrics(gpus=[g.uuid for g in selection.gpus])
    metrics.plan(len(files))
    try:
        metrics.serve(order.metrics_port, environ.get("POD_IP") or "0.0.0.0")
    except OSError as exc:  # progress is a nicety: never a reason to fail the shard
        log.warning("cannot serve metrics on port %d: %s", order.metrics_port, exc)
    return metrics


def _run_here(order: WorkOrder, files: list[storage.InputFile], selection: DeviceSelection,
              environ: MutableMapping[str, str], shard: int, ledger: LedgerWriter | None,
              metrics: RunMetrics | None) -> ShardReport:
    """One device (a GPU or the CPU): the loop runs in this process, no worker to spawn."""
    from whisperfleet_runner.decode import engine
    from whisperfleet_runner.gpu import devices, nvml

    gpu = selection.gpus[0] if selection.gpus else None
    ordinal = selection.device_index[0] if selection.device_index else 0
    placement = devices.place_model(gpu, order.model.compute_type, environ,
                                    device_index=ordinal,
                                    memory_budget_mib=order.gpu_memory_budget_mib)

    def check_gpu() -> None:
        if gpu is not None:
            nvml.check_healthy(gpu.uuid)

    label = device_label(selection.device, selection.device_index)
    pod_log = _PodLog(shard)
    loaded: list[Engine] = []

    def load() -> Engine:
        loaded[:] = [engine.load(order.model, placement)]
        return loaded[0]

    def recorded(record: LedgerRecord) -> None:
        pod_log.file_finished(0, record, 0)
        if metrics is not None:
            metrics.record(record)
            if loaded:
                metrics.tuned(label, loaded[0].batch_size, loaded[0].oom_halvings)

    report = run_files(files, order.options, load, ledger=ledger, shard=shard, device=label,
                       gpus=selection.identities(), check_device=check_gpu, progress=recorded)
    for identity in report.gpus:  # the one GPU did everything
        identity.files, identity.failed = report.total, report.failed
        identity.audio_seconds = round(report.audio_seconds, 2)
    return report


def _run_on_each_gpu(order: WorkOrder, files: list[storage.InputFile],
                     selection: DeviceSelection, environ: MutableMapping[str, str], shard: int,
                     ledger: LedgerWriter | None, metrics: RunMetrics | None) -> ShardReport:
    """Several GPUs: one worker process per GPU over one queue, as the local CLI does, so
    every GPU works; the ledger and the report are this process's."""
    from whisperfleet_runner.fleet import scheduler

    labeled = [(f"cuda:{i}", g) for i, g in zip(selection.device_index, selection.gpus,
                                                  strict=True)]
    specs = scheduler.worker_specs(labeled, order.model.compute_type, environ,
                                   files=len(files), shard=shard,
                                   memory_budget_mib=order.gpu_memory_budget_mib)
    summary: RunSummary | None = None
    try:
        summary = scheduler.run(files, order.options, specs, _PodLog(shard),
                                on_record=ledger.add if ledger else None, metrics=metrics,
                                on_store_lost=ledger.hold if ledger else None)
    finally:
        if ledger is not None:
            ledger.close(store_lost=bool(summary and summary.storage_lost))
    report = ShardReport(shard=shard, wall_seconds=summary.wall_seconds,
                         device=device_label(selection.device, selection.device_index))
    for name in ("total", "succeeded", "failed", "skipped", "bad_input", "audio_seconds"):
        setattr(report, name, getattr(summary, name))
    report.failures = summary.failures[:MAX_REPORTED_FAILURES]
    rows = {row.label: row for row in summary.workers}
    for identity, (label, _gpu) in zip(selection.identities(), labeled, strict=True):
        row = rows.get(label)
        if row is not None:
            identity.files, identity.failed = row.total, row.failed
            identity.audio_seconds = round(row.audio_seconds, 2)
        report.gpus.append(identity)
    if summary.storage_lost:  # the shard stopped unfinished: retried as a storage failure
        report.error_reason = summary.storage_lost
        report.error_message = "; ".join(summary.errors)
    elif summary.nothing_usable:  # every GPU's worker stopped early: the shard did not run
        first = next(r for r in summary.workers if r.error)
        report.error_reason = first.error_reason or Reason.TRANSCRIPTION_FAILED.value
        report.error_message = "; ".join(summary.errors)
    return report


class _PodLog:
    """Pod logs (`kubectl logs`) get a line per finished file."""

    def __init__(self, shard: int) -> None:
        self.shard, self.done = shard, 0

    def started(self, summary: RunSummary, files: int, total_bytes: int) -> None:
        pass

    def file_started(self, worker: int, uri: str) -> None:
        pass

    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        self.done += 1
        log.info("shard %d: [%d] %s %s on %s", self.shard, self.done, record.status,
                 record.uri, record.device)

    def stopping(self) -> None:
        pass


def _pod_report(shard: int, environ: MutableMapping[str, str]) -> ShardReport:
    return ShardReport(shard=shard, node=environ.get("NODE_NAME", ""),
                       pod=environ.get("POD_NAME", ""))


def device_label(device: str, indices: Iterable[int]) -> str:
    """`cpu`, `cuda:0` or `cuda:0,1`, as transcripts and reports name devices."""
    ordinals = list(indices)
    return "cpu" if device == "cpu" else f"{device}:{','.join(map(str, ordinals or [0]))}"


def _shard_error(report: ShardReport, reason: Reason, message: str) -> ShardReport:
    report.error_reason = reason.value
    report.error_message = message
    log.error("shard %d cannot run: %s: %s", report.shard, report.error_reason, message)
    return report
