"""A shard pod's work: read this shard's manifest lines, pick the allocated GPUs, run them.

`run_shard` is what `whisperfleet run-shard` runs in a worker pod of the Indexed Job;
`run_on_allocated` is shared with manifest-less runs (`run-shard --input …`). Errors that
stop a whole shard come back in the report's error_reason/error_message, never as a raise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

from whisperfleet_runner import storage
from whisperfleet_runner.batch import run_files
from whisperfleet_runner.config import ShardReport, WorkOrder
from whisperfleet_runner.ledger import LedgerWriter, attempt_name

log = logging.getLogger(__name__)


def run_shard(order: WorkOrder, index: int, environ: MutableMapping[str, str]) -> ShardReport:
    """Run shard `index` of a planned job (its manifest lines) on this pod's devices.

    `environ` is the process environment (os.environ in a pod): it supplies NODE_NAME,
    POD_NAME and the GPU allocation, and receives CUDA_DEVICE_ORDER/CUDA_VISIBLE_DEVICES
    before the model initialises CUDA. Errors that stop the whole shard come back in the
    report's error_reason/error_message (NoGPU, BadManifest, a storage reason, ModelNotFound…).
    """
    from whisperfleet_runner.pod import planner

    try:
        entries = [e for e in planner.read_manifest(order.manifest_uri) if e.shard == index]
    except storage.StorageError as exc:
        return _shard_error(_pod_report(index, environ), exc.reason,
                            f"cannot read the manifest: {exc}")
    except (ValueError, UnicodeDecodeError) as exc:
        return _shard_error(_pod_report(index, environ), "BadManifest",
                            f"{order.manifest_uri}: {exc}")
    ledger = LedgerWriter(order.ledger_uri, index, attempt_name(environ.get("POD_NAME")))
    return run_on_allocated(
        order, [e.to_input() for e in entries], environ, shard=index, ledger=ledger
    )


def run_on_allocated(
    order: WorkOrder,
    files: list[storage.InputFile],
    environ: MutableMapping[str, str],
    *,
    shard: int = 0,
    ledger: LedgerWriter | None = None,
) -> ShardReport:
    """Select this process's allocated devices (see run_shard) and run `files` on them."""
    from whisperfleet_runner.gpu import devices

    try:
        selection = devices.select_allocated(order.device, environ)
        compute_type = devices.resolve_compute_type(
            order.model.compute_type, selection.device, selection.compute_capability
        )
    except devices.NoGpuError as exc:
        return _shard_error(_pod_report(shard, environ), "NoGPU", str(exc))
    except ValueError as exc:
        return _shard_error(_pod_report(shard, environ), "BadWorkOrder", str(exc))
    for warning in selection.warnings:
        log.warning("%s", warning)
    selection.apply(environ)  # before anything initialises CUDA
    gpus = selection.identities()
    for gpu in gpus:
        log.info("shard %d uses GPU %s (%s, %d MiB) as cuda:%d",
                 shard, gpu.uuid, gpu.name, gpu.memory_mib, gpu.device_index)
    label = device_label(selection.device, selection.device_index)
    ordinals = selection.device_index or [0]
    model_device = selection.device
    if model_device == "cuda" and devices.gpu_on_cpu(environ):
        log.warning("test switch %s: the model runs on the CPU; the GPU binding is kept",
                    devices.ENV_GPU_ON_CPU)
        model_device, compute_type = "cpu", devices.resolve_compute_type("auto", "cpu", None)

    def get_engine() -> Any:
        from whisperfleet_runner.engine import get_engine as load

        free = [g.memory_free_mib for g in selection.gpus if model_device == "cuda"]
        return load(order.model, device=model_device,
                    device_index=ordinals if len(ordinals) > 1 else ordinals[0],
                    compute_type=compute_type, free_memory_mib=min(free) if free else None)

    log.info("shard %d: %d files on %s (%s)", shard, len(files), label, compute_type)
    report = run_files(files, order, get_engine, ledger=ledger, shard=shard, device=label,
                       gpus=gpus)
    report.node, report.pod = environ.get("NODE_NAME", ""), environ.get("POD_NAME", "")
    # A shard stopped early (the model did not load) still had all its files to do.
    report.total = max(report.total, len(files))
    return report


def _pod_report(shard: int, environ: MutableMapping[str, str]) -> ShardReport:
    return ShardReport(shard=shard, node=environ.get("NODE_NAME", ""),
                       pod=environ.get("POD_NAME", ""))


def device_label(device: str, indices: Iterable[int]) -> str:
    """`cpu`, `cuda:0` or `cuda:0,1`, as transcripts and reports name devices."""
    ordinals = list(indices)
    return "cpu" if device == "cpu" else f"{device}:{','.join(map(str, ordinals or [0]))}"


def _shard_error(report: ShardReport, reason: str, message: str) -> ShardReport:
    report.error_reason = reason or "StorageError"
    report.error_message = message
    log.error("shard %d cannot run: %s: %s", report.shard, report.error_reason, message)
    return report
