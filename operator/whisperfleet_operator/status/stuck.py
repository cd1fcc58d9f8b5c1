"""Pods that cannot start, and the `PodsHealthy` condition that says so (pure).

A planner or worker pod whose Secret is missing, whose image cannot be pulled, or that no
node can take stays Pending: its Job neither fails nor progresses, so without this the
TranscriptionJob would sit in Planning/Running with nothing said (until a deadline, or
forever). None of these is terminal: the pods retry on their own, and the user can fix each
cause (create the Secret, push the image, add a node) without re-creating the job. So they
surface as a condition plus one Warning Event per change of reason, never as phase Failed.

Messages quote the kubelet/scheduler message, which names a Secret but never holds its data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from whisperfleet_operator import conditions as c
from whisperfleet_operator import naming
from whisperfleet_operator.conditions import condition_status, set_condition
from whisperfleet_operator.objects import Obj

CONDITION = c.PODS_HEALTHY_CONDITION
MAX_QUOTE = 1000  # of a kubelet/scheduler message quoted in status

# Container waiting reasons that mean "cannot start until something outside changes"
# -> the condition reason. ErrImagePull and ImagePullBackOff alternate while the kubelet
# retries, so they share one reason (else every retry would be a new Warning Event).
# ContainerCreating / PodInitializing are normal progress and absent here.
_WAITING = {  # the kubelet's waiting reasons (its own names) -> ours
    "CreateContainerConfigError": c.CREATE_CONTAINER_CONFIG_ERROR_REASON,
    "CreateContainerError": c.CREATE_CONTAINER_ERROR_REASON,
    "ErrImagePull": c.IMAGE_PULL_BACK_OFF_REASON,
    "ImagePullBackOff": c.IMAGE_PULL_BACK_OFF_REASON,
    "ErrImageNeverPull": c.ERR_IMAGE_NEVER_PULL_REASON,
    "InvalidImageName": c.INVALID_IMAGE_NAME_REASON,
}
_SECRET_MISSING = re.compile(r'secrets? "[^"]*" not found', re.IGNORECASE)
_HINTS = {
    c.SECRET_NOT_FOUND_REASON:
        "create the Secret named in spec.storage.secretName in this namespace",
    c.CREATE_CONTAINER_CONFIG_ERROR_REASON: "check the Secret named in spec.storage.secretName",
    c.IMAGE_PULL_BACK_OFF_REASON: "check spec.workers.image, the operator's runner image and "
                                  "imagePullSecrets",
    c.ERR_IMAGE_NEVER_PULL_REASON: "the image is not on the node and imagePullPolicy is Never",
    c.INVALID_IMAGE_NAME_REASON: "fix spec.workers.image or the operator's runner image "
                                 "setting",
    c.UNSCHEDULABLE_REASON: "no node fits the pod (GPU product/memory, nodeSelector, "
                            "tolerations, resources) or all are busy; a cluster autoscaler "
                            "may still add one",
}
# When pods are stuck for different reasons, the condition names the one a user must fix
# first (STUCK_REASONS' order): a missing Secret or bad image also blocks scheduled pods.
_PRIORITY = c.STUCK_REASONS


@dataclass(frozen=True)
class Stuck:
    pod: str
    reason: str  # a condition reason, e.g. SecretNotFound
    message: str  # the kubelet's or scheduler's own words


def _quote(text: Any) -> str:
    flat = re.sub(r"\s+", " ", str(text or "")).strip()
    return flat if len(flat) <= MAX_QUOTE else flat[: MAX_QUOTE - 1] + "…"


def why_stuck(pod: Obj) -> Stuck | None:
    """Why this pod cannot start, or None when it runs, is finished, is going away, or is
    still making normal progress (being scheduled, pulling, creating its container)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") not in (None, c.POD_PENDING):
        return None
    name = str(meta.get("name") or "")
    for cs in [*(status.get("initContainerStatuses") or []),
               *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        kubelet_reason = str(waiting.get("reason") or "")
        if kubelet_reason not in _WAITING:
            continue
        message = _quote(waiting.get("message")) or kubelet_reason
        reason = _WAITING[kubelet_reason]
        if reason == c.CREATE_CONTAINER_CONFIG_ERROR_REASON and _SECRET_MISSING.search(message):
            reason = c.SECRET_NOT_FOUND_REASON
        return Stuck(name, reason, f"{kubelet_reason}: {message}")
    for cond in status.get("conditions") or []:
        if (cond.get("type") == c.POD_SCHEDULED and cond.get("status") == "False"
                and cond.get("reason") == c.UNSCHEDULABLE_REASON):
            return Stuck(name, c.UNSCHEDULABLE_REASON,
                         _quote(cond.get("message")) or c.UNSCHEDULABLE_REASON)
    return None


def signature(pod: Obj) -> tuple[str, str] | None:
    """What of a pod matters to the condition: handlers reconcile only when it changes."""
    stuck = why_stuck(pod)
    return None if stuck is None else (stuck.reason, stuck.message)


def owner_name(pod: Obj) -> str:
    """The TranscriptionJob's name from the annotation the pod template carries ("" when
    absent: a pod made from a Job created before the annotation existed)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(naming.ANNOTATION_TJ_NAME) or "")


def stuck_pods(pods: list[Obj]) -> list[Stuck]:
    """Every stuck pod, the one to fix first leading, then by name (stable messages)."""
    found = [s for s in (why_stuck(p) for p in pods) if s is not None]
    rank = {reason: i for i, reason in enumerate(_PRIORITY)}
    return sorted(found, key=lambda s: (rank.get(s.reason, len(rank)), s.pod))


def describe(stuck: list[Stuck], what: str) -> str:
    """E.g. 'planner pod p-x cannot start: CreateContainerConfigError: secret "s3" not found
    (create the Secret …); the pod retries on its own'. `stuck` must not be empty."""
    first = stuck[0]
    hint = _HINTS.get(first.reason)
    text = f"{what} pod {first.pod} cannot start: {first.message}"
    if hint:
        text += f" ({hint})"
    if len(stuck) > 1:
        others = sorted({s.reason for s in stuck[1:]})
        text += f"; {len(stuck) - 1} more pods cannot start ({', '.join(others)})"
    return text + "; pods retry on their own once the cause is fixed"


def running(pods: list[Obj]) -> bool:
    return any((p.get("status") or {}).get("phase") == c.POD_RUNNING for p in pods)


def pods_health(conds: list[Obj], blocked: list[Stuck], gen: int, now: str, *,
                what: str = "", finished: bool = False) -> list[Obj]:
    """PodsHealthy: False while a pod cannot start; present only once that happened (like
    Suspended), then True again when none is stuck or the job has ended."""
    if blocked:
        return set_condition(conds, CONDITION, False, blocked[0].reason,
                             describe(blocked, what), gen, now)
    if condition_status({"conditions": conds}, CONDITION) != "False":
        return conds
    if finished:
        return set_condition(conds, CONDITION, True, c.FINISHED_REASON,
                             "the job ended; no pods are left to start", gen, now)
    return set_condition(conds, CONDITION, True, c.PODS_STARTED_REASON,
                         "no planner or worker pod is stuck", gen, now)


def note(conds: list[Obj]) -> str:
    """For a failure message: why pods could not start, when that was the last word."""
    for cond in conds:
        if cond.get("type") == CONDITION and cond.get("status") == "False":
            return f"; before that, {cond.get('message')}"
    return ""


def events(old: Obj, new: Obj) -> list[tuple[str, str, str]]:
    """One Warning per change of why pods cannot start (not per pod, not per kubelet
    retry), one Normal when they all started."""
    reason, message = str(new.get("reason") or ""), str(new.get("message") or "")
    if new.get("status") == "False":
        if old.get("status") != "False" or old.get("reason") != reason:
            return [(c.EVENT_WARNING, reason, message)]
    elif (new.get("status") == "True" and old.get("status") == "False"
          and reason == c.PODS_STARTED_REASON):
        return [(c.EVENT_NORMAL, c.PODS_STARTED_REASON, message)]
    return []
