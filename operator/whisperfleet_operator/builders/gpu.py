"""How worker pods ask for specific GPUs.

Two modes, chosen by `spec.workers.gpu.deviceClassName`:
- device plugin (default): an extended-resource limit (`nvidia.com/gpu`, a MIG resource of
  the "mixed" strategy such as `nvidia.com/mig-1g.10gb`, or time-slicing's renamed
  `nvidia.com/gpu.shared`) plus required node affinity on the labels GPU Feature Discovery
  puts on nodes (`nvidia.com/gpu.product`, `.memory` in MiB or the MIG profile's own
  `nvidia.com/mig-<profile>.memory`, `.compute.major/minor`, `.replicas`). Under the MIG
  "single" strategy a MIG device is an `nvidia.com/gpu` whose product label ends in
  `-MIG-<profile>`: a product like any other here. Shared GPUs (time-slicing) only for
  `sharing: Shared`, whose product labels may carry GFD's `-SHARED` suffix;
- Dynamic Resource Allocation: a ResourceClaimTemplate whose CEL selectors match the
  attributes the NVIDIA DRA driver publishes per device (productName, cudaComputeCapability
  as a semver, capacity `memory` as a quantity) — then no limit and no GFD affinity, because
  the scheduler matches individual devices, not nodes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from whisperfleet_operator import naming
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import GpuSpec, TranscriptionJob

CLAIM_NAME = "gpu"  # the pod-level claim name and the device request name
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_MEMORY = "nvidia.com/gpu.memory"
GFD_CC_MAJOR = "nvidia.com/gpu.compute.major"
GFD_CC_MINOR = "nvidia.com/gpu.compute.minor"
GFD_REPLICAS = "nvidia.com/gpu.replicas"  # > 1: time-slicing or MPS shares each GPU
SHARED_SUFFIX = "-SHARED"  # GFD's product label on a shared GPU (without renameByDefault)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


# --- device-plugin mode -------------------------------------------------------------------


def gfd_products(req: GpuSpec) -> list[str]:
    """The product labels that mean one of `req.products`: on a shared GPU GFD appends
    -SHARED (unless the device plugin renames the resource instead), so a Shared request
    accepts both spellings; an Exclusive one only the plain name."""
    if not req.shared:
        return list(req.products)
    return [name for product in req.products for name in (product, product + SHARED_SUFFIX)]


def gfd_memory_label(req: GpuSpec) -> str:
    """Where GFD puts the memory of what the pod gets: a MIG resource of the "mixed"
    strategy has its own label (`nvidia.com/mig-1g.10gb.memory`); `nvidia.com/gpu.memory`
    is the whole GPU there, and under the "single" strategy already the MIG device's."""
    return f"{req.resource_name}.memory" if req.mig_resource else GFD_MEMORY


def _cross(left: list[list[Obj]], right: list[list[Obj]]) -> list[list[Obj]]:
    """(L1 or L2) and (R1 or R2) as ORed lists of ANDed expressions."""
    return [[*a, *b] for a in left for b in right]


def gfd_node_selector_terms(req: GpuSpec) -> list[Obj]:
    """Node selector terms (ORed) that together mean product ∈ products AND memory ≥ min AND
    compute capability ≥ min AND, unless the job accepts shared GPUs, GPUs that are not
    shared. [] when nothing is asked for."""
    common: list[Obj] = []
    if req.products:
        common.append({"key": GFD_PRODUCT, "operator": "In", "values": gfd_products(req)})
    if req.min_memory_mib > 0:
        # Gt is strict: memory > min-1 is memory >= min for integer MiB.
        common.append({"key": gfd_memory_label(req), "operator": "Gt",
                       "values": [str(req.min_memory_mib - 1)]})
    terms: list[list[Obj]] = [common]
    if req.min_compute_capability is not None:
        major, minor = req.min_compute_capability
        if minor == 0:
            # >= X.0 is just major >= X, i.e. major > X-1: one term suffices.
            capability = [[{"key": GFD_CC_MAJOR, "operator": "Gt", "values": [str(major - 1)]}]]
        else:
            # >= X.Y  ==  major > X  OR  (major == X AND minor > Y-1)
            capability = [
                [{"key": GFD_CC_MAJOR, "operator": "Gt", "values": [str(major)]}],
                [{"key": GFD_CC_MAJOR, "operator": "In", "values": [str(major)]},
                 {"key": GFD_CC_MINOR, "operator": "Gt", "values": [str(minor - 1)]}],
            ]
        terms = _cross(terms, capability)
    if not req.shared:
        # A time-sliced (or MPS) GPU's free memory belongs to its other tenants too: only a
        # job that opted in, with a memory budget, goes there. GFD labels every node it
        # knows with its replicas (1: not shared); a node without GFD has no label.
        terms = _cross(terms, [
            [{"key": GFD_REPLICAS, "operator": "DoesNotExist"}],
            [{"key": GFD_REPLICAS, "operator": "In", "values": ["1"]}],
        ])
    return [{"matchExpressions": term} for term in terms if term]


def merge_required_node_terms(
    affinity: Obj | None, terms: list[Obj]
) -> Obj | None:
    """The user's affinity with `terms` ANDed into its required node affinity.

    Terms are ORed and expressions within a term ANDed, so (U1 or U2) and (G1 or G2) is the
    cross product U1G1, U1G2, U2G1, U2G2. Everything else in the affinity passes through.
    """
    merged = copy.deepcopy(affinity) if affinity else {}
    if not terms:
        return merged or None
    node = merged.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    user_terms = required.get("nodeSelectorTerms") or [{}]
    combined = []
    for user in user_terms:
        for ours in terms:
            term = copy.deepcopy(user)
            term["matchExpressions"] = [
                *(user.get("matchExpressions") or []), *ours["matchExpressions"]
            ]
            combined.append(term)
    required["nodeSelectorTerms"] = combined
    return merged


def with_gpu_toleration(tolerations: Sequence[Obj]) -> list[Obj]:
    """The user's tolerations plus the usual taint on GPU nodes, once."""
    result = [copy.deepcopy(t) for t in tolerations or []]
    if GPU_TOLERATION not in result:
        result.append(dict(GPU_TOLERATION))
    return result


# --- DRA mode -----------------------------------------------------------------------------


def _cel_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid CEL string literal


def dra_cel_selectors(req: GpuSpec, domain: str = "gpu.nvidia.com") -> list[str]:
    """CEL expressions, all of which a device must satisfy."""
    attrs = f"device.attributes[{_cel_string(domain)}]"
    exprs: list[str] = []
    if req.products:
        # The driver publishes NVML's name ("NVIDIA H100 80GB HBM3"); GFD's label, which
        # users copy into `products`, is the same with spaces as dashes.
        names = ", ".join(_cel_string(p) for p in req.products)
        exprs.append(f'{attrs}.productName.replace(" ", "-") in [{names}]')
    if req.min_memory_mib > 0:
        exprs.append(
            f"device.capacity[{_cel_string(domain)}].memory"
            f'.compareTo(quantity("{req.min_memory_mib}Mi")) >= 0'
        )
    if req.min_compute_capability is not None:
        major, minor = req.min_compute_capability
        exprs.append(
            f'{attrs}.cudaComputeCapability.compareTo(semver("{major}.{minor}.0")) >= 0'
        )
    return exprs


def build_resource_claim_template(
    job: TranscriptionJob, settings: OperatorSettings
) -> Obj | None:
    """The worker pods' ResourceClaimTemplate in DRA mode; None in device-plugin mode."""
    req = job.workers.gpu
    if not req.uses_dra:
        return None
    exactly: Obj = {
        "deviceClassName": req.device_class_name,
        "allocationMode": "ExactCount",
        "count": req.count,
    }
    selectors = dra_cel_selectors(req, settings.dra_attribute_domain)
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": naming.metadata(job, naming.claim_template_name(job),
                                    naming.COMPONENT_WORKER),
        "spec": {"spec": {"devices": {"requests": [{"name": CLAIM_NAME, "exactly": exactly}]}}},
    }


# --- what the worker pod gets -------------------------------------------------------------


@dataclass
class GpuPlacement:
    """The pieces of a worker pod spec that ask for GPUs."""

    limits: dict[str, str] = field(default_factory=dict)  # container resources.limits
    container_claims: list[dict[str, str]] = field(default_factory=list)  # resources.claims
    pod_resource_claims: list[dict[str, str]] = field(default_factory=list)  # pod resourceClaims
    node_selector_terms: list[Obj] = field(default_factory=list)  # AND into affinity


def gpu_placement(job: TranscriptionJob) -> GpuPlacement:
    req = job.workers.gpu
    if req.uses_dra:
        return GpuPlacement(
            container_claims=[{"name": CLAIM_NAME}],
            pod_resource_claims=[
                {"name": CLAIM_NAME, "resourceClaimTemplateName": naming.claim_template_name(job)}
            ],
        )
    return GpuPlacement(
        limits={req.resource_name: str(req.count)},
        node_selector_terms=gfd_node_selector_terms(req),
    )
