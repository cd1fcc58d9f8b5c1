"""Status while the planner runs, and once its plan is read (or it failed)."""

from __future__ import annotations

from dataclasses import dataclass

from whisperfleet_operator import conditions as c
from whisperfleet_operator.conditions import set_condition, true_condition
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_operator.status import reports, stuck
from whisperfleet_operator.status.lifecycle import base, suspension
from whisperfleet_runner.contract import PlanReport, Reason


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


def planning_status(job: TranscriptionJob, old: Obj, outcome: PlannerOutcome,
                    planner_job_name: str, now: str, pods: list[Obj] | None = None) -> Obj:
    """Status while planning, when the plan has just succeeded, or when it failed.
    `pods` are the planner's pods: one that cannot start is said loudly (PodsHealthy)."""
    status, conds, gen = base(old, job.generation, now)
    # What the pods load, resolved (spec.model.uri, or the default when spec names none):
    # the Model column of `kubectl get tj -o wide` reads it.
    status["model"] = job.model.name
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
    conds = suspension(conds, suspended, gen, now)
    status["conditions"] = conds
    return status
