"""How a TranscriptionJob ends when something outside the happy path happens, on the real
control plane: a worker Job the API server refuses, a worker Job deleted mid-run, a Job
waiting for Kueue, and a namesake re-created after a finished job."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed")
TWO_FILES = {"in/hello.wav": AUDIO / "hello.wav", "in/numbers.wav": AUDIO / "nested/numbers.wav"}


def worker_job(cluster: LocalCluster, ns: str) -> dict[str, Any]:
    return eventually(lambda: next(iter(tjs.listed(
        cluster, f"/apis/batch/v1/namespaces/{ns}/jobs", "app.kubernetes.io/component=worker")),
        None), timeout=120, what="the worker Job")


def test_a_worker_job_the_api_server_would_refuse_fails_the_job_before_it_plans(
    cluster: LocalCluster, job_namespace: str
) -> None:
    # The CRD admits a hugepages limit that is not a multiple of the page size (CEL cannot
    # divide quantities); the Job's own validation does not. The operator's dry run of the
    # worker Job finds it before the planner runs.
    ns, bucket = job_namespace, tjs.bucket_with(cluster, TWO_FILES)
    tjs.create(cluster, ns, "refused", tjs.job_spec(
        cluster, bucket, workers={"parallelism": 1, "resources": {
            "limits": {"hugepages-2Mi": "3Mi", "memory": "1Gi"}}}))
    done = tjs.wait_for(cluster, ns, "refused", *TERMINAL)
    failed = tjs.condition(done, "Failed")
    assert done["status"]["phase"] == "Failed" and failed["reason"] == "JobRejected"
    assert "hugepages-2Mi" in failed["message"], failed["message"]
    assert "not positive integer multiple" in failed["message"], failed["message"]
    assert tjs.jobs(cluster, ns) == []  # neither the planner nor the worker ran


def test_the_ttl_deletes_the_finished_job_and_its_state_folder_and_nothing_else(
    cluster: LocalCluster, job_namespace: str
) -> None:
    # As a Job's TTL with 0: deleted as soon as it finished; first the cleanup Job removes
    # <output>/.whisperfleet/<uid>/ (the operator holds no storage credentials).
    ns, bucket = job_namespace, tjs.bucket_with(cluster, TWO_FILES)
    created = tjs.create(cluster, ns, "expiring", tjs.job_spec(
        cluster, bucket, ttlSecondsAfterFinished=0))
    uid = created["metadata"]["uid"]
    s3 = tjs.s3_client(cluster)
    # Next to the state folder, and never to be touched: other jobs' state, a namesake
    # whose uid starts like ours, an object named like the folder.
    neighbours = [f"out/.whisperfleet/{uid}-old/manifest.jsonl",
                  "out/.whisperfleet/another-job/ledger/0.jsonl", f"out/.whisperfleet/{uid}.txt"]
    for key in neighbours:
        s3.put_object(Bucket=bucket, Key=key, Body=b"keep")
    eventually(lambda: cluster.rest().get(tjs.tj_path(ns, "expiring")) is None, timeout=120,
               what="the TranscriptionJob deleted by its TTL")
    events = tjs.events(cluster, ns, "expiring")
    state = f"s3://{bucket}/out/.whisperfleet/{uid}/"
    assert ("Normal", "StateRemoved", f"the TTL ended: removed {state}") in events, events
    assert ("Normal", "Succeeded") in [(kind, reason) for kind, reason, _ in events], events
    left = tjs.objects(cluster, bucket)
    assert not [key for key in left if key.startswith(f"out/.whisperfleet/{uid}/")], left
    assert set(left) == {*TWO_FILES, *neighbours, "out/hello.json", "out/hello.txt",
                         "out/numbers.json", "out/numbers.txt"}
    # Its Jobs (planner, worker, cleanup) go with it, by garbage collection.
    eventually(lambda: tjs.jobs(cluster, ns) == [], timeout=120, what="the Jobs collected")


def test_a_worker_job_deleted_mid_run_ends_the_job_and_is_not_run_again(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, TWO_FILES)
    # Suspended, so the Job cannot finish before it is deleted.
    tjs.create(cluster, ns, "cut-short", tjs.job_spec(cluster, bucket, suspend=True))
    name = str(worker_job(cluster, ns)["metadata"]["name"])
    tjs.wait_for(cluster, ns, "cut-short", "Suspended")
    cluster.kubectl("delete", "job", name, "-n", ns, "--wait=false")
    done = tjs.wait_for(cluster, ns, "cut-short", *TERMINAL)
    failed = tjs.condition(done, "Failed")
    assert failed["reason"] == "WorkerJobDeleted" and name in failed["message"]
    assert "ledger" in failed["message"]
    assert cluster.rest().get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}") is None


def test_a_namesake_created_after_a_finished_job_starts_afresh_and_skips_the_done(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, TWO_FILES)
    first = tjs.create(cluster, ns, "again", tjs.job_spec(cluster, bucket))
    assert tjs.wait_for(cluster, ns, "again", *TERMINAL)["status"]["phase"] == "Succeeded"
    cluster.kubectl("delete", "tj", "again", "-n", ns, "--wait=true", timeout=120)
    second = tjs.create(cluster, ns, "again", tjs.job_spec(cluster, bucket))
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    done = tjs.wait_for(cluster, ns, "again", *TERMINAL)
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["files"] == {"total": 2, "succeeded": 0, "failed": 0, "skipped": 2}
    assert second["metadata"]["uid"] in done["status"]["manifestUri"]
