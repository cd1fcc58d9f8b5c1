"""Where a TranscriptionJob names its Kueue queue and priority, what the worker Job carries for
Kueue, and how the operator reads and steers a Workload (pure parts; the cluster tests in
tests/cluster/test_kueue.py run them against the real Kueue)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.transcription_jobs import tj_object
from whisperfleet_operator import conditions, kueue, spec
from whisperfleet_operator.builders import jobs
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.status import running_phase
from whisperfleet_runner.contract import PlanReport

SETTINGS = OperatorSettings()
PLAN = PlanReport(shards=4)
Obj = dict[str, Any]


def labelled(labels: dict[str, str], **fields: Any) -> spec.TranscriptionJob:
    obj = tj_object(**fields)
    obj["metadata"]["labels"] = labels
    return spec.parse(obj)


def workload(name: str, created: str, *conds: tuple[str, str, str],
             active: bool = True) -> Obj:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"active": active},
            "status": {"conditions": [{"type": t, "status": s, "message": m}
                                      for t, s, m in conds]}}


def test_the_queue_and_priority_labels_on_the_job_reach_the_worker_job() -> None:
    tj = labelled({kueue.LABEL_QUEUE: "gpu-batch", kueue.LABEL_PRIORITY_CLASS: "urgent"})
    assert (tj.queue_name, tj.priority_class) == ("gpu-batch", "urgent")
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    assert job["metadata"]["labels"][kueue.LABEL_QUEUE] == "gpu-batch"
    assert job["metadata"]["labels"][kueue.LABEL_PRIORITY_CLASS] == "urgent"
    assert job["metadata"]["annotations"][kueue.ANNOTATION_ELASTIC] == "true"
    assert job["spec"]["suspend"] is True  # Kueue admits it by unsuspending
    # Kueue's labels stay off the pods: Kueue and the Job controller own the pods' labels.
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not [k for k in pod_labels if k.startswith(kueue.GROUP)]
    planner = jobs.build_planner_job(tj, SETTINGS)
    assert kueue.LABEL_QUEUE not in planner["metadata"]["labels"]  # needs no GPU quota


def test_the_deprecated_queue_name_field_still_queues_and_must_agree_with_the_label() -> None:
    assert labelled({}, queueName="gpu-batch").queue_name == "gpu-batch"
    assert labelled({kueue.LABEL_QUEUE: "q"}, queueName="q").queue_name == "q"
    with pytest.raises(ValueError, match=r"name different queues; set only the label"):
        labelled({kueue.LABEL_QUEUE: "q"}, queueName="other")
    unqueued = jobs.build_worker_job(labelled({kueue.LABEL_PRIORITY_CLASS: "urgent"}), PLAN,
                                     SETTINGS)
    assert kueue.LABEL_PRIORITY_CLASS not in unqueued["metadata"]["labels"]
    assert kueue.ANNOTATION_ELASTIC not in (unqueued["metadata"].get("annotations") or {})


def test_a_queued_jobs_suspend_goes_to_its_workload_never_to_the_job() -> None:
    running = {"spec": {"parallelism": 2, "suspend": False}}
    tj = labelled({kueue.LABEL_QUEUE: "q"}, suspend=True, workers={"parallelism": 3})
    assert jobs.worker_job_drift(tj, True, running) == {"parallelism": 3}
    admitted = workload("w", "2026-01-01T00:00:00Z", ("Admitted", "True", "ok"))
    assert kueue.activation_patch(True, admitted) == {"spec": {"active": False}}
    assert kueue.activation_patch(False, admitted) == {}
    inactive = workload("w", "2026-01-01T00:00:00Z", active=False)
    assert kueue.activation_patch(False, inactive) == {"spec": {"active": True}}
    assert kueue.activation_patch(True, inactive) == {}
    assert kueue.activation_patch(True, None) == {}


def test_kueues_reason_comes_from_the_newest_unfinished_workload() -> None:
    old = workload("old", "2026-01-01T00:00:00Z", ("Finished", "True", "replaced"))
    pending = workload("new", "2026-01-01T00:01:00Z",
                       ("QuotaReserved", "False", "couldn't assign flavors: no quota"))
    assert kueue.current_workload([old, pending]) is pending
    assert kueue.current_workload([old]) is None
    assert kueue.waiting_reason(pending) == "couldn't assign flavors: no quota"
    evicted = workload("e", "2026-01-01T00:02:00Z", ("QuotaReserved", "False", "no quota"),
                       ("Evicted", "True", "Preempted to accommodate a workload"))
    assert kueue.waiting_reason(evicted) == "Preempted to accommodate a workload"
    assert kueue.waiting_reason(workload("a", "t", ("QuotaReserved", "True", "x"),
                                         ("Admitted", "True", "y"))) == ""
    assert kueue.waiting_reason(None) == ""


def test_a_suspended_worker_job_is_queued_only_when_kueue_holds_it() -> None:
    files, shards = {"failed": 0}, {"failed": 0, "succeeded": 0}
    held = {"spec": {"suspend": True}}
    assert running_phase(labelled({kueue.LABEL_QUEUE: "q"}), held, files, shards) == \
        conditions.QUEUED
    assert running_phase(labelled({}), held, files, shards) == conditions.PENDING
    assert running_phase(labelled({kueue.LABEL_QUEUE: "q"}, suspend=True), held, files,
                         shards) == conditions.SUSPENDED
