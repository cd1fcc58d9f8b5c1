"""The planner Job and the worker Job of a TranscriptionJob (pure: dict in, dict out).

The Kubernetes Job controller does the running, retrying and replacing of pods; these
manifests tell it how (DESIGN §4):
- bad media (EXIT_BAD_INPUT) fails only its index, without retries: the shard already wrote
  every good file, and running it again cannot fix the bad ones;
- a bad work order (EXIT_USAGE) fails the whole Job: every other shard would fail the same way;
- EXIT_NO_GPU and EXIT_STORAGE count against the per-index retries: a replacement pod may land
  on a healthy node, and storage errors are often transient (the planner already proved the
  storage reachable);
- eviction, preemption and node drains (`DisruptionTarget`) are ignored, i.e. retried freely.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from whisperfleet_runner import config

from . import gpu, naming, pods
from .settings import OperatorSettings
from .workorder import model_cache_claim, work_order_for

MAX_COMPLETIONS = 100_000  # the API server's cap for Indexed Jobs with backoffLimitPerIndex


def _metadata(tj: dict[str, Any], name: str, component: str) -> dict[str, Any]:
    meta = tj.get("metadata") or {}
    metadata: dict[str, Any] = {
        "name": name,
        "labels": naming.labels_for(tj, component),
        "ownerReferences": [naming.owner_reference(tj)],
    }
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    return metadata


def _workers(tj: dict[str, Any]) -> dict[str, Any]:
    return (tj.get("spec") or {}).get("workers") or {}


def parallelism(tj: dict[str, Any]) -> int:
    value = int(_workers(tj).get("parallelism", 1))
    if value < 1:
        raise ValueError("spec.workers.parallelism must be at least 1")
    return value


def _disruption_rule() -> dict[str, Any]:
    return {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


def _exit_rule(action: str, *codes: int) -> dict[str, Any]:
    return {
        "action": action,
        "onExitCodes": {
            "containerName": pods.CONTAINER_NAME,
            "operator": "In",
            "values": sorted(codes),
        },
    }


def build_planner_job(tj: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """One pod, no GPU: lists the input, writes the manifest, reports a PlanReport."""
    order = work_order_for(tj, settings)
    container = pods.base_container(
        tj, settings, ["plan", "--workers", str(parallelism(tj))], order.to_json()
    )
    container["resources"] = copy.deepcopy(settings.planner_resources)
    pod_spec = pods.base_pod_spec(tj, settings)
    pod_spec["containers"] = [container]
    labels = naming.labels_for(tj, naming.COMPONENT_PLANNER)
    job_spec: dict[str, Any] = {
        "backoffLimit": settings.planner_backoff_limit,
        "podFailurePolicy": {"rules": [
            _disruption_rule(),
            # A missing bucket or a bad spec will not fix itself: report it at once.
            _exit_rule("FailJob", config.EXIT_USAGE, config.EXIT_STORAGE),
        ]},
        "podReplacementPolicy": "Failed",
        "template": {"metadata": {"labels": labels,
                                  "annotations": naming.pod_annotations(tj)},
                     "spec": pod_spec},
    }
    if settings.planner_deadline_seconds > 0:
        job_spec["activeDeadlineSeconds"] = settings.planner_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(tj, naming.planner_job_name(tj), naming.COMPONENT_PLANNER),
        "spec": job_spec,
    }


def _worker_resources(tj: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    user = _workers(tj).get("resources")
    resources = copy.deepcopy(user if user else settings.worker_resources)
    return {k: v for k, v in resources.items() if k in ("requests", "limits") and v}


def build_worker_job(
    tj: dict[str, Any], plan: config.PlanReport, settings: OperatorSettings
) -> dict[str, Any]:
    """ONE Indexed Job: completion index i runs shard i of the planner's manifest."""
    if plan.shards < 1:
        raise ValueError(
            f"the plan has {plan.shards} shards; a worker Job needs at least one "
            "(a plan without files should end the TranscriptionJob instead)"
        )
    if plan.shards > MAX_COMPLETIONS:
        raise ValueError(f"the plan has {plan.shards} shards; at most {MAX_COMPLETIONS} allowed")
    spec = tj.get("spec") or {}
    workers = _workers(tj)
    retries = spec.get("retries") or {}
    per_shard = int(retries.get("perShard", 3))
    max_failed = int(retries.get("maxFailedShards", 0))
    if per_shard < 0 or max_failed < 0:
        raise ValueError("spec.retries.perShard and maxFailedShards must not be negative")

    order = dataclasses.replace(work_order_for(tj, settings), shards=plan.shards)
    claim = model_cache_claim(tj, settings)
    cache_volumes, cache_mounts, cache_env = pods.model_cache(claim)
    placement = gpu.gpu_placement(tj)

    container = pods.base_container(tj, settings, ["run-shard"], order.to_json())
    # Before CUDA initialises, so CUDA ordinals follow nvidia-smi/NVML order.
    container["env"] = [{"name": "CUDA_DEVICE_ORDER", "value": "PCI_BUS_ID"},
                        *container["env"], *cache_env]
    container["volumeMounts"] = [*container["volumeMounts"], *cache_mounts]
    resources = _worker_resources(tj, settings)
    if placement.limits:
        resources["limits"] = {**resources.get("limits", {}), **placement.limits}
    if placement.container_claims:
        resources["claims"] = placement.container_claims
    container["resources"] = resources

    pod_spec = pods.base_pod_spec(tj, settings)
    pod_spec["containers"] = [container]
    pod_spec["volumes"] = [*pod_spec["volumes"], *cache_volumes]
    pod_spec["tolerations"] = gpu.with_gpu_toleration(workers.get("tolerations"))
    if workers.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(workers["nodeSelector"])
    affinity = gpu.merge_required_node_terms(workers.get("affinity"),
                                             placement.node_selector_terms)
    if affinity:
        pod_spec["affinity"] = affinity
    if workers.get("priorityClassName"):
        pod_spec["priorityClassName"] = str(workers["priorityClassName"])
    if placement.pod_resource_claims:
        pod_spec["resourceClaims"] = placement.pod_resource_claims

    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": plan.shards,
        "parallelism": parallelism(tj),
        "backoffLimitPerIndex": per_shard,
        "podFailurePolicy": {"rules": [
            _disruption_rule(),
            _exit_rule("FailJob", config.EXIT_USAGE),
            _exit_rule("FailIndex", config.EXIT_BAD_INPUT),
        ]},
        "podReplacementPolicy": "Failed",
        # Kueue admits a queued Job by unsuspending it, so a queued Job starts suspended.
        "suspend": bool(spec.get("suspend", False)) or bool(spec.get("queueName")),
        "template": {
            "metadata": {"labels": naming.labels_for(tj, naming.COMPONENT_WORKER),
                         "annotations": naming.pod_annotations(tj)},
            "spec": pod_spec,
        },
    }
    # 0 means "no limit": every shard runs to the end and the status counts the failed
    # ones. A positive value stops the whole Job once more shards than that have failed.
    if max_failed > 0:
        job_spec["maxFailedIndexes"] = min(max_failed, plan.shards)
    if int(spec.get("activeDeadlineSeconds") or 0) > 0:
        job_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    # 0 would mean "delete at once" to Kubernetes; for us it means keep.
    if int(spec.get("ttlSecondsAfterFinished") or 0) > 0:
        job_spec["ttlSecondsAfterFinished"] = int(spec["ttlSecondsAfterFinished"])

    metadata = _metadata(tj, naming.worker_job_name(tj), naming.COMPONENT_WORKER)
    if spec.get("queueName"):
        metadata["labels"][naming.LABEL_KUEUE_QUEUE] = str(spec["queueName"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def worker_job_drift(tj: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """The spec fields of an existing, unfinished worker Job that differ from what the
    TranscriptionJob asks for now (a merge patch for `spec`; {} when in line).

    Only parallelism and suspend may change (the planner only lists storage and needs no
    GPU, so it is never suspended). Resuming unsuspends the Job only if the operator held it
    (status condition Suspended is True): Kueue admits a queued Job by unsuspending it, and
    another controller's suspension is not ours to lift.
    """
    conditions = (job.get("status") or {}).get("conditions") or []
    if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
           for c in conditions):
        return {}
    spec, current = tj.get("spec") or {}, job.get("spec") or {}
    held = any(c.get("type") == "Suspended" and c.get("status") == "True"
               for c in (tj.get("status") or {}).get("conditions") or [])
    drift: dict[str, Any] = {}
    if current.get("parallelism") != parallelism(tj):
        drift["parallelism"] = parallelism(tj)
    suspend = bool(spec.get("suspend"))
    if suspend and not current.get("suspend"):
        drift["suspend"] = True
    elif not suspend and current.get("suspend") and held and not spec.get("queueName"):
        drift["suspend"] = False
    return drift
