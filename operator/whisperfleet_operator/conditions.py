"""The TranscriptionJob's status vocabulary, declared once, and metav1.Condition upserts.

Phases, condition types and the reasons the operator writes are constants here (the
runner's failure reasons are `contract.Reason`, passed through as they are); Kubernetes' own
names the operator reads from Jobs are here too. No other module spells these strings.
"""

from __future__ import annotations

import re

from whisperfleet_operator.objects import Obj

MAX_MESSAGE = 32768  # the CRD's bound on a condition message

# --- phases (status.phase: for display; conditions are the API) --------------------------
PENDING, PLANNING, RUNNING, SUSPENDED = "Pending", "Planning", "Running", "Suspended"
QUEUED = "Queued"  # a phase: the worker Job waits for Kueue to admit it
SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED = "Succeeded", "PartiallySucceeded", "Failed"
TERMINAL_PHASES = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED})

# --- condition types ------------------------------------------------------------------------
PLANNED_CONDITION = "Planned"
RUNNING_CONDITION = "Running"
COMPLETE_CONDITION = "Complete"  # only when every file succeeded (as a Job's Complete)
PARTIALLY_SUCCEEDED_CONDITION = "PartiallySucceeded"  # finished, some files or shards failed
FAILED_CONDITION = "Failed"
SUSPENDED_CONDITION = "Suspended"
PODS_HEALTHY_CONDITION = "PodsHealthy"  # False while pods cannot start
CONDITION_TYPES = (PLANNED_CONDITION, RUNNING_CONDITION, COMPLETE_CONDITION,
                   PARTIALLY_SUCCEEDED_CONDITION, FAILED_CONDITION, SUSPENDED_CONDITION,
                   PODS_HEALTHY_CONDITION)

# --- reasons the operator writes (conditions and Events) -----------------------------------
ACCEPTED_REASON = "Accepted"  # the operator has the job; planning comes next
PLANNING_REASON = "Planning"
PLANNED_REASON = "Planned"
PLAN_UNREADABLE_REASON = "PlanUnreadable"
PLANNER_FAILED_REASON = "PlannerFailed"
SHARDS_RUNNING_REASON = "ShardsRunning"
RUNNING_REASON = "Running"
QUEUED_REASON = "Queued"
SUSPENDED_REASON = "Suspended"
RESUMED_REASON = "Resumed"
INVALID_SPEC_REASON = "InvalidSpec"
JOB_REJECTED_REASON = "JobRejected"
WORKER_JOB_DELETED_REASON = "WorkerJobDeleted"
JOB_FAILED_REASON = "JobFailed"
PODS_STARTED_REASON = "PodsStarted"
FINISHED_REASON = "Finished"
STATE_REMOVED_REASON = "StateRemoved"  # TTL: the cleanup Job removed the state folder
STATE_NOT_REMOVED_REASON = "StateNotRemoved"  # TTL: it could not; deleted all the same
# Why pods cannot start (PodsHealthy=False), most urgent to fix first.
SECRET_NOT_FOUND_REASON = "SecretNotFound"
CREATE_CONTAINER_CONFIG_ERROR_REASON = "CreateContainerConfigError"
INVALID_IMAGE_NAME_REASON = "InvalidImageName"
ERR_IMAGE_NEVER_PULL_REASON = "ErrImageNeverPull"
IMAGE_PULL_BACK_OFF_REASON = "ImagePullBackOff"
CREATE_CONTAINER_ERROR_REASON = "CreateContainerError"
UNSCHEDULABLE_REASON = "Unschedulable"
STUCK_REASONS = (SECRET_NOT_FOUND_REASON, CREATE_CONTAINER_CONFIG_ERROR_REASON,
                 INVALID_IMAGE_NAME_REASON, ERR_IMAGE_NEVER_PULL_REASON,
                 IMAGE_PULL_BACK_OFF_REASON, CREATE_CONTAINER_ERROR_REASON,
                 UNSCHEDULABLE_REASON)
EVENT_NORMAL, EVENT_WARNING = "Normal", "Warning"

# --- Kubernetes' own names, as read from Jobs and pods -------------------------------------
JOB_COMPLETE = "Complete"
JOB_FAILED = "Failed"
JOB_SUSPENDED = "Suspended"
JOB_FAILED_INDEXES = "FailedIndexes"  # reason: every index ran, some failed
POD_PENDING, POD_RUNNING = "Pending", "Running"
POD_SUCCEEDED, POD_FAILED = "Succeeded", "Failed"
POD_SCHEDULED = "PodScheduled"  # a pod condition type
DISRUPTION_TARGET = "DisruptionTarget"  # a pod condition type


def condition_status(status: Obj | None, type_: str) -> str | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def true_condition(obj: Obj | None, type_: str) -> Obj | None:
    """The object's condition of this type when it is True (a Job's Complete, Failed …)."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _reason(text: str, default: str) -> str:
    """A metav1.Condition reason (CamelCase-ish: letters, digits, _ , :) from any text."""
    cleaned = re.sub(r"[^A-Za-z0-9_,:]", "", text)
    cleaned = re.sub(r"^[^A-Za-z]+|[,:]+$", "", cleaned)
    return cleaned[:1024] or default


def set_condition(
    conditions: list[Obj], type_: str, status: bool, reason: str, message: str,
    generation: int, now: str,
) -> list[Obj]:
    """metav1.Condition upsert: lastTransitionTime only moves when the status flips."""
    value = "True" if status else "False"
    reason = _reason(reason, type_)
    message = clip(message, MAX_MESSAGE)
    out: list[Obj] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(cond)
            continue
        found = True
        changed = cond.get("status") != value
        out.append({
            "type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": now if changed else cond.get("lastTransitionTime", now),
            "observedGeneration": generation,
        })
    if not found:
        out.append({
            "type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": now, "observedGeneration": generation,
        })
    return out


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
