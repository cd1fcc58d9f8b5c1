"""TranscriptionJob status from its Jobs and their pods, pure (no API calls): `lifecycle`
(where a job stands; statuses any step writes), `planning` (the planner's outcome), `running`
(the worker Job: counts, phase, conditions); below them `fold` (each finished shard's report
counted once), `reports` (termination messages), `stuck` (pods that cannot start) and
`events` (the Events a status change posts)."""

from whisperfleet_operator.status.lifecycle import (
    accepted_status,
    base,
    invalid_spec_status,
    is_planned,
    is_terminal,
    operator_holds_suspension,
    summary,
    suspension,
    worker_job_deleted_status,
)
from whisperfleet_operator.status.planning import (
    PlannerOutcome,
    plan_from_status,
    planner_outcome,
    planning_status,
)
from whisperfleet_operator.status.running import (
    running_conditions,
    running_phase,
    running_status,
)

__all__ = [
    "PlannerOutcome",
    "accepted_status",
    "base",
    "invalid_spec_status",
    "is_planned",
    "is_terminal",
    "operator_holds_suspension",
    "plan_from_status",
    "planner_outcome",
    "planning_status",
    "running_conditions",
    "running_phase",
    "running_status",
    "summary",
    "suspension",
    "worker_job_deleted_status",
]
