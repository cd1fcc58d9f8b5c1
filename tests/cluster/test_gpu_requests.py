"""How TranscriptionJobs ask for GPUs, decided by the real scheduler: GPU Feature Discovery
labels and device-plugin counts, MIG resources, Dynamic Resource Allocation with CEL
selectors — and what the user sees when nothing fits, until a node that fits arrives."""

from __future__ import annotations

import json

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.fake_nodes import NodeSpec, make_gpus
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ONE_FILE = {"in/hello.wav": AUDIO / "hello.wav"}


def one_worker(cluster: LocalCluster, bucket: str, **workers: object) -> dict[str, object]:
    return tjs.job_spec(cluster, bucket, shards=1, workers={"parallelism": 1, **workers})


def pods_health(cluster: LocalCluster, ns: str, name: str, status: str) -> dict[str, str]:
    return eventually(
        lambda: (c := tjs.condition(tjs.get(cluster, ns, name), "PodsHealthy"))
        and c.get("status") == status and c, timeout=120,
        what=f"PodsHealthy={status} on {name}")


def test_a_gpu_no_node_has_is_reported_then_a_matching_node_recovers_the_job(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    bucket = tjs.bucket_with(cluster, ONE_FILE)
    tjs.create(cluster, ns, "b200", one_worker(cluster, bucket, gpu={
        "products": ["NVIDIA-B200"], "minComputeCapability": "10.0"}))
    stuck = pods_health(cluster, ns, "b200", "False")
    assert stuck["reason"] == "Unschedulable"
    # The real scheduler's own words, quoted.
    assert "didn't match Pod's node affinity/selector" in stuck["message"], stuck["message"]
    assert tjs.get(cluster, ns, "b200")["status"]["phase"] == "Running"
    # The Event is posted after the status write that carries the condition.
    warnings = eventually(
        lambda: [r for t, r, _ in tjs.events(cluster, ns, "b200") if t == "Warning"],
        timeout=30, what="a Warning Event on b200")
    assert warnings == ["Unschedulable"]
    cluster.add_node(NodeSpec("b200-1", make_gpus("b200-1", 1, name="NVIDIA B200",
                                                   memory_mib=183359, cc="10.0",
                                                   architecture="Blackwell")))
    done = tjs.wait_for(cluster, ns, "b200", "Succeeded", "Failed", "PartiallySucceeded")
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    assert done["status"]["workers"][0]["node"] == "b200-1"
    assert tjs.condition(done, "PodsHealthy")["status"] == "True"


def test_more_gpus_per_worker_than_any_node_has_is_reported_with_the_schedulers_reason(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    bucket = tjs.bucket_with(cluster, ONE_FILE)
    tjs.create(cluster, ns, "eight", one_worker(cluster, bucket, gpusPerWorker=8))
    stuck = pods_health(cluster, ns, "eight", "False")
    assert stuck["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in stuck["message"], stuck["message"]


def test_dra_selectors_pick_a_device_that_satisfies_them(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    bucket = tjs.bucket_with(cluster, ONE_FILE)
    tjs.create(cluster, ns, "dra-t4", one_worker(cluster, bucket, gpu={
        "deviceClassName": "gpu.nvidia.com", "products": ["Tesla-T4"],
        "minComputeCapability": "7.5", "minMemoryMiB": 15000}))
    done = tjs.wait_for(cluster, ns, "dra-t4", "Succeeded", "Failed", "PartiallySucceeded")
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    (worker,) = done["status"]["workers"]
    t4 = {g.uuid for g in cluster.kubelet.node("t4-1").gpus}
    assert worker["node"] == "t4-1" and worker["gpus"][0]["uuid"] in t4
    # The claim the real resourceclaim controller made from our template was allocated by
    # the real scheduler, and is gone with its pod.
    templates = tjs.listed(cluster, f"/apis/resource.k8s.io/v1/namespaces/{ns}"
                                    "/resourceclaimtemplates")
    assert [t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"]
            for t in templates] == ["gpu.nvidia.com"]


def test_a_mig_request_lands_on_the_mig_node_with_a_mig_device(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    bucket = tjs.bucket_with(cluster, ONE_FILE)
    tjs.create(cluster, ns, "mig", one_worker(cluster, bucket, gpu={
        "resourceName": "nvidia.com/mig-1g.10gb"}))
    done = tjs.wait_for(cluster, ns, "mig", "Succeeded", "Failed", "PartiallySucceeded")
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    (worker,) = done["status"]["workers"]
    mig = {m.uuid for m in cluster.kubelet.node("a100-mig-1").mig_instances}
    assert worker["node"] == "a100-mig-1" and worker["gpus"][0]["uuid"] in mig
