"""What the operator knows of Kueue: its labels and annotation, and its Workload read and
steered the way Kueue honours (pure functions; the API calls are kube's).

Kueue admits a worker Job through the Workload it makes for it. Two of the job's controls
go through Kueue, not around it:
- suspend: Kueue unsuspends every suspended Job whose Workload is admitted, so suspending
  an admitted job sets the Workload's `spec.active: false` (Kueue evicts it, suspends the
  Job and frees its quota); resuming sets it back to true and the Job queues again.
- scale: a new parallelism on an admitted Job no longer matches its Workload, and Kueue
  stops and requeues it. A queued Job is therefore made an elastic Job (annotation
  `kueue.x-k8s.io/elastic-job`, Kueue's ElasticJobsViaWorkloadSlices feature): Kueue then
  admits the change as a new slice of the Workload, and the running pods carry on.
"""

from __future__ import annotations

from whisperfleet_operator.conditions import true_condition
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.spec import KUEUE_PRIORITY_LABEL, KUEUE_QUEUE_LABEL

GROUP = "kueue.x-k8s.io"
LABEL_QUEUE = KUEUE_QUEUE_LABEL
LABEL_PRIORITY_CLASS = KUEUE_PRIORITY_LABEL
ANNOTATION_ELASTIC = f"{GROUP}/elastic-job"
# On every Workload of a Job: the Job's uid (Kueue's controller constant JobUIDLabel).
LABEL_JOB_UID = f"{GROUP}/job-uid"
WORKLOADS = (GROUP, "v1beta2", "workloads")

# Said while a job waits in a cluster whose API server serves no Workloads.
NOT_INSTALLED = (f"the API server serves no {WORKLOADS[2]}.{GROUP}/{WORKLOADS[1]}: "
                 "is Kueue (v0.17 or newer) installed?")
QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
FINISHED = "Finished"


def current_workload(workloads: list[Obj]) -> Obj | None:
    """The Workload that stands for the Job now: with elastic Jobs a scale makes a new slice
    and finishes the one it replaces, so the newest unfinished one."""
    live = [w for w in workloads if true_condition(w, FINISHED) is None]
    if not live:
        return None
    return max(live, key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp")))


def waiting_reason(workload: Obj | None) -> str:
    """Why Kueue has not admitted the Job, in Kueue's words ("" when it has not said)."""
    if workload is None:
        return ""
    for kind in (EVICTED, QUOTA_RESERVED, ADMITTED):
        found = next((c for c in (workload.get("status") or {}).get("conditions") or []
                      if c.get("type") == kind), None)
        if found is None:
            continue
        if kind == EVICTED and found.get("status") != "True":
            continue
        if kind != EVICTED and found.get("status") == "True":
            continue
        return str(found.get("message") or found.get("reason") or "")
    return ""


def activation_patch(suspend: bool, workload: Obj | None) -> Obj:
    """The merge patch that makes the Workload's `spec.active` follow spec.suspend ({} when
    it does already, or there is no Workload yet)."""
    if workload is None:
        return {}
    active = bool((workload.get("spec") or {}).get("active", True))
    return {} if active != suspend else {"spec": {"active": not suspend}}
