"""What planner and worker pods leave behind: their reports and how they ended (pure).

A pod's termination message is normally the runner's JSON report (`PlanReport`,
`ShardReport`). With `terminationMessagePolicy: FallbackToLogsOnError` it is the tail of the
container log when the runner died before writing one (OOM kill, missing library, segfault),
and a pod object may hold anything at all. None of that may crash the operator: a message that
is not a well-typed report parses to None, and a failed pod without a report is described by
its exit state and log tail instead, so the user still learns why.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from whisperfleet_operator.conditions import POD_FAILED, POD_SUCCEEDED
from whisperfleet_operator.objects import Obj
from whisperfleet_runner.contract import PlanReport, ShardReport

logger = logging.getLogger(__name__)

TAIL_CHARS = 400  # of a log tail quoted in status: enough for the last error line or two
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
# What json.loads and the report constructors raise on input of the wrong shape.
_BAD_SHAPE = (ValueError, TypeError, KeyError, AttributeError, RecursionError)


def _terminated(pod: Obj) -> Obj:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        done = ((cs.get("state") or {}).get("terminated")) or {}
        if done:
            return dict(done)
    return {}


def termination_message(pod: Obj) -> str:
    return str(_terminated(pod).get("message") or "")


def finished_at(pod: Obj) -> str:
    return str(_terminated(pod).get("finishedAt") or "")


def pod_name(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def succeeded(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == POD_SUCCEEDED


def failed(pod: Obj) -> bool:
    """The pod's runner ended unsuccessfully (the pod may still be shutting down)."""
    if (pod.get("status") or {}).get("phase") == POD_FAILED:
        return True
    code = _terminated(pod).get("exitCode")
    return isinstance(code, int) and code != 0


def by_recency(pods: list[Obj]) -> list[Obj]:
    """Succeeded pods first, then newest first: a retried shard's last word wins."""
    ordered = sorted(pods, key=finished_at, reverse=True)
    return sorted(ordered, key=lambda p: not succeeded(p))


def completion_index(pod: Obj) -> int | None:
    """The Indexed Job completion index the Job controller put on the pod, if readable."""
    meta = pod.get("metadata") or {}
    for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
        value = str(source.get(INDEX_KEY) or "")
        if value.isdigit():
            return int(value)
    return None


def _tail(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= TAIL_CHARS else "…" + flat[-TAIL_CHARS:]


def describe_failure(pod: Obj) -> str:
    """E.g. "OOMKilled (exit code 137): <log tail>" for a pod that left no report."""
    done = _terminated(pod)
    reason = str(done.get("reason") or (pod.get("status") or {}).get("reason") or "Error")
    code = done.get("exitCode")
    head = f"{reason} (exit code {code})" if code is not None else reason
    text = termination_message(pod) or str((pod.get("status") or {}).get("message") or "")
    return f"{head}: {_tail(text)}" if text.strip() else f"{head}, no report and no log output"


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _strings(*values: Any) -> bool:
    return all(isinstance(v, str) for v in values)


def parse_plan(text: str) -> PlanReport | None:
    try:
        plan = PlanReport.from_json(text)
    except _BAD_SHAPE:
        return None
    if not (all(_count(v) for v in (plan.files, plan.bytes, plan.shards))
            and _strings(plan.manifest_uri, plan.error_reason, plan.error_message)):
        return None
    return plan


def parse_shard(text: str) -> ShardReport | None:
    try:
        report = ShardReport.from_json(text)
    except _BAD_SHAPE:
        return None
    counts = (report.shard, report.total, report.succeeded, report.failed, report.skipped,
              report.bad_input, report.partial)
    ok = (all(_count(v) for v in counts)
          and _seconds(report.audio_seconds) and _seconds(report.wall_seconds)
          and _strings(report.device, report.node, report.pod, report.error_reason,
                       report.error_message)
          and all(_strings(g.uuid, g.name) and isinstance(g.memory_mib, int)
                  and isinstance(g.device_index, int) for g in report.gpus)
          and all(_strings(f.uri, f.reason) for f in [*report.failures, *report.partial_files]))
    return report if ok else None


def by_shard(pods: list[Obj]) -> tuple[dict[int, tuple[ShardReport, Obj]], dict[int, Obj]]:
    """({index: its newest readable report, a succeeded pod's first}, {index: its newest
    failed pod, for indexes with no readable report and no succeeded pod})."""
    chosen: dict[int, tuple[ShardReport, Obj]] = {}
    unreadable: dict[int, Obj] = {}
    done: set[int] = set()
    for pod in by_recency(pods):
        text = termination_message(pod)
        report = parse_shard(text) if text else None
        key = completion_index(pod)
        if key is None and report is not None:
            key = report.shard
        if key is None:
            continue  # not an Indexed Job's pod, and nothing says which shard it ran
        if succeeded(pod):
            done.add(key)
        if report is not None:
            chosen.setdefault(key, (report, pod))
        elif failed(pod) and key not in done and key not in chosen and key not in unreadable:
            if text:
                logger.warning("worker pod %s left no readable report", pod_name(pod))
            unreadable[key] = pod
    for key in chosen:
        unreadable.pop(key, None)
    return chosen, unreadable
