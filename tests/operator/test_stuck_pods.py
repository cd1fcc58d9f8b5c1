"""Pods that cannot start: what `kubectl describe tj` says about them (pure status code)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.transcription_jobs import parsed
from whisperfleet_operator import naming
from whisperfleet_operator import status as st
from whisperfleet_operator.builders import jobs
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_operator.status import events, stuck
from whisperfleet_runner.contract import PlanReport

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
SECRET_MSG = 'secret "s3-credentials" not found'
UNSCHEDULABLE_MSG = ("0/3 nodes are available: 3 node(s) didn't match Pod's node "
                     "affinity/selector. preemption: 0/3 nodes are available")
Obj = dict[str, Any]


def tj(status: Obj | None = None, **spec: Any) -> tuple[TranscriptionJob, Obj]:
    """(the parsed TranscriptionJob, its current status), as the status functions take them."""
    return parsed(name="talks", uid="u-1", generation=1, **spec), status or {}


def waiting(name: str, reason: str, message: str = "") -> Obj:
    return {"metadata": {"name": name}, "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "runner", "ready": False, "state": {
            "waiting": {"reason": reason, "message": message}}}]}}


def unschedulable(name: str) -> Obj:
    return {"metadata": {"name": name}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": UNSCHEDULABLE_MSG}]}}


def started(name: str) -> Obj:
    return {"metadata": {"name": name}, "status": {"phase": "Running", "containerStatuses": [
        {"name": "runner", "state": {"running": {"startedAt": NOW}}}]}}


def cond(status: Obj, type_: str) -> Obj:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def planning(pods: list[Obj], old: Obj | None = None, now: str = NOW) -> Obj:
    return st.planning_status(*tj(old), st.PlannerOutcome("running"), "talks-plan-abc", now,
                              pods)


def running(pods: list[Obj], old: Obj | None = None, job: Obj | None = None) -> Obj:
    planned = st.planning_status(*tj(), st.PlannerOutcome("succeeded", PlanReport(
        files=8, shards=4, manifest_uri="s3://b/out/m.jsonl")), "talks-plan-abc", NOW)
    base = {**planned, **(old or {})}
    job = job or {"metadata": {"name": "talks-work-abc"}, "status": {"active": 2}}
    return st.running_status(*tj(base), job, pods, NOW)


# --- classifying one pod ------------------------------------------------------------------


@pytest.mark.parametrize(("pod", "reason", "quoted"), [
    (waiting("p", "CreateContainerConfigError", SECRET_MSG), "SecretNotFound", SECRET_MSG),
    (waiting("p", "CreateContainerConfigError",
             "couldn't find key AWS_REGION in ConfigMap media/cfg"),
     "CreateContainerConfigError", "couldn't find key AWS_REGION"),
    (waiting("p", "ErrImagePull", 'failed to pull image "runner:nope": not found'),
     "ImagePullBackOff", "ErrImagePull: failed to pull"),
    (waiting("p", "ImagePullBackOff", 'Back-off pulling image "runner:nope"'),
     "ImagePullBackOff", 'Back-off pulling image "runner:nope"'),
    (waiting("p", "InvalidImageName", 'Failed to apply default image tag "Bad Image"'),
     "InvalidImageName", "Bad Image"),
    (unschedulable("p"), "Unschedulable", "didn't match Pod's node affinity"),
])
def test_a_pod_that_cannot_start_is_named_with_the_kubelets_words(
    pod: Obj, reason: str, quoted: str,
) -> None:
    found = stuck.why_stuck(pod)
    assert found is not None
    assert (found.pod, found.reason) == ("p", reason)
    assert quoted in found.message


@pytest.mark.parametrize("pod", [
    waiting("p", "ContainerCreating"),  # normal progress, however slow
    {"metadata": {"name": "p"}, "status": {"phase": "Pending"}},  # not yet seen by scheduler
    started("p"),
    {**waiting("p", "ImagePullBackOff"), "metadata": {"name": "p", "deletionTimestamp": NOW}},
    {"metadata": {"name": "p"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "runner", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}},
])
def test_pods_making_progress_or_finished_are_not_stuck(pod: Obj) -> None:
    assert stuck.why_stuck(pod) is None


def test_the_cause_to_fix_first_leads_and_the_others_are_counted() -> None:
    found = stuck.stuck_pods([unschedulable("w-b"), waiting("w-c", "ImagePullBackOff"),
                              waiting("w-a", "CreateContainerConfigError", SECRET_MSG)])
    assert [s.reason for s in found] == ["SecretNotFound", "ImagePullBackOff", "Unschedulable"]
    text = stuck.describe(found, "worker")
    assert text.startswith(f"worker pod w-a cannot start: CreateContainerConfigError: {SECRET_MSG}")
    assert "2 more pods cannot start (ImagePullBackOff, Unschedulable)" in text


# --- the TranscriptionJob's status --------------------------------------------------------


def test_planner_without_its_secret_keeps_planning_but_says_why() -> None:
    pod = waiting("talks-plan-abc-x1", "CreateContainerConfigError", SECRET_MSG)
    out = planning([pod])
    assert out["phase"] == "Planning", "a Secret can still be created: not terminal"
    assert not cond(out, "Failed")
    for type_ in ("Planned", "PodsHealthy"):
        c = cond(out, type_)
        assert (c["status"], c["reason"]) == ("False", "SecretNotFound")
        assert "planner pod talks-plan-abc-x1" in c["message"] and SECRET_MSG in c["message"]
        assert "spec.storage.secretName" in c["message"]


def test_condition_appears_only_once_a_pod_was_stuck() -> None:
    assert not cond(planning([]), "PodsHealthy")
    assert not cond(running([started("w-0")]), "PodsHealthy")


def test_one_warning_per_cause_and_a_normal_event_when_pods_start() -> None:
    first = planning([waiting("p1", "ErrImagePull", "rpc error: not found")])
    warning = ("Warning", "ImagePullBackOff", cond(first, "PodsHealthy")["message"])
    assert warning in events.transitions({}, first)
    # The kubelet alternates ErrImagePull / ImagePullBackOff while it retries: same cause.
    again = planning([waiting("p1", "ImagePullBackOff", 'Back-off pulling image "x"')], first)
    assert 'Back-off pulling image "x"' in cond(again, "PodsHealthy")["message"]
    assert not [e for e in events.transitions(first, again) if e[0] == "Warning"]
    moved = planning([unschedulable("p2")], again)
    assert ("Warning", "Unschedulable") in [(t, r) for t, r, _m in events.transitions(again, moved)]
    fixed = planning([started("p2")], moved, now=LATER)
    health = cond(fixed, "PodsHealthy")
    assert (health["status"], health["reason"], health["lastTransitionTime"]) == (
        "True", "PodsStarted", LATER)
    assert cond(fixed, "Planned")["reason"] == "Planning"
    assert ("Normal", "PodsStarted") in [(t, r) for t, r, _m in events.transitions(moved, fixed)]


def test_workers_that_all_cannot_start_turn_running_false() -> None:
    out = running([unschedulable("w-0"), unschedulable("w-1")])
    assert out["phase"] == "Running"
    c = cond(out, "Running")
    assert (c["status"], c["reason"]) == ("False", "Unschedulable")
    assert "worker pod w-0 cannot start" in c["message"] and "1 more pods" in c["message"]
    assert cond(out, "PodsHealthy")["reason"] == "Unschedulable"


def test_some_workers_running_keeps_running_true_but_flags_the_rest() -> None:
    out = running([started("w-0"), waiting("w-1", "ImagePullBackOff", "Back-off")])
    c = cond(out, "Running")
    assert (c["status"], c["reason"]) == ("True", "ShardsRunning")
    assert "1 pods cannot start (ImagePullBackOff)" in c["message"]
    assert cond(out, "PodsHealthy")["status"] == "False"


def test_a_deadline_after_stuck_pods_fails_with_the_reason_they_never_started() -> None:
    stuck_status = planning([unschedulable("p1")])
    deadline = st.PlannerOutcome("failed", None, "DeadlineExceeded",
                                 "Job was active longer than specified deadline")
    out = st.planning_status(*tj(stuck_status), deadline, "talks-plan-abc", LATER, [])
    failed = cond(out, "Failed")
    assert (out["phase"], failed["reason"]) == ("Failed", "DeadlineExceeded")
    assert "before that, planner pod p1 cannot start" in failed["message"]
    assert UNSCHEDULABLE_MSG in failed["message"]
    assert cond(out, "PodsHealthy")["reason"] == "Finished"
    said = events.transitions(stuck_status, out)
    assert [r for _t, r, _m in said] == ["DeadlineExceeded"], "no PodsStarted on failure"


def test_worker_job_finishing_clears_the_condition_without_a_started_event() -> None:
    old = running([unschedulable("w-0")])
    done = {"metadata": {"name": "talks-work-abc"}, "status": {
        "succeeded": 4, "completedIndexes": "0-3",
        "conditions": [{"type": "Complete", "status": "True"}]}}
    out = running([], old, done)
    assert out["phase"] == "Succeeded"
    assert cond(out, "PodsHealthy")["status"] == "True"
    assert "PodsStarted" not in [r for _t, r, _m in events.transitions(old, out)]


# --- finding the TranscriptionJob from a pod -----------------------------------------------


def test_job_templates_name_their_transcription_job_on_every_pod() -> None:
    settings = OperatorSettings()
    owner, _ = tj(workers={"parallelism": 2})
    planner = jobs.build_planner_job(owner, settings)
    worker = jobs.build_worker_job(owner, PlanReport(files=2, shards=2), settings)
    for job in (planner, worker):
        pod = {"metadata": job["spec"]["template"]["metadata"]}
        assert stuck.owner_name(pod) == "talks"
        assert pod["metadata"]["labels"][naming.LABEL_JOB_UID] == "u-1"
    assert stuck.owner_name({"metadata": {}}) == ""


def test_signature_changes_only_when_whether_or_why_a_pod_is_stuck_changes() -> None:
    assert stuck.signature(started("p")) is None
    assert stuck.signature(waiting("p", "ContainerCreating")) is None
    a = stuck.signature(waiting("p", "CreateContainerConfigError", SECRET_MSG))
    assert a == stuck.signature(waiting("p", "CreateContainerConfigError", SECRET_MSG))
    assert a != stuck.signature(unschedulable("p"))
