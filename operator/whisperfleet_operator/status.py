"""Pure status aggregation: Jobs + pods' termination messages -> TranscriptionJob status.

Nothing here talks to the API; handlers fetch the objects (kube.py) and hand them in as the
plain dicts the API returns. Every function returns new data and never mutates its input.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from whisperfleet_runner.config import PlanReport, ShardReport

logger = logging.getLogger(__name__)

PENDING, PLANNING, RUNNING, SUSPENDED = "Pending", "Planning", "Running", "Suspended"
SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED = "Succeeded", "PartiallySucceeded", "Failed"
TERMINAL_PHASES = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED})
CONDITION_TYPES = ("Planned", "Running", "Complete", "Failed", "Suspended")
MAX_FAILURES = 20
MAX_WORKERS = 32  # status must stay small: one entry per finished shard pod, newest first


Obj = dict[str, Any]


def is_terminal(status: Obj | None) -> bool:
    return (status or {}).get("phase") in TERMINAL_PHASES


def is_planned(status: Obj | None) -> bool:
    return condition_status(status, "Planned") == "True"


def condition_status(status: Obj | None, type_: str) -> str | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def format_duration(seconds: float) -> str:
    """The two largest units of d/h/m/s: "45s", "12m30s", "3h05m", "2d04h"."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


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


def parse_indexes(text: str | None) -> set[int]:
    """Kubernetes' index set notation, e.g. "1,3-5,7" -> {1, 3, 4, 5, 7}."""
    result: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        result.update(range(int(lo), int(hi or lo) + 1))
    return result


def job_condition(job: Obj | None, type_: str) -> Obj | None:
    """The Job's condition of this type when it is True (Complete, Failed, Suspended …)."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def termination_message(pod: Obj) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        message = (((cs.get("state") or {}).get("terminated")) or {}).get("message")
        if message:
            return str(message)
    return ""


def _finished_at(pod: Obj) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        done = ((cs.get("state") or {}).get("terminated")) or {}
        if done.get("finishedAt"):
            return str(done["finishedAt"])
    return ""


def _by_recency(pods: list[Obj]) -> list[Obj]:
    """Succeeded pods first, then newest first: a retried shard's last word wins."""
    ordered = sorted(pods, key=_finished_at, reverse=True)
    return sorted(ordered, key=lambda p: (p.get("status") or {}).get("phase") != "Succeeded")


@dataclass(frozen=True)
class PlannerOutcome:
    state: str  # "running" | "succeeded" | "failed"
    plan: PlanReport | None = None
    reason: str = ""
    message: str = ""


def planner_outcome(job: Obj | None, pods: list[Obj]) -> PlannerOutcome:
    plan: PlanReport | None = None
    for pod in _by_recency(pods):
        text = termination_message(pod)
        if not text:
            continue
        try:
            plan = PlanReport.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("planner pod %s left an unreadable report: %s",
                           (pod.get("metadata") or {}).get("name"), exc)
            continue
        break
    failed = job_condition(job, "Failed")
    if plan is not None and plan.error_reason:
        return PlannerOutcome("failed", plan, plan.error_reason, plan.error_message)
    if failed is not None:
        return PlannerOutcome("failed", plan, str(failed.get("reason") or "PlannerFailed"),
                              str(failed.get("message") or "the planner Job failed"))
    if job_condition(job, "Complete") is not None:
        if plan is None:
            return PlannerOutcome("failed", None, "PlanUnreadable",
                                  "the planner finished without a readable plan report")
        if plan.files == 0 or plan.shards == 0:
            return PlannerOutcome("failed", plan, "NoMatchingFiles",
                                  "the input holds no files matching spec.input.include")
        return PlannerOutcome("succeeded", plan)
    return PlannerOutcome("running")


def plan_from_status(status: Obj | None) -> PlanReport:
    """The plan as stored in status once Planned (the planner pod may be long gone)."""
    status = status or {}
    return PlanReport(
        files=int((status.get("files") or {}).get("total", 0)),
        shards=int((status.get("shards") or {}).get("total", 0)),
        manifest_uri=str(status.get("manifestUri") or ""),
    )


def _base(tj: Obj, now: str) -> tuple[Obj, list[Obj], int]:
    old = tj.get("status") or {}
    generation = int((tj.get("metadata") or {}).get("generation") or 0)
    status: Obj = {"observedGeneration": generation, "startTime": old.get("startTime") or now}
    return status, list(old.get("conditions") or []), generation


def planning_status(tj: Obj, outcome: PlannerOutcome, planner_job_name: str, now: str) -> Obj:
    """Status while planning, when the plan has just succeeded, or when it failed."""
    status, conds, gen = _base(tj, now)
    suspended = bool((tj.get("spec") or {}).get("suspend"))
    if outcome.state == "failed":
        status.update(phase=FAILED, completionTime=now)
        conds = set_condition(conds, "Planned", False, outcome.reason, outcome.message, gen, now)
        conds = set_condition(conds, "Failed", True, outcome.reason, outcome.message, gen, now)
    elif outcome.state == "succeeded" and outcome.plan is not None:
        plan = outcome.plan
        status.update(
            phase=SUSPENDED if suspended else RUNNING,
            files={"total": plan.files, "succeeded": 0, "failed": 0, "skipped": 0},
            shards={"total": plan.shards, "succeeded": 0, "failed": 0, "active": 0},
            manifestUri=plan.manifest_uri,
        )
        msg = f"{plan.files} files in {plan.shards} shards"
        conds = set_condition(conds, "Planned", True, "Planned", msg, gen, now)
    else:
        # The planner only lists storage (no GPU), so it runs even while suspended.
        status["phase"] = PLANNING
        msg = f"planner Job {planner_job_name} is listing the input"
        conds = set_condition(conds, "Planned", False, "Planning", msg, gen, now)
    conds = _suspension(conds, suspended, gen, now)
    status["conditions"] = conds
    return status


def invalid_spec_status(tj: Obj, message: str, now: str) -> Obj:
    """A spec the builders refuse (admission should have): Failed, naming the field."""
    status, conds, gen = _base(tj, now)
    status.update(phase=FAILED, completionTime=now)
    conds = set_condition(conds, "Failed", True, "InvalidSpec", message, gen, now)
    status["conditions"] = conds
    return status


def _suspension(conds: list[Obj], suspended: bool, gen: int, now: str) -> list[Obj]:
    if suspended:
        return set_condition(conds, "Suspended", True, "Suspended", "spec.suspend is true",
                             gen, now)
    if any(c.get("type") == "Suspended" for c in conds):
        return set_condition(conds, "Suspended", False, "Resumed", "spec.suspend is false",
                             gen, now)
    return conds


def _completion_index(pod: Obj, report: ShardReport) -> int:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    value = annotations.get("batch.kubernetes.io/job-completion-index")
    return int(value) if value not in (None, "") else report.shard


def shard_reports(pods: list[Obj]) -> list[tuple[ShardReport, Obj]]:
    """One report per shard index (the succeeded pod's, else the newest), newest first."""
    chosen: dict[int, tuple[ShardReport, Obj]] = {}
    for pod in _by_recency(pods):
        text = termination_message(pod)
        if not text:
            continue
        try:
            report = ShardReport.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("worker pod %s left an unreadable report: %s",
                           (pod.get("metadata") or {}).get("name"), exc)
            continue
        chosen.setdefault(_completion_index(pod, report), (report, pod))
    return sorted(chosen.values(), key=lambda rp: _finished_at(rp[1]), reverse=True)


def _worker_entry(report: ShardReport, pod: Obj) -> Obj:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return {
        "pod": report.pod or str(meta.get("name") or ""),
        "node": report.node or str(spec.get("nodeName") or ""),
        "gpus": [{"uuid": g.uuid, "name": g.name, "memoryMiB": g.memory_mib,
                  "deviceIndex": g.device_index} for g in report.gpus],
    }


def _failures(reports: list[tuple[ShardReport, Obj]]) -> list[Obj]:
    out: list[Obj] = []
    for report, _pod in reports:
        if report.error_reason:
            out.append({"uri": f"shard {report.shard}",
                        "reason": f"{report.error_reason}: {report.error_message}".strip()})
        out.extend({"uri": f.uri, "reason": f.reason} for f in report.failures)
    return out[:MAX_FAILURES]


def summary(status: Obj) -> str:
    f = status.get("files") or {}
    hours = float(status.get("audioSeconds") or 0) / 3600
    return (f"{f.get('succeeded', 0)} of {f.get('total', 0)} files transcribed, "
            f"{f.get('skipped', 0)} skipped, {f.get('failed', 0)} failed; "
            f"{hours:.2f} h of audio")


def running_status(tj: Obj, job: Obj, pods: list[Obj], now: str) -> Obj:
    """Aggregate the worker Job and its pods' shard reports into the status."""
    status, conds, gen = _base(tj, now)
    spec = tj.get("spec") or {}
    plan = plan_from_status(tj.get("status"))
    js = job.get("status") or {}
    done = parse_indexes(js.get("completedIndexes"))
    failed_idx = parse_indexes(js.get("failedIndexes"))
    succeeded_shards = len(done) if "completedIndexes" in js else int(js.get("succeeded") or 0)
    reports = shard_reports(pods)
    files = {"total": plan.files,
             "succeeded": sum(r.succeeded for r, _ in reports),
             "failed": sum(r.failed for r, _ in reports),
             "skipped": sum(r.skipped for r, _ in reports)}
    shards = {"total": plan.shards, "succeeded": succeeded_shards,
              "failed": len(failed_idx), "active": int(js.get("active") or 0)}
    status.update(
        files=files, shards=shards, filesSummary=f"{files['succeeded']}/{files['total']}",
        audioSeconds=round(sum(r.audio_seconds for r, _ in reports), 2),
        audioDuration=format_duration(sum(r.audio_seconds for r, _ in reports)),
        workers=[_worker_entry(r, p) for r, p in reports][:MAX_WORKERS],
        failures=_failures(reports), jobName=str((job.get("metadata") or {}).get("name") or ""),
        manifestUri=plan.manifest_uri,
    )
    complete, failed = job_condition(job, "Complete"), job_condition(job, "Failed")
    if complete is not None:
        partial = files["failed"] > 0 or shards["failed"] > 0
        phase = PARTIALLY_SUCCEEDED if partial else SUCCEEDED
    elif failed is not None:
        # FailedIndexes: every index ran to its end and the failed ones stayed within
        # maxFailedIndexes (the Job controller enforces spec.retries.maxFailedShards; it
        # stops early with MaxFailedIndexesExceeded otherwise). Bad media fails only its
        # index, so the other shards' transcripts are there: partly succeeded.
        partial = failed.get("reason") == "FailedIndexes" and succeeded_shards > 0
        phase = PARTIALLY_SUCCEEDED if partial else FAILED
    elif spec.get("suspend"):
        phase = SUSPENDED
    elif (job.get("spec") or {}).get("suspend"):
        phase = PENDING  # the Job waits for admission (Kueue unsuspends it)
    else:
        phase = RUNNING
    status["phase"] = phase
    text = summary(status)
    if phase in TERMINAL_PHASES:
        status["completionTime"] = (js.get("completionTime") if complete else None) or now
        conds = set_condition(conds, "Running", False, phase, text, gen, now)
    elif phase == RUNNING:
        msg = (f"{succeeded_shards} of {plan.shards} shards done, {shards['active']} active; "
               f"{text}")
        conds = set_condition(conds, "Running", True, "ShardsRunning", msg, gen, now)
    elif phase == PENDING:
        queue = spec.get("queueName") or ""
        why = f"waiting for Kueue to admit the Job from queue {queue}" if queue else (
            "the worker Job is suspended by another controller")
        conds = set_condition(conds, "Running", False, "Queued", why, gen, now)
    else:
        conds = set_condition(conds, "Running", False, "Suspended", "spec.suspend is true",
                              gen, now)
    if phase in (SUCCEEDED, PARTIALLY_SUCCEEDED):
        conds = set_condition(conds, "Complete", True, phase, text, gen, now)
    if phase == FAILED and failed is not None:
        reason = str(failed.get("reason") or "JobFailed")
        message = str(failed.get("message") or "the worker Job failed")
        conds = set_condition(conds, "Failed", True, reason, f"{message}; {text}", gen, now)
    status["conditions"] = _suspension(conds, bool(spec.get("suspend")) and
                                       phase not in TERMINAL_PHASES, gen, now)
    return status


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
    if not is_planned(old) and is_planned(new):
        events.append(("Normal", "Planned", str(_condition(new, "Planned").get("message"))))
    if before == after:
        return events
    if after == PLANNING:
        events.append(("Normal", "Planning", str(_condition(new, "Planned").get("message"))))
    elif after == RUNNING:
        reason = "Resumed" if before == SUSPENDED else "Running"
        events.append(("Normal", reason, f"worker Job {new.get('jobName', '')} is running"))
    elif after == SUSPENDED:
        events.append(("Normal", "Suspended", "spec.suspend is true; Jobs are suspended"))
    elif after == SUCCEEDED:
        events.append(("Normal", SUCCEEDED, summary(new)))
    elif after == PARTIALLY_SUCCEEDED:
        events.append(("Warning", PARTIALLY_SUCCEEDED, summary(new)))
    elif after == FAILED:
        cond = _condition(new, "Failed")
        events.append(("Warning", str(cond.get("reason") or FAILED),
                       str(cond.get("message") or "failed")))
    return events
