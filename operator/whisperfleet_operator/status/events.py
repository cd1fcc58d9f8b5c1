"""The Kubernetes Events a TranscriptionJob gets: one per change of phase or of why pods
cannot start, derived from the old and new status (pure)."""

from __future__ import annotations

from whisperfleet_operator import conditions as c
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.status import is_planned, stuck, summary


def _condition(status: Obj, type_: str) -> Obj:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def transitions(old: Obj | None, new: Obj) -> list[tuple[str, str, str]]:
    """Kubernetes Events (type, reason, message) for what changed between two statuses."""
    old = old or {}
    before, after = old.get("phase"), new.get("phase")
    events: list[tuple[str, str, str]] = []
    planned = str(_condition(new, c.PLANNED_CONDITION).get("message"))
    if not is_planned(old) and is_planned(new):
        events.append((c.EVENT_NORMAL, c.PLANNED_REASON, planned))
    events.extend(stuck.events(_condition(old, c.PODS_HEALTHY_CONDITION),
                               _condition(new, c.PODS_HEALTHY_CONDITION)))
    if before == after:
        return events
    if after == c.PLANNING:
        events.append((c.EVENT_NORMAL, c.PLANNING_REASON, planned))
    elif after == c.RUNNING:
        reason = c.RESUMED_REASON if before == c.SUSPENDED else c.RUNNING_REASON
        events.append((c.EVENT_NORMAL, reason,
                       f"worker Job {new.get('jobName', '')} is running"))
    elif after == c.QUEUED:
        events.append((c.EVENT_NORMAL, c.QUEUED_REASON,
                       str(_condition(new, c.RUNNING_CONDITION).get("message") or "queued")))
    elif after == c.SUSPENDED:
        events.append((c.EVENT_NORMAL, c.SUSPENDED_REASON,
                       "spec.suspend is true; Jobs are suspended"))
    elif after == c.SUCCEEDED:
        events.append((c.EVENT_NORMAL, c.SUCCEEDED, summary(new)))
    elif after == c.PARTIALLY_SUCCEEDED:
        events.append((c.EVENT_WARNING, c.PARTIALLY_SUCCEEDED, summary(new)))
    elif after == c.FAILED:
        cond = _condition(new, c.FAILED_CONDITION)
        events.append((c.EVENT_WARNING, str(cond.get("reason") or c.FAILED),
                       str(cond.get("message") or "failed")))
    return events
