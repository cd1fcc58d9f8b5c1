"""`whisperfleet forget-state`: the cleanup pod's entry point (a finished job's TTL ended)."""

from __future__ import annotations

import json
import logging
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


@click.command("forget-state")
@work_order_option
@termination_log_option
def forget_state_command(work_order_path: str | None, termination_log: str | None) -> None:
    """Delete the job's state folder <output>/.whisperfleet/<job-uid>/ (never an output)."""
    configure_pod_logging()
    order = load_work_order(work_order_path)
    assert order is not None
    from whisperfleet_runner.pod.forget import forget_state, state_prefix
    from whisperfleet_runner.storage.errors import StorageError

    try:
        prefix = state_prefix(order)
        removed = forget_state(order)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except StorageError as exc:
        emit_report(json.dumps({"error": str(exc)}), termination_log)
        log.error("%s", exc)
        sys.exit(contract.EXIT_STORAGE)
    emit_report(json.dumps({"removed": removed, "state": prefix}), termination_log)
