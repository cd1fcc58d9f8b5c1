"""Held-out TranscriptionJobs, as a reviewer would apply them: every example plus demanding
variants are admitted through the CRD offline, applied to kmock's emulator with the real
operator running, and everything the operator creates is checked the way kube-apiserver would
(schema via kubernetes_validate, Go-side rules via apichecks) and against the pod contract.
The tests play the Job controller (Job status, pods with termination messages)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
import yaml

from tests.operator.apichecks import job_problems
from tests.operator.cel import admit, load_crd, schema_violations, version_schema
from tests.operator.conftest import (
    CRD_PATH,
    TJ_RESOURCE,
    ApiServer,
    eventually,
    running_operator,
)
from tests.operator.test_operator_e2e import CLAIMS, JOBS, TJS, done, live, request, shard
from tests.support.paths import REPO
from whisperfleet_operator import naming
from whisperfleet_operator.spec import parse as parse_tj
from whisperfleet_runner import config
from whisperfleet_runner.config import PlanReport, WorkOrder

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(120)]
Obj = dict[str, Any]
CRD = load_crd(CRD_PATH)
K8S = "1.37"
STATUS_SCHEMA = version_schema(CRD)["properties"]["status"]
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_KEY")


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A handler that raises is retried (or dropped) by kopf: never acceptable here."""
    caplog.set_level(logging.WARNING)
    yield
    crashes = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert not crashes, "operator handler raised:\n" + "\n".join(
        f"{r.name}: {r.getMessage()}" for r in crashes)


# --- the held-out manifests -------------------------------------------------------------------


def example(name: str) -> Obj:
    """The TranscriptionJob of an example file (some ship a PVC or Secret beside it)."""
    [tj] = [d for d in yaml.safe_load_all((REPO / "examples" / f"{name}.yaml").read_text())
            if d and d["kind"] == "TranscriptionJob"]
    return dict(tj)


def tj_body(name: str, namespace: str = "media", **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"input": {"uri": "s3://media/in/"}, "output": {"uri": "s3://media/out/"},
                 "storage": {"secretName": "s3-credentials"}},
    }
    body["spec"].update(spec)
    return body


def everything() -> Obj:
    """Every optional field set, with gpusPerWorker 4 and a compute capability needing two
    node-selector terms ANDed with a user affinity of two terms."""
    return tj_body(
        "everything", input={"uri": "s3://média/録音/", "include": ["*.wav", "**/*.flac"]},
        output={"uri": "s3://média/transcripts/録音/", "formats": ["json", "tsv"],
                "overwrite": True},
        storage={"secretName": "s3-credentials", "endpoint": "https://s3.example.com:9000",
                 "region": "eu-central-1"},
        model={"name": "Systran/faster-whisper-large-v3", "computeType": "int8_float16",
               "cacheVolume": {"claimName": "whisper-models"}},
        transcription={"language": "haw", "task": "translate", "beamSize": 1, "batchSize": 256,
                       "vadFilter": False, "wordTimestamps": True,
                       "initialPrompt": "Ōlelo Hawaiʻi — «Grüße» 你好 🎙️"},
        workers={
            "parallelism": 3, "gpusPerWorker": 4,
            "gpu": {"resourceName": "nvidia.com/gpu",
                    "products": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
                    "minMemoryMiB": 81000, "minComputeCapability": "8.6"},
            "nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                             "effect": "NoSchedule"},
                            {"key": "spot", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 600}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                                           "operator": "In", "values": ["eu-central-1a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In",
                                      "values": ["gpu-node-7"]}]}]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 50, "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"team": "speech"}}}}]}},
            "priorityClassName": "batch-low",
            "resources": {"requests": {"cpu": 4, "memory": "32Gi"},
                          "limits": {"memory": "64Gi"}},
            "image": "registry.example.com/whisperfleet/runner@sha256:" + "a" * 64,
            "imagePullSecrets": [{"name": "registry-credentials"}],
        },
        shards=12, retries={"perShard": 0, "maxFailedShards": 12},
        activeDeadlineSeconds=172800, ttlSecondsAfterFinished=600, suspend=False)


def dra_full() -> Obj:
    return tj_body("dra-full", workers={"parallelism": 2, "gpusPerWorker": 2, "gpu": {
        "deviceClassName": "gpu.nvidia.com", "products": ["NVIDIA-H100-80GB-HBM3"],
        "minMemoryMiB": 40960, "minComputeCapability": "9.0"}})


def long_name() -> str:
    """253 characters: the longest legal object name, dotted."""
    return ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


def heldout() -> list[Obj]:
    bodies = [example(n) for n in ("minimal", "multi-gpu", "mig", "dra", "kueue", "pvc")]
    for body in bodies:
        body["metadata"]["namespace"] = "media"
    bodies += [
        everything(), dra_full(),
        tj_body("paused-at-birth", suspend=True, shards=2),
        tj_body("mig-7", workers={"parallelism": 7, "gpu": {
            "resourceName": "nvidia.com/mig-3g.40gb"}}),
        tj_body(long_name()),
        tj_body("x" * 63, shards=100000, workers={"parallelism": 1000}),
        tj_body("twin", "media"), tj_body("twin", "default"),
        tj_body("cpu-ish", retries={"perShard": 100, "maxFailedShards": 0}),
        # Media read from a read-only PVC at a custom path, transcripts to object storage.
        tj_body("pvc-in-s3-out", input={"uri": "file:///mnt/média/录音/"},
                storage={"secretName": "s3-credentials", "volume": {
                    "claimName": "archive.media", "mountPath": "/mnt/média", "readOnly": True}}),
    ]
    return bodies


# --- inspecting what the operator created ---------------------------------------------------------


def accepted(obj: Obj) -> None:
    kubernetes_validate.validate(obj, K8S, strict=True)
    if obj["kind"] == "Job":
        assert job_problems(obj) == [], obj["metadata"]["name"]


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env") or []}


def check_pod_template(job: Obj, stored: Obj) -> Obj:
    """The pod security contract for planner and worker pods alike; returns the container."""
    spec = job["spec"]["template"]["spec"]
    storage = stored["spec"].get("storage") or {}
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all(set(v) <= {"name", "emptyDir", "persistentVolumeClaim"} for v in spec["volumes"])
    pod_sec = spec["securityContext"]
    assert pod_sec["runAsNonRoot"] is True and pod_sec["runAsUser"] > 0
    assert pod_sec["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    sec = container["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"] == {"drop": ["ALL"]}
    assert not sec.get("privileged") and sec["readOnlyRootFilesystem"] is True
    assert container["terminationMessagePath"] == config.TERMINATION_MESSAGE_PATH
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = env_of(container)
    # Credentials only by reference to the user's Secret; nothing secret inlined.
    assert not set(SECRET_ENV) & set(env)
    assert all("secretKeyRef" not in (e.get("valueFrom") or {}) for e in env.values())
    secret = storage.get("secretName")
    assert container.get("envFrom", []) == ([{"secretRef": {"name": secret}}] if secret else [])
    if storage.get("endpoint"):
        assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL",
                                           "value": storage["endpoint"]}
    # file:// URIs resolve inside the user's PVC, mounted alike in planner and workers.
    volume = storage.get("volume")
    data = [m for m in container["volumeMounts"] if m["name"] == "data"]
    if volume:
        assert data == [{"name": "data", "mountPath": volume["mountPath"],
                         **({"readOnly": True} if volume["readOnly"] else {})}]
        [pvc] = [v for v in spec["volumes"] if v["name"] == "data"]
        assert pvc["persistentVolumeClaim"]["claimName"] == volume["claimName"]
        assert spec["securityContext"]["fsGroup"] == pod_sec["runAsGroup"]
    else:
        assert data == []
    expected_image = stored["spec"]["workers"].get("image")
    if expected_image:
        assert container["image"] == expected_image
    pull = stored["spec"]["workers"].get("imagePullSecrets")
    if pull:
        assert spec["imagePullSecrets"] == pull
    return container


def check_work_order(container: Obj, stored: Obj, shards: int) -> None:
    spec, uid = stored["spec"], stored["metadata"]["uid"]
    order = WorkOrder.from_json(env_of(container)[config.ENV_WORK_ORDER]["value"])
    tr = spec["transcription"]
    assert (order.job_uid, order.input_uri, order.output.uri) == (
        uid, spec["input"]["uri"], spec["output"]["uri"])
    assert list(order.include) == spec["input"]["include"]
    assert list(order.output.formats) == spec["output"]["formats"]
    assert order.output.overwrite is spec["output"]["overwrite"]
    assert (order.model.name, order.model.compute_type) == (
        spec["model"]["name"], spec["model"]["computeType"])
    cached = "cacheVolume" in spec["model"]
    assert order.model.cache_dir == (config.MODEL_CACHE_MOUNT if cached else None)
    assert order.transcription.language == (tr["language"] or None)
    assert (order.transcription.task, order.transcription.beam_size,
            order.transcription.batch_size, order.transcription.vad_filter,
            order.transcription.word_timestamps) == (
        tr["task"], tr["beamSize"], tr["batchSize"], tr["vadFilter"], tr["wordTimestamps"])
    assert order.transcription.initial_prompt == (tr["initialPrompt"] or None)
    assert order.shards == shards and order.device == "cuda"


def check_worker(worker: Obj, stored: Obj, shards: int, claims: list[Obj]) -> None:
    spec, workers = stored["spec"], stored["spec"]["workers"]
    js = worker["spec"]
    assert (js["completionMode"], js["completions"]) == ("Indexed", shards)
    assert js["parallelism"] == workers["parallelism"]
    assert js["backoffLimitPerIndex"] == spec["retries"]["perShard"]
    assert js["podReplacementPolicy"] == "Failed"
    rules = js["podFailurePolicy"]["rules"]
    assert {"action": "FailIndex", "onExitCodes": {"containerName": "runner", "operator": "In",
                                                   "values": [config.EXIT_BAD_INPUT]}} in rules
    assert rules[0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert rules[0]["action"] == "Ignore"
    assert js.get("activeDeadlineSeconds") == (spec["activeDeadlineSeconds"] or None)
    assert js.get("ttlSecondsAfterFinished") == (spec["ttlSecondsAfterFinished"] or None)
    assert js["suspend"] is (spec["suspend"] or bool(spec["queueName"]))
    labels = worker["metadata"]["labels"]
    assert labels.get(naming.LABEL_KUEUE_QUEUE) == (spec["queueName"] or None)
    pod = js["template"]["spec"]
    container = check_pod_template(worker, stored)
    env = env_of(container)
    assert env["CUDA_DEVICE_ORDER"]["value"] == "PCI_BUS_ID"
    assert "JOB_COMPLETION_INDEX" not in env, "the Job controller sets it; never override it"
    assert container["args"] == ["run-shard"]
    limits = container["resources"].get("limits") or {}
    gpu = workers["gpu"]
    if gpu.get("deviceClassName"):
        assert not any(k.startswith("nvidia.com/") for k in limits)
        assert container["resources"]["claims"] == [{"name": "gpu"}]
        [claim] = claims
        assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName":
                                          claim["metadata"]["name"]}]
        accepted(claim)
        exactly = claim["spec"]["spec"]["devices"]["requests"][0]["exactly"]
        assert exactly["count"] == workers["gpusPerWorker"]
        assert exactly["deviceClassName"] == gpu["deviceClassName"]
        assert len(exactly.get("selectors", [])) == sum(
            bool(gpu.get(k)) for k in ("products", "minMemoryMiB", "minComputeCapability"))
    else:
        assert claims == [] and "resourceClaims" not in pod
        assert limits[gpu["resourceName"]] == str(workers["gpusPerWorker"])
        terms = (((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms", [])
        keys = [{e["key"] for e in t.get("matchExpressions", [])} for t in terms]
        if gpu.get("products"):
            assert terms and all("nvidia.com/gpu.product" in k for k in keys)
        if gpu.get("minMemoryMiB"):
            assert all("nvidia.com/gpu.memory" in k for k in keys)
    if "cacheVolume" in spec["model"]:
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
        assert mount["readOnly"] is True
        [vol] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert vol["persistentVolumeClaim"] == {
            "claimName": spec["model"]["cacheVolume"]["claimName"], "readOnly": True}
    for key in ("nodeSelector", "priorityClassName"):
        assert pod.get(key) == workers.get(key)
    for tol in workers.get("tolerations") or []:
        assert tol in pod["tolerations"]
    if workers.get("resources"):
        assert container["resources"]["requests"] == workers["resources"]["requests"]
    check_work_order(container, stored, shards)


def status_versions_valid(api: ApiServer, namespace: str, name: str) -> None:
    """Every status the operator wrote must pass the CRD schema (the API server refuses
    the patch otherwise, and the status would stay stale)."""
    seen: list[Obj] = []
    for version in api.objects[TJ_RESOURCE, namespace, name].history:
        status = json.loads(json.dumps((version.raw if version else {}).get("status")))
        if status and status not in seen:
            seen.append(status)
            problems = schema_violations(STATUS_SCHEMA, status)
            assert problems == [], f"{name[:40]}: {[str(p)[:200] for p in problems[:5]]}"


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
    """Admit offline (as the API server would, with defaults), then create; (stored, created)."""
    stored, problems = admit(CRD, body)
    assert problems == [], f"{body['metadata']['name']}: {[str(p) for p in problems]}"
    namespace = body["metadata"]["namespace"]
    path = f"/apis/whisperfleet.io/v1alpha1/namespaces/{namespace}/transcriptionjobs"
    created = await request(api, "post", path, stored)
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


# --- the held-out run ---------------------------------------------------------------------------


async def test_heldout_jobs_create_what_the_api_server_accepts(
    api: ApiServer, operator: Any,
) -> None:
    runs = []
    for body in heldout():
        created, _ = await apply(api, body)
        stored, _ = admit(CRD, body)
        stored["metadata"]["uid"] = created["metadata"]["uid"]
        runs.append((created, stored))
    for created, stored in runs:
        shards = stored["spec"]["shards"] or 3
        planner = await plan_done(api, created, shards)
        accepted(planner)
        container = check_pod_template(planner, stored)
        assert container["args"][0] == "plan" and "CUDA_DEVICE_ORDER" not in env_of(container)
        assert not any(k.startswith("nvidia.com/")
                       for k in (container["resources"].get("limits") or {}))
        check_work_order(container, stored, stored["spec"]["shards"])
    for created, stored in runs:
        namespace, uid = created["metadata"]["namespace"], created["metadata"]["uid"]
        shards = stored["spec"]["shards"] or 3
        worker = await eventually(
            lambda c=created: find_job(api, c["metadata"]["namespace"],
                                       naming.worker_job_name(parse_tj(c))),
            what=f"worker of {created['metadata']['name'][:40]}")
        accepted(worker)
        claims = [c for c in live(api, CLAIMS) if c["metadata"]["labels"][
            naming.LABEL_JOB_UID] == uid]
        check_worker(worker, stored, shards, claims)
        expected = ("Suspended" if stored["spec"]["suspend"] else
                    "Pending" if stored["spec"]["queueName"] else "Running")
        await phase_of(api, namespace, created["metadata"]["name"], expected)

    # Finish the two twins differently: neither may see the other's Jobs or pods.
    twins = {c["metadata"]["namespace"]: c for c, _s in runs if c["metadata"]["name"] == "twin"}
    worker = find_job(api, "media", naming.worker_job_name(parse_tj(twins["media"])))
    assert worker is not None
    for i in range(3):
        await post_pod(api, worker, f"{worker['metadata']['name']}-{i}-x", shard(i, ok=2),
                       index=i)
    await job_status(api, "media", worker["metadata"]["name"], {
        "succeeded": 3, "completedIndexes": "0-2", "conditions": [done("Complete")]})
    final = await phase_of(api, "media", "twin", "Succeeded")
    assert final["status"]["files"] == {"total": 6, "succeeded": 6, "failed": 0, "skipped": 0}
    other = tj_of(api, "default", "twin")["status"]
    assert other["phase"] == "Running" and other["files"]["succeeded"] == 0
    assert other["jobName"] == naming.worker_job_name(parse_tj(twins["default"]))

    for created, _stored in runs:
        status_versions_valid(api, created["metadata"]["namespace"], created["metadata"]["name"])
    # One planner and one worker per TranscriptionJob, no retried creations.
    assert len(api[kmock.action.CREATE, JOBS]) == 2 * len(runs)


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
    status_versions_valid(api, "media", "retried")


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
    status_versions_valid(api, "media", "garbled")


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
    status_versions_valid(api, "media", "huge")
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
    status_versions_valid(api, "media", "cut-short")


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

    async def strict(self: ApiServer, request: kmock.Request) -> Any:
        data = request.data
        if (request.action == kmock.action.CREATE and request.resource == JOBS
                and isinstance(data, dict) and job_problems(data)):
            raise kmock.KubernetesError(status=422, reason="Invalid", message=(
                f'Job.batch "{data["metadata"]["name"]}" is invalid: '
                + "; ".join(job_problems(data))))
        return await original(self, request)

    monkeypatch.setattr(server_class, "_handle", strict)
    created, _ = await apply(api, tj_body("greedy", workers={"resources": {
        "requests": {"cpu": "2", "memory": "64Gi"}, "limits": {"memory": "32Gi"}}}))
    await plan_done(api, created, shards=2)
    final = await phase_of(api, "media", "greedy", "Failed")
    failed = condition_of(final, "Failed")
    assert failed["reason"] == "JobRejected"
    assert "must be less than or equal to the limit" in failed["message"]
    status_versions_valid(api, "media", "greedy")


def _affinity_term(**expression: Any) -> Obj:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expression]}] if expression else []}}}


@pytest.mark.parametrize(("workers", "field"), [
    ({"nodeSelector": {"pool": "gpu pool"}}, "spec.workers.nodeSelector.pool"),
    ({"affinity": _affinity_term()}, "nodeSelectorTerms"),
    ({"affinity": _affinity_term(key="bad key", operator="Exists")}, "matchExpressions[0].key"),
    ({"tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule",
                       "tolerationSeconds": 60}]}, "tolerations[0].tolerationSeconds"),
    ({"tolerations": [{"value": "x"}]}, "tolerations[0].operator"),
    ({"tolerations": [{"key": "bad key", "operator": "Exists"}]}, "tolerations[0].key"),
])
async def test_worker_options_the_api_server_would_refuse_are_refused_at_admission(
    workers: Obj, field: str,
) -> None:
    """Without this, the TranscriptionJob is admitted and only its Job is refused, later."""
    _stored, problems = admit(CRD, tj_body("refused", workers=workers))
    assert problems and field in str(problems[0]), [str(p) for p in problems]


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
