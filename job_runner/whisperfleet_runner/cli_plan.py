"""`whisperfleet plan`: the planner pod's entry point, plus helpers the pod commands share.

Pods report through their termination message (the operator reads it from the pod status),
so the report JSON goes to the termination log and to stdout; logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from whisperfleet_runner import config
from whisperfleet_runner.cli import main

log = logging.getLogger(__name__)


def configure_pod_logging() -> None:
    # Pod logs are read with `kubectl logs`: plain lines on stderr, stdout keeps the report.
    logging.basicConfig(
        level=os.environ.get("WHISPERFLEET_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_work_order(path: str | None, *, required: bool = True) -> config.WorkOrder | None:
    """The WorkOrder from `path`, else from env ENV_WORK_ORDER; UsageError when unusable."""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text, source = fh.read(), path
        except OSError as exc:
            raise click.UsageError(f"cannot read work order {path}: {exc.strerror}") from exc
    else:
        text, source = os.environ.get(config.ENV_WORK_ORDER, ""), f"${config.ENV_WORK_ORDER}"
    if not text.strip():
        if not required:
            return None
        raise click.UsageError(
            f"no work order: set {config.ENV_WORK_ORDER} to its JSON or pass --work-order FILE"
        )
    try:
        return config.WorkOrder.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.UsageError(f"work order in {source} is invalid: {exc}") from exc


def default_termination_log() -> str | None:
    """Kubernetes creates the termination log file; write there only when it exists."""
    path = config.TERMINATION_MESSAGE_PATH
    return path if os.path.isfile(path) and os.access(path, os.W_OK) else None


def emit_report(text: str, termination_log: str | None) -> None:
    """Print the report and write it to the termination log (a failed write is logged)."""
    click.echo(text)
    path = termination_log or default_termination_log()
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        log.error("cannot write the termination log %s: %s", path, exc.strerror)


termination_log_option = click.option(
    "--termination-log",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help=f"Where to write the report (default {config.TERMINATION_MESSAGE_PATH} when it "
    "exists; the report is printed to stdout in any case).",
)
work_order_option = click.option(
    "--work-order",
    "work_order_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"WorkOrder JSON file (default: env {config.ENV_WORK_ORDER}).",
)


@main.command("plan")
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
    from whisperfleet_runner.planner import plan

    report = plan(order, shards, workers=workers)
    emit_report(report.to_json(), termination_log)
    if report.error_reason == "NoMatchingFiles":
        sys.exit(config.EXIT_USAGE)
    if report.error_reason:
        sys.exit(config.EXIT_STORAGE)
