"""A TranscriptionJob's life on the real control plane: evictions, suspend and resume,
`kubectl scale`, a missing Secret, the operator or the API server going away mid-run, and
deletion — decided by the real Job controller, garbage collector and API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import OperatorProcess
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SOURCES = ["hello.wav", "nested/numbers.wav", "with space é.wav", "nested/deeper/hello.wav"]
TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed")


def talks(count: int) -> dict[str, Path]:
    return {f"in/talk{n:02d}.wav": AUDIO / SOURCES[n % len(SOURCES)] for n in range(count)}


def running_worker(cluster: LocalCluster, ns: str, *, files_done: int = 1) -> str:
    """A worker pod that has transcribed `files_done` files and is still running."""
    def probe() -> str | None:
        for pod in tjs.pods(cluster, ns, "worker"):
            name = pod["metadata"]["name"]
            done = cluster.kubelet.pod_log(ns, name).count(" succeeded ")
            if (pod.get("status") or {}).get("phase") == "Running" and done >= files_done:
                return str(name)
        return None

    return eventually(probe, timeout=180, what=f"a worker pod that did {files_done} files")


def test_an_evicted_worker_is_replaced_and_not_counted_as_a_failure(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, talks(8))
    tjs.create(cluster, ns, "evicted", tjs.job_spec(
        cluster, bucket, shards=1, workers={"parallelism": 1},
        transcription={"language": "en", "beamSize": 1, "packShortClips": False,
                       "batchSize": 1}))
    victim = running_worker(cluster, ns)
    cluster.rest().create(f"/api/v1/namespaces/{ns}/pods/{victim}/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": victim}})
    done = tjs.wait_for(cluster, ns, "evicted", *TERMINAL)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["files"]["failed"] == 0 and status["shards"]["failed"] == 0
    # The Job controller ignored the disruption (podFailurePolicy: no failure counted) and
    # ran the index again in a new pod. What the evicted pod had finished counts as
    # succeeded (the job did that work), not skipped: nothing was done when it was planned.
    (worker,) = [j for j in tjs.jobs(cluster, ns)
                 if j["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    assert worker["status"].get("failed", 0) == 0 and worker["status"]["succeeded"] == 1
    finished = [p["metadata"]["name"] for p in tjs.pods(cluster, ns, "worker")]
    assert finished and victim not in finished
    files = status["files"]
    assert (files["succeeded"], files["skipped"], files["total"]) == (8, 0, 8), files


def test_suspend_stops_the_workers_and_resume_finishes_the_job(
    cluster: LocalCluster, job_namespace: str
) -> None:
    # Enough files, taken one at a time, that the suspend lands while most are still to do
    # (with 8 files in batches, both shards once finished before it took effect).
    ns, bucket = job_namespace, tjs.bucket_with(cluster, talks(40))
    tjs.create(cluster, ns, "paused", tjs.job_spec(
        cluster, bucket, shards=2, transcription={"language": "en", "beamSize": 1,
                                                  "packShortClips": False, "batchSize": 1}))
    running_worker(cluster, ns)
    cluster.kubectl("patch", "tj", "paused", "-n", ns, "--type=merge",
                    "-p", '{"spec": {"suspend": true}}')
    suspended = tjs.wait_for(cluster, ns, "paused", "Suspended", *TERMINAL)
    assert suspended["status"]["phase"] == "Suspended", json.dumps(suspended["status"], indent=1)
    assert tjs.condition(suspended, "Suspended")["status"] == "True"
    eventually(lambda: not [p for p in tjs.pods(cluster, ns, "worker")
                            if (p.get("status") or {}).get("phase") in ("Pending", "Running")],
               timeout=60, what="the suspended Job's pods to stop")
    cluster.kubectl("patch", "tj", "paused", "-n", ns, "--type=merge",
                    "-p", '{"spec": {"suspend": false}}')
    done = tjs.wait_for(cluster, ns, "paused", *TERMINAL)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    reasons = [r for _, r, _ in tjs.events(cluster, ns, "paused")]
    assert "Suspended" in reasons and "Resumed" in reasons


def test_kubectl_scale_changes_the_worker_jobs_parallelism(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, talks(12))
    tjs.create(cluster, ns, "scaled", tjs.job_spec(cluster, bucket, shards=4,
                                                    workers={"parallelism": 1}))
    worker = eventually(lambda: next((j for j in tjs.jobs(cluster, ns) if j["metadata"][
        "labels"]["app.kubernetes.io/component"] == "worker"), None), timeout=120,
        what="the worker Job")
    assert worker["spec"]["parallelism"] == 1
    cluster.kubectl("scale", "tj", "scaled", "-n", ns, "--replicas=3")
    eventually(lambda: tjs.listed(cluster, f"/apis/batch/v1/namespaces/{ns}/jobs",
                                  "app.kubernetes.io/component=worker")[0]["spec"][
        "parallelism"] == 3, timeout=60, what="parallelism 3 on the worker Job")
    done = tjs.wait_for(cluster, ns, "scaled", *TERMINAL)
    assert done["status"]["phase"] == "Succeeded"


def test_a_missing_secret_is_reported_and_creating_it_recovers_the_job(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    ns, bucket = namespace, tjs.bucket_with(cluster, talks(1))
    tjs.create(cluster, ns, "nosecret", tjs.job_spec(cluster, bucket))
    stuck = eventually(lambda: (c := tjs.condition(tjs.get(cluster, ns, "nosecret"),
                                                   "PodsHealthy")).get("status") == "False"
                       and c, timeout=120, what="PodsHealthy False")
    assert stuck["reason"] == "SecretNotFound"
    assert 'secret "s3-credentials" not found' in stuck["message"]
    assert tjs.get(cluster, ns, "nosecret")["status"]["phase"] == "Planning"
    tjs.storage_secret(cluster, ns)
    done = tjs.wait_for(cluster, ns, "nosecret", *TERMINAL)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    assert tjs.condition(done, "PodsHealthy")["status"] == "True"


@pytest.fixture
def operator_restored(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The shared operator, running again after the test whatever happened."""
    yield operator
    if operator.process is None or operator.process.poll() is not None:
        operator.start()


def test_the_operator_killed_mid_run_duplicates_nothing_and_the_job_completes(
    cluster: LocalCluster, job_namespace: str, operator_restored: OperatorProcess
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, talks(8))
    tjs.create(cluster, ns, "restarted", tjs.job_spec(cluster, bucket, shards=4))
    running_worker(cluster, ns)
    operator_restored.stop(kill=True)
    # While it is away the Jobs go on: a shard finishes without anyone watching.
    eventually(lambda: any((j.get("status") or {}).get("succeeded") for j in tjs.jobs(
        cluster, ns) if j["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"),
        timeout=180, what="a shard to finish while the operator is down")
    operator_restored.start()
    done = tjs.wait_for(cluster, ns, "restarted", *TERMINAL)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    assert done["status"]["files"]["succeeded"] == 8
    tjs.one_of_each_job(cluster, ns)


def test_the_api_server_restarted_mid_run_the_operator_reconnects(
    cluster: LocalCluster, job_namespace: str, operator: OperatorProcess
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, talks(8))
    tjs.create(cluster, ns, "apiserver", tjs.job_spec(cluster, bucket, shards=4))
    running_worker(cluster, ns)
    cluster.restart_apiserver()
    done = tjs.wait_for(cluster, ns, "apiserver", *TERMINAL)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    assert operator.process is not None and operator.process.poll() is None
    tjs.one_of_each_job(cluster, ns)


def test_deleting_the_job_lets_the_garbage_collector_remove_what_it_owns(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, talks(6))
    tjs.create(cluster, ns, "deleted", tjs.job_spec(
        cluster, bucket, shards=2, workers={"parallelism": 2, "gpu": {
            "deviceClassName": "gpu.nvidia.com"}}))
    running_worker(cluster, ns)
    claims = f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims"
    assert tjs.listed(cluster, claims)  # the resourceclaim controller made the pods' claims
    cluster.kubectl("delete", "tj", "deleted", "-n", ns, "--wait=false")
    eventually(lambda: not tjs.jobs(cluster, ns) and not tjs.pods(cluster, ns)
               and not tjs.listed(cluster, claims)
               and not tjs.listed(cluster, f"/apis/resource.k8s.io/v1/namespaces/{ns}"
                                           "/resourceclaimtemplates"),
               timeout=120, what="Jobs, pods, claims and claim templates to be collected")
