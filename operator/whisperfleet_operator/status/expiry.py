"""A finished TranscriptionJob's TTL: when it ends, and what the cleanup Job came to (pure).

As a Job's TTL controller does for a Job: unset keeps the finished TranscriptionJob; N
seconds after it finished (0: at once) it is deleted, its Jobs and pods with it by garbage
collection. First a cleanup Job removes its state folder from the output store.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from whisperfleet_operator import conditions as c
from whisperfleet_operator.conditions import true_condition
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.status.lifecycle import is_terminal

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp.replace("Z", "+0000"), TIME_FORMAT)


def expires_at(ttl_seconds: int | None, status: Obj | None) -> datetime | None:
    """When a finished job's TTL ends; None while it runs or without a TTL. Finished is
    status.completionTime, else the last condition change (a status from before it)."""
    status = status or {}
    if ttl_seconds is None or not is_terminal(status):
        return None
    stamps = [str(cond.get("lastTransitionTime") or "") for cond in status.get("conditions") or []]
    finished = str(status.get("completionTime") or max(filter(None, stamps), default=""))
    if not finished:
        return None
    return _parse(finished) + timedelta(seconds=ttl_seconds)


def cleanup_failure(job: Obj) -> str | None:
    """None while the cleanup Job runs; "" when it finished; why it failed otherwise."""
    if true_condition(job, c.JOB_COMPLETE) is not None:
        return ""
    failed = true_condition(job, c.JOB_FAILED)
    if failed is None:
        return None
    return str(failed.get("message") or failed.get("reason") or "the cleanup Job failed")
