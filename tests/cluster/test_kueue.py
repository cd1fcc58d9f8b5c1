"""TranscriptionJobs queued by the real Kueue (v0.17, built from its module; fixtures `kueue`
and `kueue_namespace`, which applies examples/kueue.yaml): quota, priority and preemption,
suspend and scale the way Kueue honours them, and an operator restart while a job waits.

The queue is the example's: flavor tesla-t4 has 2 GPUs of quota, so two jobs of two T4
workers each cannot run at once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import OperatorProcess
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
Obj = dict[str, Any]
QUEUE = "gpu-batch"  # examples/kueue.yaml's LocalQueue
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
SOURCES = ["hello.wav", "nested/numbers.wav", "with space é.wav", "nested/deeper/hello.wav"]
TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed")
# Kueue's own words when a flavor's quota is used up (pkg/scheduler/flavorassigner).
NO_QUOTA = "insufficient unused quota for nvidia.com/gpu in flavor tesla-t4"


def talks(count: int) -> dict[str, Path]:
    return {f"in/talk{n:02d}.wav": AUDIO / SOURCES[n % len(SOURCES)] for n in range(count)}


def t4_job(cluster: LocalCluster, bucket: str, *, parallelism: int = 2, shards: int = 4,
           **overrides: Any) -> Obj:
    """Workers on T4s (the flavor with 2 GPUs of quota), one file at a time."""
    return tjs.job_spec(
        cluster, bucket, shards=shards,
        workers={"parallelism": parallelism, "gpu": {"products": ["Tesla-T4"]},
                 "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
        transcription={"language": "en", "beamSize": 1, "packShortClips": False,
                       "batchSize": 1}, **overrides)


def queued(priority: str = "") -> dict[str, str]:
    return {QUEUE_LABEL: QUEUE, **({PRIORITY_LABEL: priority} if priority else {})}


def workloads(cluster: LocalCluster, ns: str) -> list[Obj]:
    return tjs.listed(cluster, f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{ns}/workloads")


def worker_job(cluster: LocalCluster, ns: str, name: str) -> Obj:
    tj = tjs.get(cluster, ns, name)
    selector = f"whisperfleet.io/job-uid={tj['metadata']['uid']},app.kubernetes.io/component=worker"
    return eventually(lambda: next(iter(tjs.listed(
        cluster, f"/apis/batch/v1/namespaces/{ns}/jobs", selector)), None),
        timeout=180, what=f"the worker Job of {name}")


def ledger_outcomes(cluster: LocalCluster, bucket: str, done: Obj) -> Counter[tuple[str, str]]:
    """(file key, status) -> how many distinct records the job's shard attempts wrote. A
    later attempt of a shard copies the records an earlier one flushed into its own ledger
    (its report counts them once): a copy is the same record, finish time included, where a
    file transcribed again has a record of its own."""
    state = done["status"]["manifestUri"].rsplit("/", 1)[0].split(f"s3://{bucket}/", 1)[1]
    records: set[tuple[str, str, float]] = set()
    for key, body in tjs.objects(cluster, bucket, f"{state}/ledger/").items():
        assert key.endswith(".jsonl"), key
        for line in body.decode().splitlines():
            record = json.loads(line)
            records.add((record["key"], record["status"], record["time"]))
    return Counter((key, status) for key, status, _ in records)


def assert_every_file_done_once(cluster: LocalCluster, bucket: str, done: Obj,
                                count: int) -> None:
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    files = done["status"]["files"]
    assert (files["succeeded"], files["failed"], files["total"]) == (count, 0, count), files
    outcomes = ledger_outcomes(cluster, bucket, done)
    transcribed = Counter(key for (key, status), n in outcomes.items()
                          for _ in range(n) if status == "succeeded")
    assert len(transcribed) == count, outcomes
    assert set(transcribed.values()) == {1}, f"a file transcribed twice: {outcomes}"
    outputs = tjs.objects(cluster, bucket, "out/")
    assert len([k for k in outputs if k.endswith(".txt")]) == count


def running_worker_pods(cluster: LocalCluster, ns: str) -> set[str]:
    return {p["metadata"]["name"] for p in tjs.pods(cluster, ns, "worker")
            if (p.get("status") or {}).get("phase") == "Running"}


def test_jobs_beyond_the_gpu_quota_queue_in_kueue_and_run_in_turn(
    cluster: LocalCluster, kueue_namespace: str
) -> None:
    ns = kueue_namespace
    first_bucket, second_bucket = tjs.bucket_with(cluster, talks(16)), tjs.bucket_with(
        cluster, talks(4))
    tjs.create(cluster, ns, "first", t4_job(cluster, first_bucket), labels=queued())
    tjs.wait_for(cluster, ns, "first", "Running")
    # The deprecated spec field still queues (the label is the documented way).
    tjs.create(cluster, ns, "second", t4_job(cluster, second_bucket, queueName=QUEUE))
    waiting = eventually(
        lambda: (tj := tjs.get(cluster, ns, "second"))["status"].get("phase") == "Queued"
        and NO_QUOTA in tjs.condition(tj, "Running").get("message", "") and tj,
        timeout=180, what="the second job Queued with Kueue's reason")
    assert tjs.condition(waiting, "Running")["reason"] == "Queued"
    assert tjs.get(cluster, ns, "first")["status"]["phase"] == "Running"
    table = cluster.kubectl("get", "tj", "-n", ns).stdout
    (row,) = [line for line in table.splitlines() if line.startswith("second ")]
    assert "Queued" in row and NO_QUOTA in row, table
    assert not tjs.pods(cluster, ns, "worker") or all(
        p["metadata"]["labels"].get("whisperfleet.io/job-uid") != waiting["metadata"]["uid"]
        for p in tjs.pods(cluster, ns, "worker")), "the queued job has pods"

    first = tjs.wait_for(cluster, ns, "first", *TERMINAL, timeout=600)
    second = tjs.wait_for(cluster, ns, "second", *TERMINAL, timeout=600)
    assert_every_file_done_once(cluster, first_bucket, first, 16)
    assert_every_file_done_once(cluster, second_bucket, second, 4)
    # Kueue held the second Job until the first had finished (the Job controller sets
    # startTime when a Job is unsuspended).
    first_job, second_job = worker_job(cluster, ns, "first"), worker_job(cluster, ns, "second")
    assert second_job["status"]["startTime"] >= first_job["status"]["completionTime"]
    reasons = [reason for _, reason, _ in tjs.events(cluster, ns, "second")]
    assert "Queued" in reasons and "Running" in reasons, reasons


def running_worker(cluster: LocalCluster, ns: str, name: str, *, files_done: int = 1) -> Obj:
    """A worker pod of `name` that has transcribed `files_done` files and still runs."""
    uid = tjs.get(cluster, ns, name)["metadata"]["uid"]

    def probe() -> Obj | None:
        for pod in tjs.pods(cluster, ns, "worker"):
            meta = pod["metadata"]
            if meta["labels"].get("whisperfleet.io/job-uid") != uid:
                continue
            done = cluster.kubelet.pod_log(ns, meta["name"]).count(" succeeded ")
            if (pod.get("status") or {}).get("phase") == "Running" and done >= files_done:
                return pod
        return None

    return eventually(probe, timeout=240, what=f"a worker of {name} that did {files_done} files")


def pods_of(cluster: LocalCluster, ns: str, name: str) -> list[Obj]:
    uid = tjs.get(cluster, ns, name)["metadata"]["uid"]
    return [p for p in tjs.pods(cluster, ns, "worker")
            if p["metadata"]["labels"].get("whisperfleet.io/job-uid") == uid]


def queued_because(cluster: LocalCluster, ns: str, name: str, words: str) -> Obj:
    return eventually(
        lambda: (tj := tjs.get(cluster, ns, name))["status"].get("phase") == "Queued"
        and words in tjs.condition(tj, "Running").get("message", "") and tj,
        timeout=240, what=f"{name} Queued, saying {words!r}")


def test_suspending_an_admitted_job_frees_its_quota_and_resuming_does_only_the_rest(
    cluster: LocalCluster, kueue_namespace: str
) -> None:
    ns = kueue_namespace
    bucket, other = tjs.bucket_with(cluster, talks(24)), tjs.bucket_with(cluster, talks(2))
    tjs.create(cluster, ns, "paused", t4_job(cluster, bucket), labels=queued())
    running_worker(cluster, ns, "paused")
    cluster.kubectl("patch", "tj", "paused", "-n", ns, "--type=merge",
                    "-p", '{"spec": {"suspend": true}}')
    suspended = tjs.wait_for(cluster, ns, "paused", "Suspended", *TERMINAL)
    assert suspended["status"]["phase"] == "Suspended", json.dumps(suspended["status"], indent=1)
    # Done as Kueue honours it: the Workload is deactivated, Kueue evicts it and suspends
    # the Job itself, and the pods stop.
    (workload,) = workloads(cluster, ns)
    assert workload["spec"]["active"] is False
    eventually(lambda: worker_job(cluster, ns, "paused")["spec"]["suspend"] is True
               and not [p for p in pods_of(cluster, ns, "paused")
                        if (p.get("status") or {}).get("phase") in ("Pending", "Running")],
               timeout=120, what="Kueue to suspend the Job and its pods to stop")
    # Its quota is free: another T4 job is admitted and finishes meanwhile.
    tjs.create(cluster, ns, "meanwhile", t4_job(cluster, other, shards=2), labels=queued())
    meanwhile = tjs.wait_for(cluster, ns, "meanwhile", *TERMINAL, timeout=400)
    assert_every_file_done_once(cluster, other, meanwhile, 2)
    assert tjs.get(cluster, ns, "paused")["status"]["phase"] == "Suspended"
    # What it finished before the suspend is kept (and, below, not done again).
    kept = [k for k in tjs.objects(cluster, bucket, "out/") if k.endswith(".txt")]
    assert 1 <= len(kept) < 24, kept

    cluster.kubectl("patch", "tj", "paused", "-n", ns, "--type=merge",
                    "-p", '{"spec": {"suspend": false}}')
    done = tjs.wait_for(cluster, ns, "paused", *TERMINAL, timeout=600)
    assert_every_file_done_once(cluster, bucket, done, 24)
    reasons = [reason for _, reason, _ in tjs.events(cluster, ns, "paused")]
    assert "Suspended" in reasons, reasons


def test_an_urgent_job_goes_ahead_and_the_preempted_one_repeats_no_file(
    cluster: LocalCluster, kueue_namespace: str
) -> None:
    ns = kueue_namespace
    buckets = {name: tjs.bucket_with(cluster, talks(count))
               for name, count in (("routine", 24), ("later", 2), ("urgent", 4))}
    tjs.create(cluster, ns, "routine", t4_job(cluster, buckets["routine"]),
               labels=queued("transcription-routine"))
    running_worker(cluster, ns, "routine")
    tjs.create(cluster, ns, "later", t4_job(cluster, buckets["later"], shards=2),
               labels=queued("transcription-routine"))
    queued_because(cluster, ns, "later", NO_QUOTA)
    tjs.create(cluster, ns, "urgent", t4_job(cluster, buckets["urgent"]),
               labels=queued("transcription-urgent"))
    # Kueue evicts the lower-priority running job (the ClusterQueue's withinClusterQueue:
    # LowerPriority) and says so; the urgent one runs on its quota.
    preempted = queued_because(cluster, ns, "routine", "Preempted")
    assert tjs.condition(preempted, "Running")["reason"] == "Queued"
    urgent = tjs.wait_for(cluster, ns, "urgent", *TERMINAL, timeout=400)
    assert_every_file_done_once(cluster, buckets["urgent"], urgent, 4)
    later = tjs.wait_for(cluster, ns, "later", *TERMINAL, timeout=600)
    routine = tjs.wait_for(cluster, ns, "routine", *TERMINAL, timeout=600)
    assert_every_file_done_once(cluster, buckets["later"], later, 2)
    assert_every_file_done_once(cluster, buckets["routine"], routine, 24)
    # The urgent job, created after `later`, ran before it.
    urgent_job, later_job = worker_job(cluster, ns, "urgent"), worker_job(cluster, ns, "later")
    assert later_job["status"]["startTime"] >= urgent_job["status"]["completionTime"]


def test_kubectl_scale_of_an_admitted_job_adds_workers_and_keeps_the_running_ones(
    cluster: LocalCluster, kueue_namespace: str
) -> None:
    ns, bucket = kueue_namespace, tjs.bucket_with(cluster, talks(16))
    tjs.create(cluster, ns, "scaled", t4_job(cluster, bucket, parallelism=1),
               labels=queued())
    first = running_worker(cluster, ns, "scaled")
    cluster.kubectl("scale", "tj", "scaled", "-n", ns, "--replicas=2")

    def both_running() -> list[Obj] | None:
        running = [p for p in pods_of(cluster, ns, "scaled")
                   if (p.get("status") or {}).get("phase") == "Running"]
        return running if len(running) == 2 else None

    running = eventually(both_running, timeout=180, what="two running workers after the scale")
    # The first worker kept running through the scale: same pod, never restarted.
    assert first["metadata"]["uid"] in {p["metadata"]["uid"] for p in running}
    # Kueue admitted the new parallelism as a new slice of the Workload (elastic Job).
    current = [w for w in workloads(cluster, ns)
               if not any(c["type"] == "Finished" and c["status"] == "True"
                          for c in (w.get("status") or {}).get("conditions") or [])]
    assert [w["spec"]["podSets"][0]["count"] for w in current] == [2], current
    done = tjs.wait_for(cluster, ns, "scaled", *TERMINAL, timeout=600)
    assert_every_file_done_once(cluster, bucket, done, 16)
    (kept,) = [p for p in pods_of(cluster, ns, "scaled")
               if p["metadata"]["uid"] == first["metadata"]["uid"]]
    assert kept["status"]["phase"] == "Succeeded"


def test_a_job_queued_while_the_operator_is_away_runs_when_kueue_admits_it(
    cluster: LocalCluster, kueue_namespace: str, operator: OperatorProcess
) -> None:
    ns = kueue_namespace
    blocker_bucket, bucket = tjs.bucket_with(cluster, talks(8)), tjs.bucket_with(cluster,
                                                                                 talks(4))
    tjs.create(cluster, ns, "blocker", t4_job(cluster, blocker_bucket), labels=queued())
    tjs.wait_for(cluster, ns, "blocker", "Running")
    tjs.create(cluster, ns, "waiting", t4_job(cluster, bucket), labels=queued())
    queued_because(cluster, ns, "waiting", NO_QUOTA)
    operator.stop()
    try:
        # Kueue goes on without the operator: the blocker's Job ends, and Kueue admits and
        # unsuspends the waiting one.
        eventually(lambda: worker_job(cluster, ns, "waiting")["spec"]["suspend"] is False,
                   timeout=400, what="Kueue to admit the waiting Job")
    finally:
        operator.start()
    done = tjs.wait_for(cluster, ns, "waiting", *TERMINAL, timeout=400)
    assert_every_file_done_once(cluster, bucket, done, 4)
    assert len([j for j in tjs.jobs(cluster, ns)
                if j["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]) == 2
    blocker = tjs.wait_for(cluster, ns, "blocker", *TERMINAL)
    assert_every_file_done_once(cluster, blocker_bucket, blocker, 8)


def test_dra_claims_count_against_the_same_gpu_quota(
    cluster: LocalCluster, kueue_namespace: str
) -> None:
    # Kueue's deviceClassMappings (kueue.py) count the DeviceClass gpu.nvidia.com as
    # nvidia.com/gpu: a DRA job uses up the T4 flavor's quota that a device-plugin job needs.
    # No product in the DRA job: Kueue v0.17 refuses claims with CEL selectors (next test).
    ns = kueue_namespace
    claims_bucket, plugin_bucket = tjs.bucket_with(cluster, talks(12)), tjs.bucket_with(
        cluster, talks(2))
    spec = t4_job(cluster, claims_bucket)
    spec["workers"]["gpu"] = {"deviceClassName": "gpu.nvidia.com"}
    tjs.create(cluster, ns, "claims", spec, labels=queued())
    tjs.wait_for(cluster, ns, "claims", "Running")
    (admitted,) = [w for w in workloads(cluster, ns) if w["status"].get("admission")]
    (assignment,) = admitted["status"]["admission"]["podSetAssignments"]
    assert assignment["flavors"]["nvidia.com/gpu"] == "tesla-t4", assignment
    assert assignment["resourceUsage"]["nvidia.com/gpu"] == "2", assignment
    tjs.create(cluster, ns, "plugin", t4_job(cluster, plugin_bucket, shards=2),
               labels=queued())
    queued_because(cluster, ns, "plugin", NO_QUOTA)
    claims = tjs.wait_for(cluster, ns, "claims", *TERMINAL, timeout=600)
    plugin = tjs.wait_for(cluster, ns, "plugin", *TERMINAL, timeout=600)
    assert_every_file_done_once(cluster, claims_bucket, claims, 12)
    assert_every_file_done_once(cluster, plugin_bucket, plugin, 2)


def test_a_dra_job_with_gpu_selectors_shows_why_kueue_v0_17_cannot_admit_it(
    cluster: LocalCluster, kueue_namespace: str
) -> None:
    # The operator turns products, memory and compute capability into CEL selectors of the
    # claim; Kueue v0.17 does not count such claims and says so. The job waits, saying why.
    ns, bucket = kueue_namespace, tjs.bucket_with(cluster, talks(1))
    spec = t4_job(cluster, bucket, shards=1)
    spec["workers"]["gpu"] = {"deviceClassName": "gpu.nvidia.com", "products": ["Tesla-T4"]}
    tjs.create(cluster, ns, "selective", spec, labels=queued())
    waiting = queued_because(cluster, ns, "selective", "CEL selectors are not supported")
    assert waiting["status"]["files"]["total"] == 1 and not pods_of(cluster, ns, "selective")
    cluster.kubectl("delete", "tj", "selective", "-n", ns, "--wait=true", timeout=120)
