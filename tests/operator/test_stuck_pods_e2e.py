"""The real operator on kmock: planner/worker pods that cannot start (missing Secret, image
that cannot be pulled, no node that fits) show on the TranscriptionJob as a condition and one
Warning Event per cause, and clear once the pod starts — instead of a silent hang."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.conftest import NAMESPACE, ApiServer, OperatorFactory, eventually
from tests.operator.test_operator_e2e import (
    condition,
    create_tj,
    events_for,
    job,
    phase,
    planned,
    request,
    tj,
)
from whisperfleet_operator import naming
from whisperfleet_operator.spec import parse as parse_tj

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(120)]
Obj = dict[str, Any]
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
SECRET_MSG = 'secret "s3-credentials" not found'


def waiting(reason: str, message: str) -> Obj:
    return {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "runner", "ready": False, "state": {
                "waiting": {"reason": reason, "message": message}}}]}


UNSCHEDULABLE = {"phase": "Pending", "conditions": [{
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    "message": "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector"}]}
STARTED = {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
           "containerStatuses": [{"name": "runner", "ready": True, "state": {
               "running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}


async def add_pod(api: ApiServer, job_body: Obj, pod_name: str, status: Obj) -> None:
    """A pod as the Job controller makes it from the template (labels, annotations, owner),
    with the status the kubelet/scheduler gave it."""
    template = job_body["spec"]["template"]["metadata"]
    meta = job_body["metadata"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": pod_name, "namespace": NAMESPACE,
        "labels": {**template["labels"], "batch.kubernetes.io/job-name": meta["name"]},
        "annotations": dict(template.get("annotations") or {}),
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                             "uid": meta["uid"], "controller": True}]},
        "spec": {"containers": [{"name": "runner", "image": "x"}]},
        "status": status}
    await request(api, "post", PODS, pod)


async def set_pod_status(api: ApiServer, pod_name: str, status: Obj) -> None:
    await request(api, "patch", f"{PODS}/{pod_name}/status", {"status": status})


def warnings(api: ApiServer, name: str) -> list[tuple[str, str]]:
    return [(r, m) for t, r, m in events_for(api, name) if t == "Warning"]


async def health(api: ApiServer, name: str, status: str, reason: str) -> Obj:
    def check() -> Obj | None:
        c = condition(tj(api, name), "PodsHealthy")
        return tj(api, name) if (c.get("status"), c.get("reason")) == (status, reason) else None
    return await eventually(check, what=f"PodsHealthy {status}/{reason} on {name}: "
                                        f"{tj(api, name).get('status')}")


async def test_missing_secret_stalls_planning_loudly_then_clears(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    created = await create_tj(api, "nosecret")
    planner_name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: job(api, planner_name), what="the planner Job")
    pod_name = f"{planner_name}-k2x9q"
    await add_pod(api, planner, pod_name,
                  waiting("CreateContainerConfigError", SECRET_MSG))

    stalled = await health(api, "nosecret", "False", "SecretNotFound")
    assert stalled["status"]["phase"] == "Planning", "the user can still create the Secret"
    planned_cond = condition(stalled, "Planned")
    assert (planned_cond["status"], planned_cond["reason"]) == ("False", "SecretNotFound")
    assert pod_name in planned_cond["message"] and SECRET_MSG in planned_cond["message"]
    (reason, message), = await eventually(lambda: warnings(api, "nosecret"),
                                          what="a Warning event")
    assert reason == "SecretNotFound" and pod_name in message and SECRET_MSG in message

    # The user creates the Secret; the kubelet retries and the container starts.
    await set_pod_status(api, pod_name, STARTED)
    cleared = await health(api, "nosecret", "True", "PodsStarted")
    assert condition(cleared, "Planned")["reason"] == "Planning"
    await eventually(lambda: ("Normal", "PodsStarted") in
                     {(t, r) for t, r, _m in events_for(api, "nosecret")},
                     what="a PodsStarted event")
    assert len(warnings(api, "nosecret")) == 1, "one Warning per cause, not per pod update"


async def test_workers_unschedulable_then_image_pull_then_running(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    _created, worker = await planned(api, "nogpu", files=4, shards=2)
    await phase(api, "nogpu", "Running")
    name = worker["metadata"]["name"]
    # One pod from the annotated template, one as from an older Job without the annotation.
    await add_pod(api, worker, f"{name}-0-aaaaa", UNSCHEDULABLE)
    await add_pod(api, worker, f"{name}-1-bbbbb", UNSCHEDULABLE)

    stalled = await health(api, "nogpu", "False", "Unschedulable")
    running = condition(stalled, "Running")
    assert (running["status"], running["reason"]) == ("False", "Unschedulable")
    assert "didn't match Pod's node affinity" in running["message"]
    await eventually(lambda: [r for r, _m in warnings(api, "nogpu")] == ["Unschedulable"],
                     what="one Unschedulable warning for both pods")

    # A node appears; its pull of the runner image fails: a new cause, a new Warning.
    for pod in (f"{name}-0-aaaaa", f"{name}-1-bbbbb"):
        await set_pod_status(api, pod, waiting(
            "ErrImagePull", 'failed to pull image "ghcr.io/x/runner:typo": not found'))
    await health(api, "nogpu", "False", "ImagePullBackOff")
    await eventually(lambda: [r for r, _m in warnings(api, "nogpu")] ==
                     ["Unschedulable", "ImagePullBackOff"], what="an ImagePullBackOff warning")

    # The image is fixed: the workers start and the job is just running again.
    await set_pod_status(api, f"{name}-0-aaaaa", STARTED)
    partly = await eventually(
        lambda: tj(api, "nogpu") if condition(tj(api, "nogpu"), "Running").get("status")
        == "True" else None, what="Running True once one pod runs")
    assert condition(partly, "PodsHealthy")["status"] == "False", "the other pod is still stuck"
    await set_pod_status(api, f"{name}-1-bbbbb", STARTED)
    cleared = await health(api, "nogpu", "True", "PodsStarted")
    assert condition(cleared, "Running")["reason"] == "ShardsRunning"
    assert len(warnings(api, "nogpu")) == 2
