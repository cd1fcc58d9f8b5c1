"""Status while the worker Job runs and once it ends: the shards' reports folded into counts,
the phase, and the conditions that explain it."""

from __future__ import annotations

from whisperfleet_operator import conditions as c
from whisperfleet_operator.conditions import set_condition, true_condition
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_operator.status import reports, stuck
from whisperfleet_operator.status.fold import fold, format_duration, parse_indexes
from whisperfleet_operator.status.lifecycle import base, summary, suspension
from whisperfleet_operator.status.planning import plan_from_status


def running_status(tj: TranscriptionJob, old: Obj, job: Obj, pods: list[Obj], now: str,
                   kueue_says: str = "") -> Obj:
    """Aggregate the worker Job and its pods' shard reports into the status. `kueue_says`:
    why Kueue has not admitted the Job (its Workload's words), for a queued job."""
    status, conds, gen = base(old, tj.generation, now)
    plan = plan_from_status(old)
    js = job.get("status") or {}
    done = parse_indexes(js.get("completedIndexes"))
    failed_idx = parse_indexes(js.get("failedIndexes"))
    succeeded_shards = len(done) if "completedIndexes" in js else int(js.get("succeeded") or 0)
    final = done | failed_idx
    if true_condition(job, c.JOB_FAILED) is not None:
        # A rule that fails the whole Job (FailJob: a bad work order, a model not found)
        # marks no index failed; the pods that ended it hold the reason in their reports.
        final |= {i for i in (reports.completion_index(p) for p in pods if reports.failed(p))
                  if i is not None}
    folded = fold(old, plan, pods, final)
    files = folded["files"]
    shards = {"total": plan.shards, "succeeded": succeeded_shards,
              "failed": len(failed_idx), "active": int(js.get("active") or 0)}
    status.update(
        folded, shards=shards, filesSummary=f"{files['succeeded']}/{files['total']}",
        audioDuration=format_duration(folded["audioSeconds"]),
        jobName=str((job.get("metadata") or {}).get("name") or ""),
        manifestUri=plan.manifest_uri,
    )
    status["phase"] = phase = running_phase(tj, job, files, shards)
    if phase in c.TERMINAL_PHASES:
        complete = true_condition(job, c.JOB_COMPLETE) is not None
        status["completionTime"] = (js.get("completionTime") if complete else None) or now
    status["conditions"] = running_conditions(tj, job, pods, conds, status, gen, now,
                                              kueue_says)
    return status


def running_phase(tj: TranscriptionJob, job: Obj, files: Obj, shards: Obj) -> str:
    """The phase, from the worker Job's conditions and what its shards did."""
    if true_condition(job, c.JOB_COMPLETE) is not None:
        partial = files["failed"] > 0 or shards["failed"] > 0
        return c.PARTIALLY_SUCCEEDED if partial else c.SUCCEEDED
    failed = true_condition(job, c.JOB_FAILED)
    if failed is not None:
        # FailedIndexes: every index ran to its end and the failed ones stayed within
        # maxFailedIndexes (the Job controller enforces spec.retries.maxFailedShards; it
        # stops early with MaxFailedIndexesExceeded otherwise). Bad media fails only its
        # index, so the other shards' transcripts are there: partly succeeded.
        partial = failed.get("reason") == c.JOB_FAILED_INDEXES and shards["succeeded"] > 0
        return c.PARTIALLY_SUCCEEDED if partial else c.FAILED
    if tj.suspend:
        return c.SUSPENDED
    if (job.get("spec") or {}).get("suspend"):
        # Queued: it waits for Kueue to admit it (again, after a preemption); otherwise
        # another controller holds it.
        return c.QUEUED if tj.queue_name else c.PENDING
    return c.RUNNING


def running_conditions(tj: TranscriptionJob, job: Obj, pods: list[Obj], conds: list[Obj],
                       status: Obj, gen: int, now: str, kueue_says: str = "") -> list[Obj]:
    """The conditions that go with `status["phase"]`: Running (or why not), Complete,
    Failed, PodsHealthy and Suspended."""
    phase, shards = status["phase"], status["shards"]
    text = summary(status)
    terminal = phase in c.TERMINAL_PHASES
    blocked = [] if terminal else stuck.stuck_pods(pods)
    running = c.RUNNING_CONDITION
    if terminal:
        conds = set_condition(conds, running, False, phase, text, gen, now)
    elif phase == c.RUNNING and blocked and not stuck.running(pods):
        # Nothing runs and pods cannot start: the Job is "active" but nothing progresses.
        conds = set_condition(conds, running, False, blocked[0].reason,
                              f"{stuck.describe(blocked, 'worker')}; {text}", gen, now)
    elif phase == c.RUNNING:
        msg = (f"{shards['succeeded']} of {shards['total']} shards done, "
               f"{shards['active']} active; {text}")
        if blocked:
            msg += f"; {len(blocked)} pods cannot start ({blocked[0].reason})"
        conds = set_condition(conds, running, True, c.SHARDS_RUNNING_REASON, msg, gen, now)
    elif phase in (c.QUEUED, c.PENDING):
        why = (f"waiting for Kueue to admit the Job from queue {tj.queue_name}" if tj.queue_name
               else "the worker Job is suspended by another controller")
        if kueue_says:
            why += f": {kueue_says}"
        conds = set_condition(conds, running, False, c.QUEUED_REASON, why, gen, now)
    else:
        conds = set_condition(conds, running, False, c.SUSPENDED_REASON,
                              "spec.suspend is true", gen, now)
    # Complete only when every file succeeded, so `kubectl wait --for=condition=Complete`
    # does not pass over failed files; a partial success has its own condition.
    if phase == c.SUCCEEDED:
        conds = set_condition(conds, c.COMPLETE_CONDITION, True, phase, text, gen, now)
    elif phase == c.PARTIALLY_SUCCEEDED:
        conds = set_condition(conds, c.PARTIALLY_SUCCEEDED_CONDITION, True, phase, text, gen,
                              now)
    failed = true_condition(job, c.JOB_FAILED)
    if phase == c.FAILED and failed is not None:
        reason = str(failed.get("reason") or c.JOB_FAILED_REASON)
        message = str(failed.get("message") or "the worker Job failed") + stuck.note(conds)
        conds = set_condition(conds, c.FAILED_CONDITION, True, reason, f"{message}; {text}",
                              gen, now)
    conds = stuck.pods_health(conds, blocked, gen, now, what="worker", finished=terminal)
    return suspension(conds, tj.suspend and not terminal, gen, now)
