"""Pure status aggregation: Jobs + pods' termination messages -> TranscriptionJob status.

Nothing here talks to the API; handlers fetch the objects (kube.py) and hand them in as the
plain dicts the API returns. Every function returns new data and never mutates its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whisperfleet_runner.config import PlanReport, Reason

from . import conditions as c
from . import reports, stuck
from .conditions import condition_status, set_condition, true_condition
from .fold import fold, format_duration, parse_indexes
from .spec import TranscriptionJob

Obj = dict[str, Any]


def is_terminal(status: Obj | None) -> bool:
    return (status or {}).get("phase") in c.TERMINAL_PHASES


def is_planned(status: Obj | None) -> bool:
    return condition_status(status, c.PLANNED_CONDITION) == "True"


def operator_holds_suspension(status: Obj | None) -> bool:
    """The operator suspended the worker Job (spec.suspend), so it may lift it again."""
    return condition_status(status, c.SUSPENDED_CONDITION) == "True"


@dataclass(frozen=True)
class PlannerOutcome:
    state: str  # "running" | "succeeded" | "failed"
    plan: PlanReport | None = None
    reason: str = ""
    message: str = ""


def planner_outcome(job: Obj | None, pods: list[Obj]) -> PlannerOutcome:
    plan: PlanReport | None = None
    crashed: Obj | None = None  # the newest failed planner pod without a readable report
    for pod in reports.by_recency(pods):
        text = reports.termination_message(pod)
        plan = reports.parse_plan(text) if text else None
        if plan is not None:
            break
        if crashed is None and reports.failed(pod):
            crashed = pod
    failed = true_condition(job, c.JOB_FAILED)
    if plan is not None and plan.error_reason:
        return PlannerOutcome("failed", plan, plan.error_reason, plan.error_message)
    if failed is not None:
        message = str(failed.get("message") or "the planner Job failed")
        if plan is None and crashed is not None:
            message += (f"; planner pod {reports.pod_name(crashed)}: "
                        f"{reports.describe_failure(crashed)}")
        return PlannerOutcome("failed", plan,
                              str(failed.get("reason") or c.PLANNER_FAILED_REASON), message)
    if true_condition(job, c.JOB_COMPLETE) is not None:
        if plan is None:
            return PlannerOutcome("failed", None, c.PLAN_UNREADABLE_REASON,
                                  _unreadable_plan(pods))
        if plan.files == 0 or plan.shards == 0:
            return PlannerOutcome("failed", plan, Reason.NO_MATCHING_FILES.value,
                                  "the input holds no files matching spec.input.include")
        return PlannerOutcome("succeeded", plan)
    return PlannerOutcome("running")


def _unreadable_plan(pods: list[Obj]) -> str:
    if not pods:
        return ("the planner Job completed, but its pod (and the plan report in its "
                "termination message) is gone; delete and re-create the TranscriptionJob "
                "to plan again")
    pod = reports.by_recency(pods)[0]
    text = reports.termination_message(pod)
    what = f"left {reports.describe_failure(pod)}" if text else "left no termination message"
    return (f"the planner finished without a readable plan report: "
            f"pod {reports.pod_name(pod)} {what}")


def plan_from_status(status: Obj | None) -> PlanReport:
    """The plan as stored in status once Planned (the planner pod may be long gone)."""
    status = status or {}
    return PlanReport(
        files=int((status.get("files") or {}).get("total", 0)),
        shards=int((status.get("shards") or {}).get("total", 0)),
        manifest_uri=str(status.get("manifestUri") or ""),
    )


def _base(old: Obj, generation: int, now: str) -> tuple[Obj, list[Obj], int]:
    status: Obj = {"observedGeneration": generation, "startTime": old.get("startTime") or now}
    return status, list(old.get("conditions") or []), generation


def planning_status(job: TranscriptionJob, old: Obj, outcome: PlannerOutcome,
                    planner_job_name: str, now: str, pods: list[Obj] | None = None) -> Obj:
    """Status while planning, when the plan has just succeeded, or when it failed.
    `pods` are the planner's pods: one that cannot start is said loudly (PodsHealthy)."""
    status, conds, gen = _base(old, job.generation, now)
    suspended = job.suspend
    blocked = stuck.stuck_pods(pods or [])
    if outcome.state == "failed":
        status.update(phase=c.FAILED, completionTime=now)
        message = outcome.message + stuck.note(conds)
        conds = set_condition(conds, c.PLANNED_CONDITION, False, outcome.reason, message,
                              gen, now)
        conds = set_condition(conds, c.FAILED_CONDITION, True, outcome.reason, message, gen,
                              now)
        conds = stuck.pods_health(conds, [], gen, now, finished=True)
    elif outcome.state == "succeeded" and outcome.plan is not None:
        plan = outcome.plan
        status.update(
            phase=c.SUSPENDED if suspended else c.RUNNING,
            files={"total": plan.files, "succeeded": 0, "failed": 0, "skipped": 0},
            shards={"total": plan.shards, "succeeded": 0, "failed": 0, "active": 0},
            manifestUri=plan.manifest_uri,
        )
        msg = f"{plan.files} files in {plan.shards} shards"
        conds = set_condition(conds, c.PLANNED_CONDITION, True, c.PLANNED_REASON, msg, gen,
                              now)
        conds = stuck.pods_health(conds, [], gen, now)
    elif blocked:
        # The planner runs one pod at a time: stuck means planning cannot progress.
        status["phase"] = c.PLANNING
        conds = set_condition(conds, c.PLANNED_CONDITION, False, blocked[0].reason,
                              stuck.describe(blocked, "planner"), gen, now)
        conds = stuck.pods_health(conds, blocked, gen, now, what="planner")
    else:
        # The planner only lists storage (no GPU), so it runs even while suspended.
        status["phase"] = c.PLANNING
        msg = f"planner Job {planner_job_name} is listing the input"
        conds = set_condition(conds, c.PLANNED_CONDITION, False, c.PLANNING_REASON, msg, gen,
                              now)
        conds = stuck.pods_health(conds, [], gen, now)
    conds = _suspension(conds, suspended, gen, now)
    status["conditions"] = conds
    return status


def invalid_spec_status(old: Obj, generation: int, message: str, now: str,
                        reason: str = c.INVALID_SPEC_REASON) -> Obj:
    """A spec the builders (or the API server, reason JobRejected) refuse: Failed, with the
    message naming the field."""
    status, conds, gen = _base(old, generation, now)
    status.update(phase=c.FAILED, completionTime=now)
    if any(cond.get("type") == c.RUNNING_CONDITION for cond in conds):
        conds = set_condition(conds, c.RUNNING_CONDITION, False, c.FAILED, message, gen, now)
    conds = set_condition(conds, c.FAILED_CONDITION, True, reason, message, gen, now)
    status["conditions"] = conds
    return status


def worker_job_deleted_status(job: TranscriptionJob, old: Obj, job_name: str, now: str) -> Obj:
    """The worker Job vanished before the operator saw it finish: say so, re-run nothing."""
    manifest = str(old.get("manifestUri") or "")
    where = manifest.rsplit("/", 1)[0] if manifest else "the output's .whisperfleet folder"
    message = (
        f"the worker Job {job_name} was deleted before its outcome was recorded (by a user, "
        f"or by its TTL while the operator was away); the ledger under {where}/ledger holds "
        "every file's result; re-create the TranscriptionJob to transcribe what is missing "
        "(finished files are skipped unless spec.output.overwrite is true)")
    return invalid_spec_status(old, job.generation, message, now,
                               reason=c.WORKER_JOB_DELETED_REASON)


def _suspension(conds: list[Obj], suspended: bool, gen: int, now: str) -> list[Obj]:
    if suspended:
        return set_condition(conds, c.SUSPENDED_CONDITION, True, c.SUSPENDED_REASON,
                             "spec.suspend is true", gen, now)
    if any(cond.get("type") == c.SUSPENDED_CONDITION for cond in conds):
        return set_condition(conds, c.SUSPENDED_CONDITION, False, c.RESUMED_REASON,
                             "spec.suspend is false", gen, now)
    return conds


def summary(status: Obj) -> str:
    f = status.get("files") or {}
    hours = float(status.get("audioSeconds") or 0) / 3600
    return (f"{f.get('succeeded', 0)} of {f.get('total', 0)} files transcribed, "
            f"{f.get('skipped', 0)} skipped, {f.get('failed', 0)} failed; "
            f"{hours:.2f} h of audio")


def running_status(tj: TranscriptionJob, old: Obj, job: Obj, pods: list[Obj], now: str) -> Obj:
    """Aggregate the worker Job and its pods' shard reports into the status."""
    status, conds, gen = _base(old, tj.generation, now)
    plan = plan_from_status(old)
    js = job.get("status") or {}
    done = parse_indexes(js.get("completedIndexes"))
    failed_idx = parse_indexes(js.get("failedIndexes"))
    succeeded_shards = len(done) if "completedIndexes" in js else int(js.get("succeeded") or 0)
    folded = fold(old, plan, pods, done | failed_idx)
    files = folded["files"]
    shards = {"total": plan.shards, "succeeded": succeeded_shards,
              "failed": len(failed_idx), "active": int(js.get("active") or 0)}
    status.update(
        folded, shards=shards, filesSummary=f"{files['succeeded']}/{files['total']}",
        audioDuration=format_duration(folded["audioSeconds"]),
        jobName=str((job.get("metadata") or {}).get("name") or ""),
        manifestUri=plan.manifest_uri,
    )
    complete, failed = true_condition(job, c.JOB_COMPLETE), true_condition(job, c.JOB_FAILED)
    if complete is not None:
        partial = files["failed"] > 0 or shards["failed"] > 0
        phase = c.PARTIALLY_SUCCEEDED if partial else c.SUCCEEDED
    elif failed is not None:
        # FailedIndexes: every index ran to its end and the failed ones stayed within
        # maxFailedIndexes (the Job controller enforces spec.retries.maxFailedShards; it
        # stops early with MaxFailedIndexesExceeded otherwise). Bad media fails only its
        # index, so the other shards' transcripts are there: partly succeeded.
        partial = failed.get("reason") == c.JOB_FAILED_INDEXES and succeeded_shards > 0
        phase = c.PARTIALLY_SUCCEEDED if partial else c.FAILED
    elif tj.suspend:
        phase = c.SUSPENDED
    elif (job.get("spec") or {}).get("suspend"):
        phase = c.PENDING  # the Job waits for admission (Kueue unsuspends it)
    else:
        phase = c.RUNNING
    status["phase"] = phase
    text = summary(status)
    terminal = phase in c.TERMINAL_PHASES
    blocked = [] if terminal else stuck.stuck_pods(pods)
    running = c.RUNNING_CONDITION
    if terminal:
        status["completionTime"] = (js.get("completionTime") if complete else None) or now
        conds = set_condition(conds, running, False, phase, text, gen, now)
    elif phase == c.RUNNING and blocked and not stuck.running(pods):
        # Nothing runs and pods cannot start: the Job is "active" but nothing progresses.
        conds = set_condition(conds, running, False, blocked[0].reason,
                              f"{stuck.describe(blocked, 'worker')}; {text}", gen, now)
    elif phase == c.RUNNING:
        msg = (f"{succeeded_shards} of {plan.shards} shards done, {shards['active']} active; "
               f"{text}")
        if blocked:
            msg += f"; {len(blocked)} pods cannot start ({blocked[0].reason})"
        conds = set_condition(conds, running, True, c.SHARDS_RUNNING_REASON, msg, gen, now)
    elif phase == c.PENDING:
        why = (f"waiting for Kueue to admit the Job from queue {tj.queue_name}" if tj.queue_name
               else "the worker Job is suspended by another controller")
        conds = set_condition(conds, running, False, c.QUEUED_REASON, why, gen, now)
    else:
        conds = set_condition(conds, running, False, c.SUSPENDED_REASON,
                              "spec.suspend is true", gen, now)
    if phase in (c.SUCCEEDED, c.PARTIALLY_SUCCEEDED):
        conds = set_condition(conds, c.COMPLETE_CONDITION, True, phase, text, gen, now)
    if phase == c.FAILED and failed is not None:
        reason = str(failed.get("reason") or c.JOB_FAILED_REASON)
        message = str(failed.get("message") or "the worker Job failed") + stuck.note(conds)
        conds = set_condition(conds, c.FAILED_CONDITION, True, reason, f"{message}; {text}",
                              gen, now)
    conds = stuck.pods_health(conds, blocked, gen, now, what="worker", finished=terminal)
    status["conditions"] = _suspension(conds, tj.suspend and not terminal, gen, now)
    return status
