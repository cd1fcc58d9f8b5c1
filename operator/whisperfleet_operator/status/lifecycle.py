"""Where a TranscriptionJob stands, read from its status, and the statuses every step may
write: the common fields, suspension, a spec refused, a worker Job gone.

Everything in status/ is pure: the reconciler fetches the objects (kube.py) and hands them
in as the plain dicts the API returns; every function returns new data and never mutates
its input.
"""

from __future__ import annotations

from whisperfleet_operator import conditions as c
from whisperfleet_operator.conditions import condition_status, set_condition
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.spec import TranscriptionJob


def is_terminal(status: Obj | None) -> bool:
    return (status or {}).get("phase") in c.TERMINAL_PHASES


def is_planned(status: Obj | None) -> bool:
    return condition_status(status, c.PLANNED_CONDITION) == "True"


def operator_holds_suspension(status: Obj | None) -> bool:
    """The operator suspended the worker Job (spec.suspend), so it may lift it again."""
    return condition_status(status, c.SUSPENDED_CONDITION) == "True"


def base(old: Obj, generation: int, now: str) -> tuple[Obj, list[Obj], int]:
    """The fields every status write carries, the conditions so far, and the generation."""
    status: Obj = {"observedGeneration": generation, "startTime": old.get("startTime") or now}
    return status, list(old.get("conditions") or []), generation


def accepted_status(generation: int, now: str) -> Obj:
    """The first status of a new job, written before any other work so `kubectl get tj`
    answers at once, however many jobs arrive together: Pending, not planned yet."""
    status, conds, gen = base({}, generation, now)
    status["phase"] = c.PENDING
    status["conditions"] = set_condition(
        conds, c.PLANNED_CONDITION, False, c.ACCEPTED_REASON,
        "the operator accepted the job; the planner Job comes next", gen, now)
    return status


def invalid_spec_status(old: Obj, generation: int, message: str, now: str,
                        reason: str = c.INVALID_SPEC_REASON) -> Obj:
    """A spec the builders (or the API server, reason JobRejected) refuse: Failed, with the
    message naming the field."""
    status, conds, gen = base(old, generation, now)
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


def suspension(conds: list[Obj], suspended: bool, gen: int, now: str) -> list[Obj]:
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
