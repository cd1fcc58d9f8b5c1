"""`whisperfleet plan`: the planner pod's entry point (list, balance, write the manifest)."""

from __future__ import annotations

import sys

import click

from whisperfleet_runner.cli.pod_io import (
    configure_pod_logging,
    emit_report,
    load_work_order,
    termination_log_option,
    work_order_option,
)


@click.command("plan")
@work_order_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker pods that will run at once (shards: auto = about 4 per worker).")
@click.option("--shards", type=click.IntRange(min=0), default=None,
              help="Shard count, overriding the work order's (0 = auto).")
@termination_log_option
def plan_command(
    work_order_path: str | None, workers: int, shards: int | None, termination_log: str | None
) -> None:
    """List the input, balance files over shards by size and write the manifest."""
    configure_pod_logging()
    order = load_work_order(work_order_path)
    assert order is not None
    from whisperfleet_runner.pod.planner import plan

    report = plan(order, shards, workers=workers)
    emit_report(report.to_json(), termination_log)
    sys.exit(report.exit_code)
