"""The real operator against kmock's Kubernetes emulator over HTTP; the tests play the Job
controller (Job status, pods with termination messages) and watch what a user would see:
the TranscriptionJob's status and conditions, its Events, and the Jobs that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.operator.conftest import (
    NAMESPACE,
    TJ_RESOURCE,
    ApiServer,
    OperatorFactory,
    dump,
    eventually,
    running_operator,
)
from whisperfleet_operator import naming
from whisperfleet_operator.spec import parse as parse_tj
from whisperfleet_runner.config import FileFailure, GpuIdentity, PlanReport, ShardReport

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(120)]
Obj = dict[str, Any]
JOBS = kmock.resource("batch", "v1", "jobs")
EVENTS = kmock.resource("", "v1", "events")
CLAIMS = kmock.resource("resource.k8s.io", "v1", "resourceclaimtemplates")
TJS = kmock.resource("whisperfleet.io", "v1alpha1", "transcriptionjobs")


# --- talking to the API like kubectl and the Job controller would ---------------------------


async def request(api: ApiServer, method: str, path: str, body: Any = None) -> Obj:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "patch" else {}
    async with api.request(method, path, json=body, headers=headers) as resp:
        data = await resp.json()
        assert resp.status < 300, f"{method} {path}: {resp.status} {dump(data)}"
        return dict(data)


def tj_path(name: str = "") -> str:
    base = f"/apis/whisperfleet.io/v1alpha1/namespaces/{NAMESPACE}/transcriptionjobs"
    return f"{base}/{name}" if name else base


async def create_tj(api: ApiServer, name: str, **spec: Any) -> Obj:
    body = {
        "apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "input": {"uri": "s3://media/podcasts/"},
            "output": {"uri": "s3://media/transcripts/"},
            "storage": {"secretName": "s3-credentials"},
            "workers": {"parallelism": 2},
            **spec,
        },
    }
    return await request(api, "post", tj_path(), body)


def tj(api: ApiServer, name: str) -> Obj:
    return api.objects[TJ_RESOURCE, NAMESPACE, name].raw


def live(api: ApiServer, resource: kmock.resource) -> list[Obj]:
    return [obj.raw for (res, _ns, _name), obj in api.objects.items()
            if res == resource and not obj.deleted]


def job(api: ApiServer, name: str) -> Obj | None:
    return next((j for j in live(api, JOBS) if j["metadata"]["name"] == name), None)


def events_for(api: ApiServer, name: str) -> list[tuple[str, str, str]]:
    return [(e.get("type"), e.get("reason"), e.get("message")) for e in live(api, EVENTS)
            if (e.get("involvedObject") or {}).get("name") == name
            and (e.get("involvedObject") or {}).get("kind") == "TranscriptionJob"]


def condition(obj: Obj, type_: str) -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


async def phase(api: ApiServer, name: str, expected: str) -> Obj:
    return await eventually(
        lambda: (tj(api, name) if tj(api, name).get("status", {}).get("phase") == expected
                 else None),
        what=f"phase {expected} of {name} (now {tj(api, name).get('status')})")


async def add_pod(api: ApiServer, job_body: Obj, pod_name: str, message: str, *,
                  index: int | None = None, exit_code: int = 0) -> None:
    """What the kubelet leaves behind: a finished pod with its termination message."""
    labels = dict(job_body["spec"]["template"]["metadata"]["labels"])
    labels["batch.kubernetes.io/job-name"] = job_body["metadata"]["name"]
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": labels,
                     "annotations": annotations},
        "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "runner", "image": "x"}]},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "runner", "state": {"terminated": {
                "exitCode": exit_code, "message": message,
                "finishedAt": f"2026-01-01T00:00:{len(pod_name) % 60:02d}Z"}}}],
        },
    }
    await request(api, "post", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)


async def set_job_status(api: ApiServer, name: str, status: Obj) -> None:
    await request(api, "patch", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status",
                  {"status": status})


def done(type_: str, reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def shard(index: int, *, ok: int, failed: tuple[str, ...] = (), skipped: int = 0,
          seconds: float = 60.0) -> str:
    return ShardReport(
        shard=index, total=ok + len(failed) + skipped, succeeded=ok, failed=len(failed),
        skipped=skipped, audio_seconds=seconds, wall_seconds=10.0, device="cuda",
        node="gpu-node-1", pod=f"w-{index}",
        gpus=[GpuIdentity(uuid=f"GPU-{index}", name="NVIDIA H100 80GB HBM3", memory_mib=81559,
                          device_index=0)],
        failures=[FileFailure(uri=u, reason="InvalidMedia: cannot decode") for u in failed],
    ).to_json()


async def planned(api: ApiServer, name: str, files: int = 5, shards: int = 2,
                  **spec: Any) -> tuple[Obj, Obj]:
    """Create a TranscriptionJob, let its planner succeed; returns (tj, worker Job)."""
    created = await create_tj(api, name, **spec)
    planner_name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: job(api, planner_name), what="the planner Job")
    plan = PlanReport(files=files, bytes=1000, shards=shards,
                      manifest_uri="s3://media/transcripts/.whisperfleet/x/manifest.jsonl")
    await add_pod(api, planner, f"{planner_name}-abcde", plan.to_json())
    await set_job_status(api, planner_name, {"succeeded": 1, "conditions": [done("Complete")]})
    worker = await eventually(lambda: job(api, naming.worker_job_name(parse_tj(created))),
                              what="the worker Job")
    return created, worker


# --- scenarios ---------------------------------------------------------------------------------


async def test_planned_running_succeeded(api: ApiServer, operator: OperatorFactory) -> None:
    created, worker = await planned(api, "podcasts", files=5, shards=2)
    assert worker["spec"]["completions"] == 2 and worker["spec"]["parallelism"] == 2
    owner = worker["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("TranscriptionJob", created["metadata"]["uid"])

    running = await phase(api, "podcasts", "Running")
    assert running["status"]["files"]["total"] == 5
    assert running["status"]["shards"]["total"] == 2
    assert running["status"]["manifestUri"].endswith("manifest.jsonl")
    assert condition(running, "Planned")["status"] == "True"
    assert running["status"]["jobName"] == worker["metadata"]["name"]

    name = worker["metadata"]["name"]
    await add_pod(api, worker, f"{name}-0-aaaaa", shard(0, ok=3, seconds=100.0), index=0)
    await set_job_status(api, name, {"active": 1, "succeeded": 1, "completedIndexes": "0"})
    expected = {"total": 2, "succeeded": 1, "failed": 0, "active": 1}
    progress = await eventually(
        lambda: tj(api, "podcasts") if tj(api, "podcasts")["status"]["shards"] == expected
        else None, what="shard 0 counted")
    assert progress["status"]["files"]["succeeded"] == 3
    assert progress["status"]["filesSummary"] == "3/5"
    assert condition(progress, "Running")["status"] == "True"

    await add_pod(api, worker, f"{name}-1-bbbbb", shard(1, ok=1, skipped=1, seconds=50.0),
                  index=1)
    await set_job_status(api, name, {"active": 0, "succeeded": 2, "completedIndexes": "0-1",
                                     "completionTime": "2026-01-01T01:00:00Z",
                                     "conditions": [done("Complete")]})
    final = await phase(api, "podcasts", "Succeeded")
    status = final["status"]
    assert status["files"] == {"total": 5, "succeeded": 4, "failed": 0, "skipped": 1}
    assert status["audioSeconds"] == 150.0 and status["audioDuration"] == "2m30s"
    assert {w["gpus"][0]["uuid"] for w in status["workers"]} == {"GPU-0", "GPU-1"}
    assert status["completionTime"] == "2026-01-01T01:00:00Z"
    assert condition(final, "Complete")["status"] == "True"
    assert condition(final, "Running")["status"] == "False"
    reasons = await eventually(
        lambda: {r for _t, r, _m in events_for(api, "podcasts")} >= {"Planned", "Succeeded"}
        and events_for(api, "podcasts"), what="Planned and Succeeded events")
    assert ("Normal", "Succeeded") in {(t, r) for t, r, _m in reasons}
    # No finalizer: deletion never waits for the operator.
    assert not final["metadata"].get("finalizers")


async def test_bad_media_in_one_shard_is_partial_success(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    _created, worker = await planned(api, "partly", files=4, shards=2)
    name = worker["metadata"]["name"]
    await add_pod(api, worker, f"{name}-0-aaaaa", shard(0, ok=2), index=0)
    # Shard 1 hit a bad file: its pod exits EXIT_BAD_INPUT and the Job fails only that index.
    await add_pod(api, worker, f"{name}-1-bbbbb",
                  shard(1, ok=1, failed=["s3://media/podcasts/bad.mp3"]), index=1, exit_code=42)
    await set_job_status(api, name, {
        "active": 0, "succeeded": 1, "failed": 1, "completedIndexes": "0", "failedIndexes": "1",
        "conditions": [done("Failed", "FailedIndexes", "Job has failed indexes")]})
    final = await phase(api, "partly", "PartiallySucceeded")
    status = final["status"]
    assert status["files"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    assert status["shards"]["failed"] == 1 and status["shards"]["succeeded"] == 1
    assert status["failures"] == [{"uri": "s3://media/podcasts/bad.mp3",
                                   "reason": "InvalidMedia: cannot decode"}]
    complete = condition(final, "Complete")
    assert (complete["status"], complete["reason"]) == ("True", "PartiallySucceeded")
    assert condition(final, "Running")["status"] == "False"
    await eventually(lambda: ("Warning", "PartiallySucceeded") in
                     {(t, r) for t, r, _m in events_for(api, "partly")},
                     what="a PartiallySucceeded warning event")


async def test_worker_job_failure_is_failed_with_reason(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    _created, worker = await planned(api, "doomed", files=2, shards=2)
    await set_job_status(api, worker["metadata"]["name"], {
        "active": 0, "failedIndexes": "0-1",
        "conditions": [done("Failed", "MaxFailedIndexesExceeded", "Job has exceeded the "
                            "specified maximal number of failed indexes")]})
    final = await phase(api, "doomed", "Failed")
    failed = condition(final, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "MaxFailedIndexesExceeded")
    assert final["status"]["shards"]["failed"] == 2


async def test_planner_failure_is_reported_not_hung(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    created = await create_tj(api, "nobucket")
    planner_name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: job(api, planner_name), what="the planner Job")
    report = PlanReport(error_reason="BucketNotFound",
                        error_message="bucket 'media' does not exist")
    await add_pod(api, planner, f"{planner_name}-abcde", report.to_json(), exit_code=43)
    await set_job_status(api, planner_name, {"failed": 1, "conditions": [
        done("Failed", "PodFailurePolicy", "Container runner exited with 43")]})
    final = await phase(api, "nobucket", "Failed")
    failed = condition(final, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "BucketNotFound")
    assert "does not exist" in failed["message"]
    assert condition(final, "Planned")["status"] == "False"
    await eventually(lambda: ("Warning", "BucketNotFound") in
                     {(t, r) for t, r, _m in events_for(api, "nobucket")},
                     what="a BucketNotFound warning event")
    assert job(api, naming.worker_job_name(parse_tj(created))) is None, \
        "no worker Job after a failed plan"


async def test_suspend_and_resume(api: ApiServer, operator: OperatorFactory) -> None:
    _created, worker = await planned(api, "pausable")
    name = worker["metadata"]["name"]
    await phase(api, "pausable", "Running")

    await request(api, "patch", tj_path("pausable"), {"spec": {"suspend": True}})
    await eventually(lambda: (job(api, name) or {}).get("spec", {}).get("suspend") is True,
                     what="the worker Job suspended")
    paused = await phase(api, "pausable", "Suspended")
    assert condition(paused, "Suspended")["status"] == "True"
    assert condition(paused, "Running")["status"] == "False"
    assert paused["status"]["observedGeneration"] == paused["metadata"]["generation"] == 2

    await request(api, "patch", tj_path("pausable"), {"spec": {"suspend": False}})
    await eventually(lambda: job(api, name)["spec"]["suspend"] is False,
                     what="the worker Job resumed")
    resumed = await phase(api, "pausable", "Running")
    assert condition(resumed, "Suspended")["status"] == "False"
    assert condition(resumed, "Suspended")["reason"] == "Resumed"
    reasons = await eventually(
        lambda: (lambda rs: rs if {"Suspended", "Resumed"} <= rs else None)(
            {r for _t, r, _m in events_for(api, "pausable")}),
        what="Suspended and Resumed events")
    assert "Running" in reasons


async def test_kueue_queued_job_waits_for_kueue_to_admit_it(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    _created, worker = await planned(api, "queued", queueName="gpu-queue")
    name = worker["metadata"]["name"]
    assert worker["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert worker["spec"]["suspend"] is True, "Kueue admits a queued Job by unsuspending it"
    queued = await phase(api, "queued", "Pending")
    assert condition(queued, "Running")["reason"] == "Queued"
    assert "gpu-queue" in condition(queued, "Running")["message"]

    await request(api, "patch", tj_path("queued"), {"spec": {"suspend": True}})
    await phase(api, "queued", "Suspended")
    await request(api, "patch", tj_path("queued"), {"spec": {"suspend": False}})
    await eventually(lambda: condition(tj(api, "queued"), "Suspended").get("status") == "False",
                     what="the resume handled")
    assert job(api, name)["spec"]["suspend"] is True, "resuming must not bypass Kueue's admission"
    await phase(api, "queued", "Pending")
    await request(api, "patch", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}",
                  {"spec": {"suspend": False}})  # Kueue admits it
    await set_job_status(api, name, {"active": 1})
    await phase(api, "queued", "Running")


async def test_parallelism_change_reaches_the_worker_job(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    _created, worker = await planned(api, "scalable")
    name = worker["metadata"]["name"]
    assert worker["spec"]["parallelism"] == 2
    await request(api, "patch", tj_path("scalable"), {"spec": {"workers": {"parallelism": 7}}})
    await eventually(lambda: job(api, name)["spec"]["parallelism"] == 7,
                     what="worker Job parallelism 7")


async def test_gpu_claim_template_with_dra(api: ApiServer, operator: OperatorFactory) -> None:
    created = await create_tj(api, "dra", workers={
        "parallelism": 1, "gpu": {"deviceClassName": "gpu.nvidia.com", "minMemoryMiB": 40000}})
    planner_name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: job(api, planner_name), what="the planner Job")
    await add_pod(api, planner, f"{planner_name}-x", PlanReport(files=1, shards=1).to_json())
    await set_job_status(api, planner_name, {"succeeded": 1, "conditions": [done("Complete")]})
    worker = await eventually(lambda: job(api, naming.worker_job_name(parse_tj(created))),
                              what="the worker Job")
    claims = live(api, CLAIMS)
    expected = naming.claim_template_name(parse_tj(created))
    assert [c["metadata"]["name"] for c in claims] == [expected]
    assert claims[0]["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    pod_claims = worker["spec"]["template"]["spec"]["resourceClaims"]
    assert pod_claims[0]["resourceClaimTemplateName"] == claims[0]["metadata"]["name"]


async def test_operator_restart_mid_run_duplicates_nothing(
    api: ApiServer, kubeconfig: Path,
) -> None:
    async with running_operator():
        created, worker = await planned(api, "survivor", files=2, shards=2)
        await phase(api, "survivor", "Running")
    creates_before = len(api[kmock.action.CREATE, JOBS])
    assert creates_before == 2  # one planner, one worker

    # While the operator is down, the Job controller finishes the work.
    name = worker["metadata"]["name"]
    await add_pod(api, worker, f"{name}-0-a", shard(0, ok=1), index=0)
    await add_pod(api, worker, f"{name}-1-b", shard(1, ok=1), index=1)
    await set_job_status(api, name, {"succeeded": 2, "completedIndexes": "0-1",
                                     "conditions": [done("Complete")]})
    assert tj(api, "survivor")["status"]["phase"] == "Running"

    async with running_operator():
        final = await phase(api, "survivor", "Succeeded")
    assert final["status"]["files"]["succeeded"] == 2
    jobs = sorted(j["metadata"]["name"] for j in live(api, JOBS)
                  if j["metadata"]["labels"][naming.LABEL_JOB_UID] == created["metadata"]["uid"])
    assert jobs == sorted([naming.planner_job_name(parse_tj(created)), name])
    # Resuming found the existing Jobs by their deterministic names: no create attempts.
    assert len(api[kmock.action.CREATE, JOBS]) == creates_before


async def test_deletion_leaves_cleanup_to_owner_references(
    api: ApiServer, operator: OperatorFactory,
) -> None:
    created, worker = await planned(api, "goner")
    await phase(api, "goner", "Running")
    planner = job(api, naming.planner_job_name(parse_tj(created)))
    for owned in (planner, worker):
        assert owned is not None
        ref = owned["metadata"]["ownerReferences"][0]
        assert ref == {"apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
                       "name": "goner", "uid": created["metadata"]["uid"],
                       "controller": True, "blockOwnerDeletion": True}
    async with api.delete(tj_path("goner")) as resp:
        assert resp.status == 200
    # No finalizer: the object is gone at once, not waiting for the operator.
    assert api.objects[TJ_RESOURCE, NAMESPACE, "goner"].deleted
    # The garbage collector (absent in the emulator) would now delete the Jobs; until it
    # does, their events must not bring anything back.
    creates = len(api[kmock.action.CREATE, JOBS])
    lookups = len(api[kmock.action.FETCH, TJS])
    await set_job_status(api, worker["metadata"]["name"], {"active": 1})
    # The operator reacts to the Job event by looking its owner up (and finding it gone).
    await eventually(lambda: len(api[kmock.action.FETCH, TJS]) > lookups,
                     what="the operator to look up the deleted owner")
    assert len(api[kmock.action.CREATE, JOBS]) == creates
    assert api.objects[TJ_RESOURCE, NAMESPACE, "goner"].deleted
