"""The NVIDIA GPU modes, decided by the real scheduler on fake nodes labelled as GPU Feature
Discovery labels them: MIG "mixed" (the profile's own memory label), MIG "single" (the slice
is the product), time-slicing with GFD's -SHARED product and with the renamed resource
`nvidia.com/gpu.shared` (only for jobs that opt in with `sharing: Shared`), and the worker
pods' RuntimeClass.

The fake nodes here carry a taint of their own that only these jobs tolerate, so no other
test's job lands on them. The model runs on the CPU under the fake NVML, so what the runner
does with the memory budget is checked in tests/runner/test_shared_gpu_budget.py; here, that
it reaches the worker pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.fake_nodes import NodeSpec, make_gpus
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.paths import AUDIO
from whisperfleet_runner import contract

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
Obj = dict[str, Any]
TAINT = {"key": "whisperfleet.io/gpu-mode-test", "value": "true", "effect": "NoSchedule"}
TOLERATE = [{"key": TAINT["key"], "operator": "Exists"}]
TWO_FILES = {"in/a.wav": AUDIO / "hello.wav", "in/b.wav": AUDIO / "hello.wav"}
A100 = {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "cc": "8.0",
        "architecture": "Ampere"}
T4 = {"name": "Tesla T4", "memory_mib": 15360, "cc": "7.5", "architecture": "Turing"}
ACCEPTED = ("Succeeded", "Failed", "PartiallySucceeded")
NO_AFFINITY = "didn't match Pod's node affinity/selector"


@pytest.fixture(scope="module")
def mode_nodes(cluster: LocalCluster) -> dict[str, NodeSpec]:
    nodes = {
        # MIG "single": both slices of the one A100 are nvidia.com/gpu.
        "single": NodeSpec("a100-single-1", make_gpus("a100-single-1", 1, **A100,
                                                      mig_profile=("1g.10gb", 2, 9728)),
                           mig_strategy="single", taints=(TAINT,)),
        # Time-slicing, 2 replicas: GFD appends -SHARED; renameByDefault renames instead.
        "shared": NodeSpec("t4-shared-1", make_gpus("t4-shared-1", 1, **T4), replicas=2,
                           taints=(TAINT,)),
        "renamed": NodeSpec("t4-renamed-1", make_gpus("t4-renamed-1", 1, **T4), replicas=2,
                            rename_shared=True, taints=(TAINT,)),
    }
    for node in nodes.values():
        cluster.add_node(node)
    return nodes


def node_labels_and_capacity(cluster: LocalCluster, name: str) -> tuple[Obj, Obj]:
    node = cluster.rest().get(f"/api/v1/nodes/{name}")
    assert node is not None
    return node["metadata"]["labels"], node["status"]["capacity"]


def job(cluster: LocalCluster, bucket: str, **workers: Any) -> Obj:
    return tjs.job_spec(cluster, bucket, shards=1, workers={
        "parallelism": 1, "tolerations": TOLERATE, **workers})


def unschedulable(cluster: LocalCluster, ns: str, name: str) -> str:
    condition = eventually(
        lambda: (c := tjs.condition(tjs.get(cluster, ns, name), "PodsHealthy"))
        and c.get("status") == "False" and c, timeout=120, what=f"PodsHealthy=False on {name}")
    assert condition["reason"] == "Unschedulable", condition
    return str(condition["message"])


def succeeded(cluster: LocalCluster, ns: str, name: str) -> list[Obj]:
    done = tjs.wait_for(cluster, ns, name, *ACCEPTED)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    return list(done["status"]["workers"])


def worker_orders(cluster: LocalCluster, ns: str) -> list[contract.WorkOrder]:
    orders = []
    for pod in tjs.pods(cluster, ns, "worker"):
        [runner] = pod["spec"]["containers"]
        [text] = [e["value"] for e in runner["env"] if e["name"] == contract.ENV_WORK_ORDER]
        orders.append(contract.WorkOrder.from_json(text))
    return orders


def test_mig_mixed_min_memory_is_the_profiles_not_the_whole_gpus(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    labels, _ = node_labels_and_capacity(cluster, "a100-mig-1")
    assert (labels["nvidia.com/gpu.memory"], labels["nvidia.com/mig-1g.10gb.memory"]) == (
        "81920", "9728")
    bucket = tjs.bucket_with(cluster, TWO_FILES)
    # 20000 MiB: the A100 has them, its 1g.10gb slices do not.
    tjs.create(cluster, ns, "too-big", job(cluster, bucket, gpu={
        "resourceName": "nvidia.com/mig-1g.10gb", "minMemoryMiB": 20000}))
    tjs.create(cluster, ns, "fits", job(cluster, bucket, gpu={
        "resourceName": "nvidia.com/mig-1g.10gb", "minMemoryMiB": 9728}))
    (worker,) = succeeded(cluster, ns, "fits")
    slices = {m.uuid for m in cluster.kubelet.node("a100-mig-1").mig_instances}
    assert worker["node"] == "a100-mig-1" and worker["gpus"][0]["uuid"] in slices
    assert NO_AFFINITY in unschedulable(cluster, ns, "too-big")


def test_mig_single_slices_are_asked_for_by_their_product(
    cluster: LocalCluster, job_namespace: str, mode_nodes: dict[str, NodeSpec]
) -> None:
    ns = job_namespace
    labels, capacity = node_labels_and_capacity(cluster, "a100-single-1")
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"
    assert labels["nvidia.com/mig.strategy"] == "single"
    assert capacity["nvidia.com/gpu"] == "2"
    bucket = tjs.bucket_with(cluster, TWO_FILES)
    tjs.create(cluster, ns, "slice", job(cluster, bucket, gpu={
        "products": ["NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"], "minMemoryMiB": 9000}))
    (worker,) = succeeded(cluster, ns, "slice")
    slices = {m.uuid for m in mode_nodes["single"].mig_instances}
    assert worker["node"] == "a100-single-1" and worker["gpus"][0]["uuid"] in slices
    assert worker["gpus"][0]["migProfile"] == "1g.10gb"


def test_only_a_job_that_opts_in_shares_a_time_sliced_gpu_with_its_budget(
    cluster: LocalCluster, job_namespace: str, mode_nodes: dict[str, NodeSpec]
) -> None:
    ns = job_namespace
    labels, capacity = node_labels_and_capacity(cluster, "t4-shared-1")
    assert (labels["nvidia.com/gpu.product"], labels["nvidia.com/gpu.replicas"]) == (
        "Tesla-T4-SHARED", "2")
    assert capacity["nvidia.com/gpu"] == "2"
    bucket = tjs.bucket_with(cluster, TWO_FILES)
    # Node affinity, not a nodeSelector: that would hold for the planner pod too, which
    # does not tolerate the GPU taint.
    on_shared = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{
            "key": "kubernetes.io/hostname", "operator": "In", "values": ["t4-shared-1"]}]}]}}}
    tjs.create(cluster, ns, "exclusive", job(cluster, bucket, affinity=on_shared,
                                             gpu={"products": ["Tesla-T4"]}))
    tjs.create(cluster, ns, "shared", tjs.job_spec(cluster, bucket, shards=2, workers={
        "parallelism": 2, "tolerations": TOLERATE, "affinity": on_shared,
        "gpu": {"products": ["Tesla-T4"], "sharing": "Shared", "memoryBudgetMiB": 7680}}))
    workers = succeeded(cluster, ns, "shared")
    (t4,) = mode_nodes["shared"].gpus
    # Two pods, one GPU: each had a replica of it.
    assert [(w["node"], w["gpus"][0]["uuid"]) for w in workers] == [("t4-shared-1", t4.uuid)] * 2
    budgets = {o.gpu_memory_budget_mib for o in worker_orders(cluster, ns)}
    assert 7680 in budgets
    assert NO_AFFINITY in unschedulable(cluster, ns, "exclusive")


def test_a_renamed_shared_gpu_is_asked_for_by_its_resource(
    cluster: LocalCluster, job_namespace: str, mode_nodes: dict[str, NodeSpec]
) -> None:
    ns = job_namespace
    labels, capacity = node_labels_and_capacity(cluster, "t4-renamed-1")
    assert labels["nvidia.com/gpu.product"] == "Tesla-T4"  # renameByDefault leaves it alone
    assert capacity["nvidia.com/gpu.shared"] == "2" and "nvidia.com/gpu" not in capacity
    bucket = tjs.bucket_with(cluster, TWO_FILES)
    tjs.create(cluster, ns, "renamed", job(cluster, bucket, gpu={
        "resourceName": "nvidia.com/gpu.shared", "products": ["Tesla-T4"], "sharing": "Shared",
        "memoryBudgetMiB": 7680}))
    (worker,) = succeeded(cluster, ns, "renamed")
    (t4,) = mode_nodes["renamed"].gpus
    assert (worker["node"], worker["gpus"][0]["uuid"]) == ("t4-renamed-1", t4.uuid)


def test_worker_pods_run_under_the_runtime_class_the_job_names(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    rest = cluster.rest()
    rest.create("/apis/node.k8s.io/v1/runtimeclasses", {
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "nvidia-test"}, "handler": "nvidia"})
    try:
        bucket = tjs.bucket_with(cluster, TWO_FILES)
        tjs.create(cluster, ns, "runtime", job(cluster, bucket, runtimeClassName="nvidia-test"))
        tjs.create(cluster, ns, "absent", job(cluster, bucket, runtimeClassName="absent"))
        succeeded(cluster, ns, "runtime")
        classes = {(pod["metadata"]["labels"]["app.kubernetes.io/component"],
                    pod["spec"].get("runtimeClassName")) for pod in tjs.pods(cluster, ns)}
        assert classes == {("planner", None), ("worker", "nvidia-test")}
        # A RuntimeClass that does not exist: the API server refuses the worker pods, and the
        # worker Job's events say why.
        refused = eventually(
            lambda: [e["message"] for e in tjs.listed(cluster, f"/api/v1/namespaces/{ns}/events")
                     if e.get("reason") == "FailedCreate"
                     and e["involvedObject"]["name"].startswith("absent-work")],
            timeout=120, what="a FailedCreate event of the absent job's worker Job")
        assert 'RuntimeClass "absent" not found' in refused[0], refused
    finally:
        rest.delete("/apis/node.k8s.io/v1/runtimeclasses/nvidia-test", {})
