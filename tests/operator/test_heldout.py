"""Held-out TranscriptionJobs applied to kmock's emulator with the real operator running:
odd Job-controller sequences, restarts and namesakes. (What the API server admits, and whether
it admits what the operator builds, is tested on the real API server in tests/cluster.)
The tests play the Job controller (Job status, pods with termination messages)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.operator.conftest import (
    TJ_RESOURCE,
    ApiServer,
    eventually,
    running_operator,
)
from tests.operator.test_operator_e2e import JOBS, TJS, done, live, request, shard
from whisperfleet_operator import naming
from whisperfleet_operator.spec import parse as parse_tj
from whisperfleet_runner import config
from whisperfleet_runner.config import PlanReport

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(120)]
Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A handler that raises is retried (or dropped) by kopf: never acceptable here."""
    caplog.set_level(logging.WARNING)
    yield
    crashes = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert not crashes, "operator handler raised:\n" + "\n".join(
        f"{r.name}: {r.getMessage()}" for r in crashes)


# --- TranscriptionJob bodies ------------------------------------------------------------------


def tj_body(name: str, namespace: str = "media", **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"input": {"uri": "s3://media/in/"}, "output": {"uri": "s3://media/out/"},
                 "storage": {"secretName": "s3-credentials"}},
    }
    body["spec"].update(spec)
    return body


# --- talking to the emulator in any namespace ---------------------------------------------------


def ns_jobs(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def find_job(api: ApiServer, namespace: str, name: str) -> Obj | None:
    return next((j for j in live(api, JOBS) if j["metadata"]["name"] == name
                 and j["metadata"].get("namespace") == namespace), None)


def tj_of(api: ApiServer, namespace: str, name: str) -> Obj:
    return api.objects[TJ_RESOURCE, namespace, name].raw


async def phase_of(api: ApiServer, namespace: str, name: str, expected: str) -> Obj:
    return await eventually(
        lambda: (tj_of(api, namespace, name)
                 if tj_of(api, namespace, name).get("status", {}).get("phase") == expected
                 else None),
        what=f"phase {expected} of {namespace}/{name[:40]} "
             f"(now {tj_of(api, namespace, name).get('status')})")


async def post_pod(api: ApiServer, job: Obj, pod_name: str, message: str, *, index: int | None,
                   exit_code: int = 0, reason: str = "", finished: str = "") -> None:
    namespace = job["metadata"]["namespace"]
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    labels["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    terminated = {"exitCode": exit_code, "message": message,
                  "finishedAt": finished or "2026-01-01T00:00:00Z"}
    if reason:
        terminated["reason"] = reason
    await request(api, "post", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                     "annotations": annotations},
        "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "runner", "image": "x"}]},
        "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                   "containerStatuses": [{"name": "runner",
                                          "state": {"terminated": terminated}}]}})


async def job_status(api: ApiServer, namespace: str, name: str, status: Obj) -> None:
    await request(api, "patch", f"{ns_jobs(namespace)}/{name}/status", {"status": status})


async def apply(api: ApiServer, body: Obj) -> tuple[Obj, Obj]:
    """Create the body as is (the emulator runs no admission); (created, created)."""
    namespace = body["metadata"]["namespace"]
    path = f"/apis/whisperfleet.io/v1alpha1/namespaces/{namespace}/transcriptionjobs"
    created = await request(api, "post", path, body)
    return created, created


async def plan_done(api: ApiServer, created: Obj, shards: int, files: int = 0) -> Obj:
    """Play the planner's pod and Job controller; returns the planner Job."""
    namespace = created["metadata"]["namespace"]
    name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: find_job(api, namespace, name), what=f"planner {name}")
    report = PlanReport(files=files or shards * 2, bytes=10**9, shards=shards,
                        manifest_uri=f"s3://x/.whisperfleet/{created['metadata']['uid']}/m.jsonl")
    await post_pod(api, planner, f"{name}-p0", report.to_json(), index=None)
    await job_status(api, namespace, name, {"succeeded": 1, "conditions": [done("Complete")]})
    return planner


# --- odd Job-controller sequences -----------------------------------------------------------------


async def running(api: ApiServer, name: str, shards: int = 2, **spec: Any) -> tuple[Obj, Obj]:
    """A TranscriptionJob in media/, planned into `shards` shards; (created, worker Job)."""
    created, _ = await apply(api, tj_body(name, **spec))
    await plan_done(api, created, shards)
    worker_name = naming.worker_job_name(parse_tj(created))
    worker = await eventually(lambda: find_job(api, "media", worker_name),
                              what="the worker Job")
    await phase_of(api, "media", name, "Running")
    return created, worker


def failure_reasons(obj: Obj) -> list[str]:
    return [f"{f['uri']}: {f['reason']}" for f in obj["status"].get("failures") or []]


def condition_of(obj: Obj, type_: str) -> Obj:
    return next((c for c in obj["status"].get("conditions") or [] if c["type"] == type_), {})


async def test_bad_media_index_and_a_retried_index(api: ApiServer, operator: Any) -> None:
    _created, worker = await running(api, "retried", shards=2)
    name = worker["metadata"]["name"]
    # Index 0: the first attempt hit a transient storage error on one file, the retry succeeded.
    await post_pod(api, worker, f"{name}-0-first",
                   shard(0, ok=1, failed=("s3://media/in/flaky.wav",)), index=0, exit_code=1,
                   finished="2026-01-01T00:00:01Z")
    await post_pod(api, worker, f"{name}-0-second", shard(0, ok=2), index=0,
                   finished="2026-01-01T00:00:05Z")
    # Index 1: bad media; FailIndex, no retry.
    await post_pod(api, worker, f"{name}-1-only",
                   shard(1, ok=1, failed=("s3://media/in/broken.mp3",)), index=1,
                   exit_code=config.EXIT_BAD_INPUT, finished="2026-01-01T00:00:03Z")
    await job_status(api, "media", name, {
        "failed": 2, "succeeded": 1, "completedIndexes": "0", "failedIndexes": "1",
        "conditions": [done("Failed", "FailedIndexes", "Job has failed indexes")]})
    final = await phase_of(api, "media", "retried", "PartiallySucceeded")
    assert final["status"]["files"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    # The superseded attempt's failure is not reported: its file was written by the retry.
    assert failure_reasons(final) == ["s3://media/in/broken.mp3: InvalidMedia: cannot decode"]
    assert {w["pod"] for w in final["status"]["workers"]} == {"w-0", "w-1"}


async def test_unreadable_termination_messages_are_reported_not_crashed_on(
    api: ApiServer, operator: Any,
) -> None:
    _created, worker = await running(api, "garbled", shards=5)
    name = worker["metadata"]["name"]
    await post_pod(api, worker, f"{name}-0-a", shard(0, ok=2), index=0)
    # FallbackToLogsOnError: a runner killed before writing its report leaves its log tail.
    await post_pod(api, worker, f"{name}-1-a",
                   "Traceback (most recent call last):\n  File \"x.py\"\nMemoryError",
                   index=1, exit_code=137, reason="OOMKilled")
    await post_pod(api, worker, f"{name}-2-a", "null", index=2, exit_code=1, reason="Error")
    await post_pod(api, worker, f"{name}-3-a", "[1, 2]", index=3, exit_code=1, reason="Error")
    await post_pod(api, worker, f"{name}-4-a", '{"shard": "four", "succeeded": "many"}',
                   index=4, exit_code=1, reason="Error")
    await job_status(api, "media", name, {
        "failed": 4, "succeeded": 1, "completedIndexes": "0", "failedIndexes": "1-4",
        "conditions": [done("Failed", "FailedIndexes", "Job has failed indexes")]})
    final = await phase_of(api, "media", "garbled", "PartiallySucceeded")
    assert final["status"]["files"]["succeeded"] == 2
    assert final["status"]["shards"] == {"total": 5, "succeeded": 1, "failed": 4, "active": 0}
    reasons = failure_reasons(final)
    oom = [r for r in reasons if r.startswith("shard 1")]
    assert oom and "OOMKilled" in oom[0] and "137" in oom[0] and "MemoryError" in oom[0]
    assert {r.split(":")[0] for r in reasons} >= {"shard 1", "shard 2", "shard 3", "shard 4"}


async def test_oversized_reports_still_give_a_valid_status(api: ApiServer, operator: Any) -> None:
    _created, worker = await running(api, "huge", shards=1)
    name = worker["metadata"]["name"]
    report = json.loads(shard(0, ok=1, failed=("s3://media/in/x.wav",)))
    report["gpus"] = [{"uuid": f"GPU-{i}-" + "u" * 200, "name": "N" * 300, "memory_mib": -1,
                       "device_index": i} for i in range(40)]
    report["pod"], report["node"] = "p" * 300, "n" * 300
    report["failures"] = [{"uri": f"s3://media/in/{i}-" + "k" * 5000, "reason": "r" * 5000}
                          for i in range(30)]
    report["error_reason"], report["error_message"] = "Storage Error!", "m" * 40000
    await post_pod(api, worker, f"{name}-0-a", json.dumps(report), index=0, exit_code=1)
    await job_status(api, "media", name, {"failed": 1, "failedIndexes": "0", "conditions": [
        done("Failed", "FailedIndexes", "Job has failed indexes")]})
    final = await phase_of(api, "media", "huge", "Failed")
    assert len(final["status"]["failures"]) == 20
    assert final["status"]["failures"][0]["uri"] == "shard 0"


async def test_planner_complete_but_its_pod_is_gone(api: ApiServer, operator: Any) -> None:
    created, _ = await apply(api, tj_body("lost-plan"))
    name = naming.planner_job_name(parse_tj(created))
    await eventually(lambda: find_job(api, "media", name), what="the planner Job")
    await job_status(api, "media", name, {"succeeded": 1, "conditions": [done("Complete")]})
    final = await phase_of(api, "media", "lost-plan", "Failed")
    failed = condition_of(final, "Failed")
    assert failed["reason"] == "PlanUnreadable" and "pod" in failed["message"]
    assert find_job(api, "media", naming.worker_job_name(parse_tj(created))) is None


async def test_planner_deadline_without_pods(api: ApiServer, operator: Any) -> None:
    created, _ = await apply(api, tj_body("slow-plan"))
    name = naming.planner_job_name(parse_tj(created))
    await eventually(lambda: find_job(api, "media", name), what="the planner Job")
    await job_status(api, "media", name, {"failed": 0, "conditions": [
        done("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]})
    final = await phase_of(api, "media", "slow-plan", "Failed")
    assert condition_of(final, "Failed")["reason"] == "DeadlineExceeded"
    assert "deadline" in condition_of(final, "Failed")["message"]


async def test_planner_crash_reports_its_log_tail(api: ApiServer, operator: Any) -> None:
    created, _ = await apply(api, tj_body("crashy-plan"))
    name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: find_job(api, "media", name), what="the planner Job")
    for attempt in range(3):
        await post_pod(api, planner, f"{name}-{attempt}",
                       "ImportError: libcudnn_ops.so.9: cannot open shared object file",
                       index=None, exit_code=1, reason="Error")
    await job_status(api, "media", name, {"failed": 3, "conditions": [
        done("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]})
    final = await phase_of(api, "media", "crashy-plan", "Failed")
    failed = condition_of(final, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "libcudnn_ops.so.9" in failed["message"], failed


async def test_worker_job_deleted_mid_run(api: ApiServer, operator: Any) -> None:
    _created, worker = await running(api, "cut-short")
    name = worker["metadata"]["name"]
    await job_status(api, "media", name, {"active": 2})
    async with api.delete(f"{ns_jobs('media')}/{name}") as resp:
        assert resp.status == 200
    final = await phase_of(api, "media", "cut-short", "Failed")
    failed = condition_of(final, "Failed")
    assert failed["reason"] == "WorkerJobDeleted" and name in failed["message"]
    assert find_job(api, "media", name) is None, "a deleted worker Job is not silently re-run"


async def test_operator_down_while_the_finished_job_was_deleted_by_ttl(
    api: ApiServer, kubeconfig: Path,
) -> None:
    async with running_operator():
        _created, worker = await running(api, "ttl-gone", ttlSecondsAfterFinished=60)
    name = worker["metadata"]["name"]
    creates = len(api[kmock.action.CREATE, JOBS])
    # While the operator is down the Job finished and the TTL controller deleted it.
    async with api.delete(f"{ns_jobs('media')}/{name}") as resp:
        assert resp.status == 200
    async with running_operator():
        final = await phase_of(api, "media", "ttl-gone", "Failed")
    assert condition_of(final, "Failed")["reason"] == "WorkerJobDeleted"
    assert len(api[kmock.action.CREATE, JOBS]) == creates, "nothing re-run from scratch"


async def test_operator_started_after_the_end_changes_nothing(
    api: ApiServer, kubeconfig: Path,
) -> None:
    async with running_operator():
        _created, worker = await running(api, "long-done", shards=1)
        name = worker["metadata"]["name"]
        await post_pod(api, worker, f"{name}-0-a", shard(0, ok=2), index=0)
        await job_status(api, "media", name, {"succeeded": 1, "completedIndexes": "0",
                                              "conditions": [done("Complete")]})
        before = await phase_of(api, "media", "long-done", "Succeeded")
    # TTL removed the Job and its pods long ago.
    async with api.delete(f"{ns_jobs('media')}/{name}") as resp:
        assert resp.status == 200
    creates, lookups = len(api[kmock.action.CREATE, JOBS]), len(api[kmock.action.FETCH, TJS])
    async with running_operator():
        # The resume handler's reconcile reads the TranscriptionJob, sees it final, stops.
        await eventually(lambda: len(api[kmock.action.FETCH, TJS]) > lookups,
                         what="the resume to look at the TranscriptionJob")
        await phase_of(api, "media", "long-done", "Succeeded")
        after = tj_of(api, "media", "long-done")
    assert after["status"] == before["status"]
    assert len(api[kmock.action.CREATE, JOBS]) == creates


async def test_spec_suspend_is_enforced_on_the_worker_job_after_a_restart(
    api: ApiServer, kubeconfig: Path,
) -> None:
    async with running_operator():
        _created, worker = await running(api, "hold")
        await request(api, "patch", "/apis/whisperfleet.io/v1alpha1/namespaces/media/"
                      "transcriptionjobs/hold", {"spec": {"suspend": True,
                                                          "workers": {"parallelism": 5}}})
        name = worker["metadata"]["name"]
        await eventually(lambda: find_job(api, "media", name)["spec"]["suspend"] is True,
                         what="the worker Job suspended")
    # Someone unsuspends and rescales the Job by hand while the operator is down.
    await request(api, "patch", f"{ns_jobs('media')}/{name}",
                  {"spec": {"suspend": False, "parallelism": 1}})
    async with running_operator():
        await eventually(lambda: find_job(api, "media", name)["spec"]["suspend"] is True,
                         what="the operator to re-suspend the Job its spec says is suspended")
        await eventually(lambda: find_job(api, "media", name)["spec"]["parallelism"] == 5,
                         what="parallelism restored from spec.workers.parallelism")
        await phase_of(api, "media", "hold", "Suspended")


async def test_job_refused_by_the_api_server_fails_the_transcription_job(
    api: ApiServer, operator: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulator accepts any Job; kube-apiserver refuses e.g. requests above limits."""
    server_class = type(api)  # the conftest module pytest loaded, not necessarily ours
    original = server_class._handle

    def memory_request_above_limit(job: Obj) -> str:
        """The one Job refusal played here, in kube-apiserver's words (the real server's
        refusal of this worker Job is tested in tests/cluster/test_built_objects_admitted)."""
        gib = {"Mi": 1 / 1024, "Gi": 1}
        for i, container in enumerate(job["spec"]["template"]["spec"]["containers"]):
            resources = container.get("resources") or {}
            request = (resources.get("requests") or {}).get("memory")
            limit = (resources.get("limits") or {}).get("memory")
            if request and limit and (float(request[:-2]) * gib[request[-2:]]
                                      > float(limit[:-2]) * gib[limit[-2:]]):
                return (f"spec.template.spec.containers[{i}].resources.requests: Invalid value: "
                        f'"{request}": must be less than or equal to memory limit of {limit}')
        return ""

    async def strict(self: ApiServer, request: kmock.Request) -> Any:
        data = request.data
        if (request.action == kmock.action.CREATE and request.resource == JOBS
                and isinstance(data, dict) and memory_request_above_limit(data)):
            raise kmock.KubernetesError(status=422, reason="Invalid", message=(
                f'Job.batch "{data["metadata"]["name"]}" is invalid: '
                + memory_request_above_limit(data)))
        return await original(self, request)

    monkeypatch.setattr(server_class, "_handle", strict)
    created, _ = await apply(api, tj_body("greedy", workers={"resources": {
        "requests": {"cpu": "2", "memory": "64Gi"}, "limits": {"memory": "32Gi"}}}))
    await plan_done(api, created, shards=2)
    final = await phase_of(api, "media", "greedy", "Failed")
    failed = condition_of(final, "Failed")
    assert failed["reason"] == "JobRejected"
    assert "must be less than or equal to memory limit" in failed["message"]


async def test_deleted_and_recreated_namesake_starts_afresh(api: ApiServer, operator: Any) -> None:
    old, old_worker = await running(api, "again")
    async with api.delete("/apis/whisperfleet.io/v1alpha1/namespaces/media/"
                          "transcriptionjobs/again") as resp:
        assert resp.status == 200
    new, _ = await apply(api, tj_body("again", shards=1))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    await phase_of(api, "media", "again", "Planning")
    # The old worker Job (not yet garbage-collected) finishes: the namesake must not care.
    name = old_worker["metadata"]["name"]
    await post_pod(api, old_worker, f"{name}-0-a", shard(0, ok=2), index=0)
    await job_status(api, "media", name, {"succeeded": 2, "completedIndexes": "0-1",
                                          "conditions": [done("Complete")]})
    await plan_done(api, new, shards=1)
    fresh = await phase_of(api, "media", "again", "Running")
    assert fresh["status"]["files"]["succeeded"] == 0
    assert fresh["status"]["jobName"] == naming.worker_job_name(parse_tj(new)) != name
