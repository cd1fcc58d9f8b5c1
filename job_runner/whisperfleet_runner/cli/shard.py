"""`whisperfleet run-shard`: the worker pod's entry point.

Normally it runs manifest lines `shard == JOB_COMPLETION_INDEX` of a planned job. With
`--input … --output …` it runs the listed inputs directly (no manifest, no ledger unless a
work order names the job), which is handy for a one-off pod or for debugging a shard.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from whisperfleet_runner import contract
from whisperfleet_runner.cli.pod_io import (
    configure_pod_logging,
    emit_report,
    load_work_order,
    termination_log_option,
    work_order_option,
)

log = logging.getLogger(__name__)

@click.command("run-shard")
@work_order_option
@click.option("--index", type=click.IntRange(min=0), default=None,
              help=f"Shard to run (default: env {contract.ENV_COMPLETION_INDEX}).")
@click.option("--input", "inputs", multiple=True, metavar="URI",
              help="Run these inputs directly instead of a manifest shard (repeatable).")
@click.option("--output", metavar="URI", default=None, help="Output prefix for --input runs.")
@click.option("--model", default=None, help="Model for --input runs without a work order.")
@click.option("--device", type=click.Choice(["cuda", "cpu", "auto"]), default=None,
              help="Device for --input runs (work order default: cuda).")
@click.option("--formats", default=None, help="Comma-separated formats for --input runs.")
@click.option("--overwrite", is_flag=True, default=False, help="Redo files whose outputs exist.")
@termination_log_option
def run_shard_command(
    work_order_path: str | None,
    index: int | None,
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    device: str | None,
    formats: str | None,
    overwrite: bool,
    termination_log: str | None,
) -> None:
    """Transcribe one shard of a planned job (or the given --input URIs)."""
    configure_pod_logging()
    from whisperfleet_runner.pod import shard as pod_shard

    if inputs:
        order = _direct_order(work_order_path, inputs, output, model, device, formats, overwrite)
        report = _run_direct(order, inputs, index or 0)
        no_gpu = report.error_reason == contract.Reason.NO_GPU
        if no_gpu and device is None and order.device == "cuda":
            report.error_message += "; --input runs use --device cuda unless told otherwise: " \
                                    "pass --device cpu (or auto) to run on the CPU"
    else:
        if output or model or device or formats:
            raise click.UsageError("--output/--model/--device/--formats need --input")
        order = load_work_order(work_order_path)
        assert order is not None
        if overwrite:
            order.output.overwrite = True
        report = pod_shard.run_shard(order, _shard_index(index), os.environ)
        if report.total == 0 and not report.error_reason:
            # The planner never makes an empty shard: this index is not one of the plan's.
            log.warning("shard %d has no files in %s: is the index beyond the planned shards?",
                        report.shard, order.manifest_uri)
    emit_report(report.to_json(), termination_log)
    log.info("shard %d: %d succeeded, %d skipped, %d failed, %.1f audio s in %.1f s",
             report.shard, report.succeeded, report.skipped, report.failed,
             report.audio_seconds, report.wall_seconds)
    sys.exit(report.exit_code)


def _shard_index(index: int | None) -> int:
    if index is not None:
        return index
    raw = os.environ.get(contract.ENV_COMPLETION_INDEX, "")
    try:
        value = int(raw)
    except ValueError:
        raise click.UsageError(
            f"no shard index: pass --index or set {contract.ENV_COMPLETION_INDEX} "
            f"(got {raw!r})"
        ) from None
    if value < 0:
        raise click.UsageError(f"{contract.ENV_COMPLETION_INDEX} must be >= 0, got {value}")
    return value


def _direct_order(
    work_order_path: str | None,
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    device: str | None,
    formats: str | None,
    overwrite: bool,
) -> contract.WorkOrder:
    order = load_work_order(work_order_path, required=False)
    if order is None:
        if not output:
            raise click.UsageError("--input needs --output (or a work order naming the output)")
        order = contract.WorkOrder(job_uid="direct", input_uri=inputs[0],
                                 output=contract.OutputOptions(uri=output))
    if output:
        order.output.uri = output
    order.input_uri = inputs[0]
    if model:
        order.model.name = model
    if device:
        order.device = device
    if formats:
        chosen = tuple(f.strip().lower() for f in formats.split(",") if f.strip())
        unknown = [f for f in chosen if f not in contract.FORMATS]
        if unknown or not chosen:
            raise click.UsageError(
                f"unknown format(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(contract.FORMATS)}"
            )
        order.output.formats = chosen
    if overwrite:
        order.output.overwrite = True
    return order


def _run_direct(order: contract.WorkOrder, inputs: tuple[str, ...], index: int
                ) -> contract.ShardReport:
    from whisperfleet_runner import storage
    from whisperfleet_runner.pod import shard as pod_shard

    files: list[storage.InputFile] = []
    for uri in inputs:
        try:
            # Two inputs holding one key collide on their outputs; run_files fails the later.
            files.extend(storage.list_inputs(uri, order.include))
        except storage.StorageError as exc:
            return _error(index, exc.reason, str(exc))
    if not files:
        return _error(index, contract.Reason.NO_MATCHING_FILES,
                      f"no files under {', '.join(inputs)} match {', '.join(order.include)}")
    files.sort(key=lambda f: -f.size)  # longest first: the tail of the run is short files
    if not order.output.overwrite:  # one listing of the output decides every skip
        try:
            files = storage.mark_done(files, order.output.uri, order.output.formats)
        except storage.StorageError as exc:
            return _error(index, exc.reason, str(exc))
    return pod_shard.run_on_allocated(order, files, os.environ, shard=index)


def _error(index: int, reason: contract.Reason, message: str) -> contract.ShardReport:
    log.error("%s: %s", reason, message)
    return contract.ShardReport(shard=index, node=os.environ.get("NODE_NAME", ""),
                              pod=os.environ.get("POD_NAME", ""),
                              error_reason=reason.value, error_message=message)
