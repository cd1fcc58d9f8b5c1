"""What the pod commands (`plan`, `run-shard`) share: logging, the work order, the report.

Pods report through their termination message (the operator reads it from the pod status),
so the report JSON goes to the termination log and to stdout; logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from whisperfleet_runner import contract

log = logging.getLogger(__name__)


def configure_pod_logging() -> None:
    # Pod logs are read with `kubectl logs`: plain lines on stderr, stdout keeps the report.
    from whisperfleet_runner.storage.errors import ScrubbingFilter

    logging.basicConfig(
        level=os.environ.get("WHISPERFLEET_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter())


def load_work_order(path: str | None, *, required: bool = True) -> contract.WorkOrder | None:
    """The WorkOrder from `path`, else from env ENV_WORK_ORDER; UsageError when unusable."""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text, source = fh.read(), path
        except OSError as exc:
            raise click.UsageError(f"cannot read work order {path}: {exc.strerror}") from exc
    else:
        text, source = os.environ.get(contract.ENV_WORK_ORDER, ""), f"${contract.ENV_WORK_ORDER}"
    if not text.strip():
        if not required:
            return None
        raise click.UsageError(
            f"no work order: set {contract.ENV_WORK_ORDER} to its JSON or pass --work-order FILE"
        )
    try:
        return contract.WorkOrder.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.UsageError(f"work order in {source} is invalid: {exc}") from exc


def default_termination_log() -> str | None:
    """Where the pod's terminationMessagePath is: $WHISPERFLEET_TERMINATION_LOG (the operator
    sets it to the same path as the container's terminationMessagePath), else the Kubernetes
    default. The kubelet creates that file; write there only when it exists."""
    path = os.environ.get(contract.ENV_TERMINATION_LOG) or contract.TERMINATION_MESSAGE_PATH
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
    help=f"Where to write the report (default ${contract.ENV_TERMINATION_LOG}, else "
    f"{contract.TERMINATION_MESSAGE_PATH}, when that file exists; the report is printed to "
    "stdout in any case).",
)
work_order_option = click.option(
    "--work-order",
    "work_order_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"WorkOrder JSON file (default: env {contract.ENV_WORK_ORDER}).",
)


