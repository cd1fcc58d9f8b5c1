"""How worker pods ask for specific GPUs: device-plugin limits + GFD node affinity, or DRA.

Node affinity is checked by what it selects: a small evaluator applies Kubernetes'
node-selector semantics (terms ORed, expressions ANDed, `Gt` a strict integer comparison)
to node labels as GPU Feature Discovery writes them. DRA selectors are real CEL, evaluated
with cel-python against devices shaped like the NVIDIA DRA driver's ResourceSlices; the few
Kubernetes CEL library functions they use (quantity, semver, compareTo, replace) are
provided here with the Kubernetes semantics.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.support.transcription_jobs import parsed
from whisperfleet_operator import naming, spec
from whisperfleet_operator.builders import gpu, jobs
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_runner import contract

PLAN = contract.PlanReport(files=8, bytes=10**8, shards=4)
SETTINGS = OperatorSettings()


def make_tj(**fields: Any) -> TranscriptionJob:
    return parsed(name="gpu-test", uid="2b0c3c1e-3333-4c4c-8d8d-00112233aabb",
                  input={"uri": "s3://in/"}, output={"uri": "s3://out/"}, **fields)


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only

# --- Kubernetes node-selector semantics ------------------------------------------------------


def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    value, op, values = labels.get(expr["key"]), expr["operator"], expr.get("values", [])
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        (bound,) = values
        if value is None:
            return False
        return int(value) > int(bound) if op == "Gt" else int(value) < int(bound)
    raise AssertionError(f"unknown operator {op}")


def schedulable(pod_spec: dict[str, Any], labels: dict[str, str]) -> bool:
    required = (pod_spec.get("affinity") or {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    selector_ok = all(labels.get(k) == v for k, v in (pod_spec.get("nodeSelector") or {}).items())
    if not required:
        return selector_ok
    return selector_ok and any(
        all(_matches(e, labels) for e in term.get("matchExpressions", []))
        for term in required["nodeSelectorTerms"]
    )


def gfd_node(product: str, memory: int, major: int, minor: int, **extra: str) -> dict[str, str]:
    return {
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory),
        "nvidia.com/gpu.compute.major": str(major),
        "nvidia.com/gpu.compute.minor": str(minor),
        **extra,
    }


H100 = gfd_node("NVIDIA-H100-80GB-HBM3", 81559, 9, 0)
A100_40 = gfd_node("NVIDIA-A100-SXM4-40GB", 40960, 8, 0)
A10 = gfd_node("NVIDIA-A10", 23028, 8, 6)
L4 = gfd_node("NVIDIA-L4", 23034, 8, 9)
T4 = gfd_node("Tesla-T4", 15360, 7, 5)
CPU_NODE = {"kubernetes.io/os": "linux"}


def worker_pod(**gpu_spec: Any) -> dict[str, Any]:
    tj = make_tj(workers={"parallelism": 1, "gpu": gpu_spec})
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(job)
    return job["spec"]["template"]["spec"]


# --- device-plugin mode ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "resource", "count"),
    [
        ({}, "nvidia.com/gpu", "1"),
        ({"gpusPerWorker": 2}, "nvidia.com/gpu", "2"),
        ({"gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}}, "nvidia.com/mig-1g.10gb", "1"),
    ],
)
def test_device_plugin_limit(workers: dict[str, Any], resource: str, count: str) -> None:
    job = jobs.build_worker_job(make_tj(workers={"parallelism": 1, **workers}), PLAN, SETTINGS)
    validate(job)
    limits = container(job)["resources"]["limits"]
    assert limits[resource] == count
    assert [k for k in limits if k.startswith("nvidia.com/")] == [resource]
    assert "resourceClaims" not in job["spec"]["template"]["spec"]


def test_no_gpu_constraints_means_any_unshared_gpu_and_the_gpu_toleration() -> None:
    pod = worker_pod()
    assert all(schedulable(pod, n) for n in (H100, A100_40, A10, L4, T4, CPU_NODE))
    assert schedulable(pod, {**T4, "nvidia.com/gpu.replicas": "1"})
    assert not schedulable(pod, {**T4, "nvidia.com/gpu.replicas": "4"})
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"]


# --- MIG strategies and shared GPUs, with labels as GPU Feature Discovery writes them ---------

# MIG "mixed": the product and nvidia.com/gpu.memory are the whole GPU's; each profile has
# its own resource and labels.
A100_MIXED = gfd_node("NVIDIA-A100-SXM4-80GB", 81920, 8, 0, **{
    "nvidia.com/mig.strategy": "mixed", "nvidia.com/mig-1g.10gb.count": "7",
    "nvidia.com/mig-1g.10gb.memory": "9728", "nvidia.com/mig-3g.40gb.count": "2",
    "nvidia.com/mig-3g.40gb.memory": "40192"})
# MIG "single": every GPU is sliced alike; the product names the slice and memory is its own.
A100_SINGLE = gfd_node("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", 9728, 8, 0, **{
    "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "7"})
# Time-slicing without renameByDefault: -SHARED product; with it, the resource is renamed and
# the product label left alone. Both label the replicas and the strategy.
T4_SHARED = gfd_node("Tesla-T4-SHARED", 15360, 7, 5, **{
    "nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "time-slicing"})
T4_RENAMED = gfd_node("Tesla-T4", 15360, 7, 5, **{
    "nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "time-slicing"})


def test_mig_mixed_min_memory_reads_the_profiles_own_label() -> None:
    pod = worker_pod(resourceName="nvidia.com/mig-3g.40gb", minMemoryMiB=20000)
    assert schedulable(pod, A100_MIXED)
    small = worker_pod(resourceName="nvidia.com/mig-1g.10gb", minMemoryMiB=20000)
    # The whole GPU has 80 GiB, but a 1g.10gb slice does not hold 20000 MiB.
    assert not schedulable(small, A100_MIXED)
    assert schedulable(worker_pod(resourceName="nvidia.com/mig-1g.10gb", minMemoryMiB=9728),
                       A100_MIXED)


def test_mig_single_slices_are_products_and_their_memory_is_the_slices() -> None:
    pod = worker_pod(products=["NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"], minMemoryMiB=9000)
    assert schedulable(pod, A100_SINGLE)
    assert not schedulable(pod, A100_MIXED)
    assert not schedulable(worker_pod(products=["NVIDIA-A100-SXM4-80GB"]), A100_SINGLE)
    assert not schedulable(worker_pod(minMemoryMiB=16000), A100_SINGLE)


def test_exclusive_jobs_stay_off_shared_gpus_and_shared_jobs_accept_both() -> None:
    exclusive = worker_pod(products=["Tesla-T4"])
    assert schedulable(exclusive, T4)
    assert not schedulable(exclusive, T4_SHARED)
    assert not schedulable(exclusive, T4_RENAMED)
    shared = worker_pod(products=["Tesla-T4"], sharing="Shared", memoryBudgetMiB=3840,
                        minComputeCapability="7.5")
    assert [schedulable(shared, n) for n in (T4, T4_SHARED, T4_RENAMED, L4)] == [
        True, True, True, False]


def test_the_renamed_shared_resource_is_asked_for_as_given() -> None:
    pod = worker_pod(resourceName="nvidia.com/gpu.shared", sharing="Shared",
                     memoryBudgetMiB=3840)
    (runner,) = pod["containers"]
    assert runner["resources"]["limits"]["nvidia.com/gpu.shared"] == "1"
    assert "nvidia.com/gpu" not in runner["resources"]["limits"]


def test_the_memory_budget_reaches_the_runners_work_order() -> None:
    pod = worker_pod(sharing="Shared", memoryBudgetMiB=3840)
    (runner,) = pod["containers"]
    (order,) = [e["value"] for e in runner["env"] if e["name"] == contract.ENV_WORK_ORDER]
    assert contract.WorkOrder.from_json(order).gpu_memory_budget_mib == 3840
    default = worker_pod()["containers"][0]
    (order,) = [e["value"] for e in default["env"] if e["name"] == contract.ENV_WORK_ORDER]
    assert contract.WorkOrder.from_json(order).gpu_memory_budget_mib == 0


def test_shared_without_a_memory_budget_is_refused_by_the_parser_too() -> None:
    with pytest.raises(ValueError, match="memoryBudgetMiB is required"):
        make_tj(workers={"gpu": {"sharing": "Shared"}})
    with pytest.raises(ValueError, match="sharing: 'Timesliced' is not one of"):
        make_tj(workers={"gpu": {"sharing": "Timesliced", "memoryBudgetMiB": 1}})


def test_runtime_class_is_the_workers_only() -> None:
    tj = make_tj(workers={"runtimeClassName": "nvidia"})
    worker = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(worker)
    assert worker["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    planner = jobs.build_planner_job(tj, SETTINGS)
    assert "runtimeClassName" not in planner["spec"]["template"]["spec"]


def test_products_select_only_those_nodes() -> None:
    pod = worker_pod(products=["NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"])
    assert [n is H100 or n is L4 for n in (H100, A100_40, A10, L4, T4)] == [
        schedulable(pod, n) for n in (H100, A100_40, A10, L4, T4)]
    assert not schedulable(pod, CPU_NODE)


def test_min_memory_is_inclusive() -> None:
    pod = worker_pod(minMemoryMiB=40960)
    assert schedulable(pod, A100_40)  # exactly the minimum: allowed
    assert not schedulable(pod, gfd_node("X", 40959, 8, 0))
    assert schedulable(pod, H100)
    assert not schedulable(pod, A10)
    expr = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40959"]} in expr


@pytest.mark.parametrize(
    ("minimum", "accepted"),
    [
        ("8.6", {(8, 6), (8, 9), (9, 0), (10, 0), (12, 1)}),
        ("8.0", {(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 1)}),
        ("8", {(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 1)}),
        ("7.5", {(7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 1)}),
        ("9.0", {(9, 0), (10, 0), (12, 1)}),
        ("10.0", {(10, 0), (12, 1)}),  # two digits: numeric, not string comparison
    ],
)
def test_min_compute_capability_is_greater_or_equal(minimum: str, accepted: set) -> None:
    pod = worker_pod(minComputeCapability=minimum)
    caps = [(6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 1)]
    got = {cc for cc in caps if schedulable(pod, gfd_node("GPU", 16000, *cc))}
    assert got == accepted


def test_all_constraints_together() -> None:
    pod = worker_pod(products=["NVIDIA-A10", "NVIDIA-L4", "Tesla-T4"], minMemoryMiB=20000,
                     minComputeCapability="8.6")
    assert {name for name, n in {"H100": H100, "A100": A100_40, "A10": A10, "L4": L4,
                                 "T4": T4}.items() if schedulable(pod, n)} == {"A10", "L4"}


def test_gpu_affinity_is_anded_with_the_users_affinity() -> None:
    user_affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            ]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "spot", "operator": "DoesNotExist"}]}}],
        },
    }
    tj = make_tj(workers={"parallelism": 1, "affinity": user_affinity, "nodeSelector": {
        "pool": "asr"}, "gpu": {"minComputeCapability": "8.6"}})
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    for zone in ("a", "b"):
        assert schedulable(pod, {**L4, "zone": zone, "pool": "asr"})
        assert not schedulable(pod, {**T4, "zone": zone, "pool": "asr"})  # GPU too old
    assert not schedulable(pod, {**L4, "zone": "c", "pool": "asr"})  # user's zones still hold
    assert not schedulable(pod, {**L4, "zone": "a"})  # nodeSelector still holds
    assert pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] \
        == user_affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]


def test_user_tolerations_kept_and_gpu_toleration_not_duplicated() -> None:
    mine = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    other = {"key": "spot", "operator": "Exists"}
    assert gpu.with_gpu_toleration([other, mine]) == [other, mine]
    assert gpu.with_gpu_toleration(None) == [mine]


@pytest.mark.parametrize("bad", ["eight", "8.x", "8.6.1", "-1"])
def test_bad_compute_capability_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="minComputeCapability"):
        jobs.build_worker_job(
            make_tj(workers={"parallelism": 1, "gpu": {"minComputeCapability": bad}}),
            PLAN, SETTINGS)


def test_bad_gpu_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="gpusPerWorker"):
        make_tj(workers={"gpusPerWorker": 0})
    with pytest.raises(ValueError, match="minMemoryMiB"):
        make_tj(workers={"gpu": {"minMemoryMiB": -5}})


# --- DRA mode --------------------------------------------------------------------------------


DRA_GPU = {"deviceClassName": "gpu.nvidia.com", "products": ["NVIDIA-H100-80GB-HBM3",
           "NVIDIA-A100-SXM4-40GB"], "minMemoryMiB": 40000, "minComputeCapability": "8.0"}


def test_device_plugin_mode_has_no_claim_template() -> None:
    assert gpu.build_resource_claim_template(make_tj(), SETTINGS) is None


def test_dra_claim_template() -> None:
    tj = make_tj(workers={"parallelism": 2, "gpusPerWorker": 2, "gpu": DRA_GPU})
    rct = gpu.build_resource_claim_template(tj, SETTINGS)
    assert rct is not None
    assert kubernetes_validate.validate(rct, kubernetes_validate.latest_version(), strict=True)
    assert rct["apiVersion"] == "resource.k8s.io/v1"
    assert rct["metadata"]["name"] == naming.claim_template_name(tj)
    assert rct["metadata"]["namespace"] == "media"
    assert rct["metadata"]["ownerReferences"] == [naming.owner_reference(tj)]
    (request,) = rct["spec"]["spec"]["devices"]["requests"]
    assert request["name"] == "gpu"
    exactly = request["exactly"]
    assert exactly["deviceClassName"] == "gpu.nvidia.com"
    assert exactly["count"] == 2
    assert len(exactly["selectors"]) == 3


def test_dra_worker_pod_uses_the_claim_not_limits_or_gfd() -> None:
    tj = make_tj(workers={"parallelism": 1, "gpu": DRA_GPU, "nodeSelector": {"pool": "asr"}})
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [
        {"name": "gpu", "resourceClaimTemplateName": naming.claim_template_name(tj)}]
    resources = container(job)["resources"]
    assert resources["claims"] == [{"name": "gpu"}]
    assert not [k for k in resources.get("limits", {}) if k.startswith("nvidia.com/")]
    assert "affinity" not in pod  # the scheduler matches devices, not node labels
    assert pod["nodeSelector"] == {"pool": "asr"}


def test_dra_without_constraints_has_no_selectors() -> None:
    rct = gpu.build_resource_claim_template(
        make_tj(workers={"gpu": {"deviceClassName": "mig.nvidia.com"}}), SETTINGS)
    assert rct is not None
    validate(rct)
    exactly = rct["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly == {"deviceClassName": "mig.nvidia.com", "allocationMode": "ExactCount",
                       "count": 1}


# The DRA selectors themselves are evaluated by the real scheduler in
# tests/cluster/test_dra_selectors.py.


def test_dra_attribute_domain_comes_from_settings() -> None:
    settings = OperatorSettings(dra_attribute_domain="gpu.example.com")
    rct = gpu.build_resource_claim_template(
        make_tj(workers={"gpu": {**DRA_GPU}}), settings)
    assert rct is not None
    text = str(rct["spec"])
    assert "gpu.example.com" in text and '"gpu.nvidia.com"]' not in text


def test_placement_input_not_mutated() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    before = copy.deepcopy(affinity)
    terms = gpu.gfd_node_selector_terms(spec.GpuSpec(min_memory_mib=1000))
    merged = gpu.merge_required_node_terms(affinity, terms)
    assert affinity == before
    assert merged is not None and merged != before
