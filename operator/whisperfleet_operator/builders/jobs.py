"""The planner Job and the worker Job of a TranscriptionJob (pure: dict in, dict out).

The Kubernetes Job controller does the running, retrying and replacing of pods; these
manifests tell it how:
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

from whisperfleet_operator import kueue, naming
from whisperfleet_operator.builders import gpu, pods
from whisperfleet_operator.builders.hub import hub_settings
from whisperfleet_operator.builders.workorder import model_cache_claim, work_order_for
from whisperfleet_operator.conditions import (
    DISRUPTION_TARGET,
    JOB_COMPLETE,
    JOB_FAILED,
    true_condition,
)
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_runner import contract

MAX_COMPLETIONS = 100_000  # the API server's cap for Indexed Jobs with backoffLimitPerIndex


def _disruption_rule() -> Obj:
    return {"action": "Ignore", "onPodConditions": [{"type": DISRUPTION_TARGET}]}


def _exit_rule(action: str, *codes: int) -> Obj:
    return {
        "action": action,
        "onExitCodes": {
            "containerName": pods.CONTAINER_NAME,
            "operator": "In",
            "values": sorted(codes),
        },
    }


def build_planner_job(job: TranscriptionJob, settings: OperatorSettings) -> Obj:
    """One pod, no GPU: lists the input, writes the manifest, reports a PlanReport."""
    # The planner serves no metrics: it only lists.
    order = dataclasses.replace(work_order_for(job, settings), metrics_port=0)
    container = pods.base_container(
        job, settings, ["plan", "--workers", str(job.workers.parallelism)], order.to_json()
    )
    container["resources"] = copy.deepcopy(settings.planner_resources)
    pod_spec = pods.base_pod_spec(job, settings)
    pod_spec["containers"] = [container]
    labels = naming.pod_labels(job, naming.COMPONENT_PLANNER)
    job_spec: Obj = {
        "backoffLimit": settings.planner_backoff_limit,
        "podFailurePolicy": {"rules": [
            _disruption_rule(),
            # A missing bucket or a bad spec will not fix itself: report it at once.
            _exit_rule("FailJob", contract.EXIT_USAGE, contract.EXIT_STORAGE),
        ]},
        "podReplacementPolicy": "Failed",
        "template": {"metadata": {"labels": labels,
                                  "annotations": naming.pod_annotations(job)},
                     "spec": pod_spec},
    }
    if settings.planner_deadline_seconds > 0:
        job_spec["activeDeadlineSeconds"] = settings.planner_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": naming.metadata(job, naming.planner_job_name(job), naming.COMPONENT_PLANNER),
        "spec": job_spec,
    }


def _worker_resources(job: TranscriptionJob, settings: OperatorSettings) -> Obj:
    resources = copy.deepcopy(job.workers.resources or settings.worker_resources)
    return {k: v for k, v in resources.items() if k in ("requests", "limits") and v}


def build_worker_job(
    job: TranscriptionJob, plan: contract.PlanReport, settings: OperatorSettings
) -> Obj:
    """ONE Indexed Job: completion index i runs shard i of the planner's manifest."""
    if plan.shards < 1:
        raise ValueError(
            f"the plan has {plan.shards} shards; a worker Job needs at least one "
            "(a plan without files should end the TranscriptionJob instead)"
        )
    if plan.shards > MAX_COMPLETIONS:
        raise ValueError(f"the plan has {plan.shards} shards; at most {MAX_COMPLETIONS} allowed")
    workers = job.workers
    order = dataclasses.replace(work_order_for(job, settings), shards=plan.shards)
    cache_volumes, cache_mounts, cache_env = pods.model_cache(model_cache_claim(job, settings))
    hub_env, hub_volumes, hub_mounts = hub_settings(settings)
    placement = gpu.gpu_placement(job)

    container = pods.base_container(job, settings, ["run-shard"], order.to_json())
    # Before CUDA initialises, so CUDA ordinals follow nvidia-smi/NVML order.
    container["env"] = [{"name": "CUDA_DEVICE_ORDER", "value": "PCI_BUS_ID"},
                        *container["env"], *cache_env, *hub_env]
    container["volumeMounts"] = [*container["volumeMounts"], *cache_mounts, *hub_mounts]
    if order.metrics_port:
        container["ports"] = [{"name": "metrics", "containerPort": order.metrics_port,
                               "protocol": "TCP"}]
    resources = _worker_resources(job, settings)
    if placement.limits:
        resources["limits"] = {**resources.get("limits", {}), **placement.limits}
    if placement.container_claims:
        resources["claims"] = placement.container_claims
    container["resources"] = resources

    pod_spec = pods.base_pod_spec(job, settings)
    pod_spec["containers"] = [container]
    pod_spec["volumes"] = [*pod_spec["volumes"], *cache_volumes, *hub_volumes]
    pod_spec["tolerations"] = gpu.with_gpu_toleration(workers.tolerations)
    affinity = gpu.merge_required_node_terms(workers.affinity, placement.node_selector_terms)
    if affinity:
        pod_spec["affinity"] = affinity
    if placement.pod_resource_claims:
        pod_spec["resourceClaims"] = placement.pod_resource_claims
    if workers.runtime_class_name:
        # Only the GPU pods: the planner and cleanup pods need no GPU runtime.
        pod_spec["runtimeClassName"] = workers.runtime_class_name

    job_spec: Obj = {
        "completionMode": "Indexed",
        "completions": plan.shards,
        "parallelism": workers.parallelism,
        "backoffLimitPerIndex": job.per_shard_retries,
        "podFailurePolicy": {"rules": [
            _disruption_rule(),
            _exit_rule("FailJob", contract.EXIT_USAGE),
            _exit_rule("FailIndex", contract.EXIT_BAD_INPUT),
        ]},
        "podReplacementPolicy": "Failed",
        # Kueue admits a queued Job by unsuspending it, so a queued Job starts suspended.
        "suspend": job.suspend or bool(job.queue_name),
        "template": {
            "metadata": {"labels": naming.pod_labels(job, naming.COMPONENT_WORKER),
                         "annotations": naming.pod_annotations(job)},
            "spec": pod_spec,
        },
    }
    # As for a Job: unset means no limit (every shard runs to the end and the status counts
    # the failed ones); N stops the whole Job once more than N shards failed, 0 at the first.
    if job.max_failed_shards is not None:
        job_spec["maxFailedIndexes"] = min(job.max_failed_shards, plan.shards)
    if job.active_deadline_seconds > 0:
        job_spec["activeDeadlineSeconds"] = job.active_deadline_seconds
    # No TTL of its own: spec.ttlSecondsAfterFinished deletes the TranscriptionJob (see
    # reconcile's expiry), and garbage collection this Job with it.

    metadata = naming.metadata(job, naming.worker_job_name(job), naming.COMPONENT_WORKER)
    if job.queue_name:
        metadata["labels"][kueue.LABEL_QUEUE] = job.queue_name
        if job.priority_class:
            metadata["labels"][kueue.LABEL_PRIORITY_CLASS] = job.priority_class
        # `kubectl scale` of an admitted job then becomes a new Workload slice that Kueue
        # admits beside the running pods, instead of a mismatch that requeues the Job.
        metadata.setdefault("annotations", {})[kueue.ANNOTATION_ELASTIC] = "true"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def worker_job_drift(tj: TranscriptionJob, held: bool, job: Obj) -> Obj:
    """The spec fields of an existing, unfinished worker Job that differ from what the
    TranscriptionJob asks for now (a merge patch for `spec`; {} when in line).

    Only parallelism and suspend may change (the planner only lists storage and needs no
    GPU, so it is never suspended). Resuming unsuspends the Job only if the operator held
    it (`held`: its Suspended condition is True): another controller's suspension is not
    ours to lift. A queued Job's suspend is Kueue's alone (it would undo ours): its
    Workload's `spec.active` carries spec.suspend instead (kueue.activation_patch).
    """
    if true_condition(job, JOB_COMPLETE) or true_condition(job, JOB_FAILED):
        return {}
    current = job.get("spec") or {}
    drift: Obj = {}
    if current.get("parallelism") != tj.workers.parallelism:
        drift["parallelism"] = tj.workers.parallelism
    if tj.queue_name:
        return drift
    if tj.suspend and not current.get("suspend"):
        drift["suspend"] = True
    elif not tj.suspend and current.get("suspend") and held:
        drift["suspend"] = False
    return drift
