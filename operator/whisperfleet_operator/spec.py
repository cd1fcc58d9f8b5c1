"""A TranscriptionJob, parsed once into frozen dataclasses: what every builder, the status
code and the work order read, instead of raw dicts with fallback defaults repeated.

Defaults come from the runner's `contract` (the CRD's defaults are tested equal to it), so a
field the API server defaulted and one it did not (a CRD installed without defaults, an old
object) read the same. Admission (schema + CEL) refuses bad specs first; `parse` still
refuses what slips through with a ValueError naming the field, which ends the job as
InvalidSpec instead of building something the API server or the runner would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whisperfleet_operator.objects import Obj
from whisperfleet_runner import contract

# Where a TranscriptionJob names Kueue's LocalQueue and WorkloadPriorityClass: Kueue's own
# labels, read on the parent object as Kueue's JobSet and KubeRay integrations read them.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
DEFAULT_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"  # the MIG "mixed" strategy's resources
SHARED_RESOURCE_SUFFIX = ".shared"  # time-slicing's resource with renameByDefault
EXCLUSIVE, SHARED = "Exclusive", "Shared"  # spec.workers.gpu.sharing
DEFAULT_DATA_MOUNT = "/data"  # the CRD's default for spec.storage.volume.mountPath
DEFAULT_PARALLELISM = 1
DEFAULT_PER_SHARD_RETRIES = 3


@dataclass(frozen=True)
class GpuSpec:
    """spec.workers.gpu (+ gpusPerWorker)."""

    count: int = 1
    resource_name: str = DEFAULT_RESOURCE
    products: tuple[str, ...] = ()
    min_memory_mib: int = 0
    min_compute_capability: tuple[int, int] | None = None
    device_class_name: str = ""
    sharing: str = EXCLUSIVE
    memory_budget_mib: int = 0  # 0: the runner sizes its batch from the GPU's free memory

    @property
    def uses_dra(self) -> bool:
        return bool(self.device_class_name)

    @property
    def mig_resource(self) -> bool:
        """A MIG device under the "mixed" strategy (a resource per profile)."""
        return self.resource_name.startswith(MIG_RESOURCE_PREFIX)

    @property
    def shared(self) -> bool:
        return self.sharing == SHARED


@dataclass(frozen=True)
class WorkersSpec:
    parallelism: int = DEFAULT_PARALLELISM
    gpu: GpuSpec = field(default_factory=GpuSpec)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Obj, ...] = ()
    affinity: Obj | None = None
    priority_class_name: str = ""
    resources: Obj | None = None  # None: the operator's default worker resources
    image: str = ""  # "": the operator's runner image
    image_pull_secrets: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # (name, value) in the spec's order
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    service_account_name: str = ""  # "": the operator's configured one
    runtime_class_name: str = ""  # worker pods only (e.g. nvidia on k3s and RKE2)
    volumes: tuple[Obj, ...] = ()  # core/v1 Volumes of every pod of the job
    volume_mounts: tuple[Obj, ...] = ()  # core/v1 VolumeMounts of the runner container


@dataclass(frozen=True)
class VolumeSpec:
    claim_name: str
    mount_path: str = DEFAULT_DATA_MOUNT
    read_only: bool = False


@dataclass(frozen=True)
class StorageSpec:
    secret_name: str = ""
    endpoint: str = ""
    region: str = ""
    volume: VolumeSpec | None = None


@dataclass(frozen=True)
class TranscriptionJob:
    """One TranscriptionJob: identity from metadata, everything else from spec."""

    name: str
    namespace: str
    uid: str
    input_uri: str
    output: contract.OutputOptions
    include: tuple[str, ...] = contract.DEFAULT_INCLUDE
    model: contract.ModelOptions = field(default_factory=contract.ModelOptions)
    model_cache_claim: str = ""  # spec.model.cacheVolume.claimName
    transcription: contract.TranscriptionOptions = field(
        default_factory=contract.TranscriptionOptions)
    storage: StorageSpec = field(default_factory=StorageSpec)
    workers: WorkersSpec = field(default_factory=WorkersSpec)
    shards: int = 0
    per_shard_retries: int = DEFAULT_PER_SHARD_RETRIES
    max_failed_shards: int | None = None  # unset: no limit (a Job's maxFailedIndexes)
    active_deadline_seconds: int = 0
    ttl_seconds_after_finished: int | None = None  # unset: keep (as a Job's TTL)
    suspend: bool = False
    queue_name: str = ""  # Kueue's LocalQueue (label kueue.x-k8s.io/queue-name or queueName)
    priority_class: str = ""  # Kueue's WorkloadPriorityClass (its label on the TJ)
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)  # metadata.labels
    api_version: str = ""
    kind: str = ""


def parse(tj: Obj) -> TranscriptionJob:
    """The TranscriptionJob object as the API server returns it -> TranscriptionJob."""
    meta = _section(tj, "metadata", "")
    spec = tj.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("TranscriptionJob has no spec")
    for key in ("name", "uid"):
        if not meta.get(key):
            raise ValueError(f"TranscriptionJob has no metadata.{key}")
    inp, out = _section(spec, "input"), _section(spec, "output")
    model, tr = _section(spec, "model"), _section(spec, "transcription")
    retries = _section(spec, "retries")
    input_uri, output_uri = str(inp.get("uri") or ""), str(out.get("uri") or "")
    if not input_uri:
        raise ValueError("spec.input.uri is required")
    if not output_uri:
        raise ValueError("spec.output.uri is required")
    formats = tuple(out.get("formats") or contract.DEFAULT_FORMATS)
    _one_of("spec.output.formats", formats, contract.FORMATS)
    compute_type = str(model.get("computeType") or "auto")
    _one_of("spec.model.computeType", [compute_type], contract.COMPUTE_TYPES)
    task = str(tr.get("task") or "transcribe")
    _one_of("spec.transcription.task", [task], contract.TASKS)
    candidates = tuple(str(c) for c in tr.get("languageCandidates") or ())
    _one_of("spec.transcription.languageCandidates", candidates, contract.WHISPER_LANGUAGES)
    job = TranscriptionJob(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta["uid"]),
        generation=int(meta.get("generation") or 0),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        api_version=str(tj.get("apiVersion") or ""),
        kind=str(tj.get("kind") or ""),
        input_uri=input_uri,
        include=tuple(inp.get("include") or contract.DEFAULT_INCLUDE),
        output=contract.OutputOptions(uri=output_uri, formats=formats,
                                    overwrite=bool(out.get("overwrite", False)),
                                    keep_partial=bool(out.get("keepPartial", False))),
        model=contract.ModelOptions(name=_model_name(model), compute_type=compute_type),
        model_cache_claim=str(_section(model, "cacheVolume", "spec.model.").get("claimName")
                              or ""),
        transcription=contract.TranscriptionOptions(
            language=str(tr.get("language") or "") or None,
            language_candidates=candidates,
            task=task,
            beam_size=_at_least(tr, "beamSize", contract.DEFAULT_BEAM_SIZE, 1,
                                "spec.transcription."),
            batch_size=_at_least(tr, "batchSize", contract.DEFAULT_BATCH_SIZE, 1,
                                 "spec.transcription."),
            vad_filter=bool(tr.get("vadFilter", True)),
            word_timestamps=bool(tr.get("wordTimestamps", False)),
            initial_prompt=str(tr.get("initialPrompt") or "") or None,
            hotwords=str(tr.get("hotwords") or "").strip() or None,
            pack_short_clips=bool(tr.get("packShortClips", True)),
        ),
        storage=_storage(_section(spec, "storage")),
        workers=_workers(_section(spec, "workers")),
        shards=_at_least(spec, "shards", 0, 0, "spec."),
        per_shard_retries=_at_least(retries, "perShard", DEFAULT_PER_SHARD_RETRIES, 0,
                                    "spec.retries."),
        max_failed_shards=(_at_least(retries, "maxFailedShards", 0, 0, "spec.retries.")
                           if retries.get("maxFailedShards") is not None else None),
        active_deadline_seconds=_at_least(spec, "activeDeadlineSeconds", 0, 0, "spec."),
        ttl_seconds_after_finished=(_at_least(spec, "ttlSecondsAfterFinished", 0, 0, "spec.")
                                    if spec.get("ttlSecondsAfterFinished") is not None
                                    else None),
        suspend=bool(spec.get("suspend", False)),
        queue_name=_queue_name(meta.get("labels") or {}, spec),
        priority_class=str((meta.get("labels") or {}).get(KUEUE_PRIORITY_LABEL) or ""),
    )
    return job


def _queue_name(labels: Obj, spec: Obj) -> str:
    """Kueue's LocalQueue: the label Kueue's own integrations read on a parent object
    (JobSet, RayJob), or the older spec.queueName; both may be set only to the same queue."""
    label = str(labels.get(KUEUE_QUEUE_LABEL) or "")
    named = str(spec.get("queueName") or "")
    if label and named and label != named:
        raise ValueError(f"metadata.labels[{KUEUE_QUEUE_LABEL}] ({label!r}) and spec.queueName "
                         f"({named!r}) name different queues; set only the label")
    return label or named


def _section(parent: Obj, key: str, prefix: str = "spec.") -> Obj:
    value = parent.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{prefix}{key} must be an object")
    return value


def _at_least(parent: Obj, key: str, default: int, minimum: int, prefix: str) -> int:
    raw = parent.get(key)
    try:
        value = default if raw is None else int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{prefix}{key} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{prefix}{key} must be at least {minimum}, not {value}")
    return value


def _one_of(name: str, values: Any, allowed: tuple[str, ...]) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{name}: {', '.join(map(repr, unknown))} is not one of "
                         f"{', '.join(allowed)}")


def parse_compute_capability(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*", text)
    if not match:
        raise ValueError(
            f"spec.workers.gpu.minComputeCapability: {text!r} is not MAJOR.MINOR (e.g. \"8.0\")"
        )
    return int(match.group(1)), int(match.group(2) or 0)


def _storage(storage: Obj) -> StorageSpec:
    volume = _section(storage, "volume", "spec.storage.")
    return StorageSpec(
        secret_name=str(storage.get("secretName") or ""),
        endpoint=str(storage.get("endpoint") or ""),
        region=str(storage.get("region") or ""),
        volume=VolumeSpec(claim_name=str(volume["claimName"]),
                          mount_path=str(volume.get("mountPath") or DEFAULT_DATA_MOUNT),
                          read_only=bool(volume.get("readOnly", False)))
        if volume.get("claimName") else None,
    )


def _workers(workers: Obj) -> WorkersSpec:
    gpu = _section(workers, "gpu", "spec.workers.")
    cc = gpu.get("minComputeCapability")
    pull = [item.get("name") if isinstance(item, dict) else item
            for item in workers.get("imagePullSecrets") or []]
    return WorkersSpec(
        parallelism=_at_least(workers, "parallelism", DEFAULT_PARALLELISM, 1, "spec.workers."),
        gpu=GpuSpec(
            count=_at_least(workers, "gpusPerWorker", 1, 1, "spec.workers."),
            resource_name=str(gpu.get("resourceName") or DEFAULT_RESOURCE),
            products=tuple(str(p) for p in gpu.get("products") or ()),
            min_memory_mib=_at_least(gpu, "minMemoryMiB", 0, 0, "spec.workers.gpu."),
            min_compute_capability=parse_compute_capability(str(cc)) if cc else None,
            device_class_name=str(gpu.get("deviceClassName") or ""),
            sharing=_sharing(gpu),
            memory_budget_mib=_at_least(gpu, "memoryBudgetMiB", 0, 0, "spec.workers.gpu."),
        ),
        node_selector=dict(workers.get("nodeSelector") or {}),
        tolerations=tuple(workers.get("tolerations") or ()),
        affinity=workers.get("affinity") or None,
        priority_class_name=str(workers.get("priorityClassName") or ""),
        resources=workers.get("resources") or None,
        image=str(workers.get("image") or ""),
        image_pull_secrets=tuple(str(n) for n in pull if n),
        env=tuple((str(e["name"]), str(e.get("value") or ""))
                  for e in workers.get("env") or () if isinstance(e, dict) and e.get("name")),
        pod_labels={str(k): str(v) for k, v in (workers.get("podLabels") or {}).items()},
        pod_annotations={str(k): str(v)
                         for k, v in (workers.get("podAnnotations") or {}).items()},
        service_account_name=str(workers.get("serviceAccountName") or ""),
        runtime_class_name=str(workers.get("runtimeClassName") or ""),
        volumes=tuple(dict(v) for v in workers.get("volumes") or ()),
        volume_mounts=tuple(dict(m) for m in workers.get("volumeMounts") or ()),
    )


def _sharing(gpu: Obj) -> str:
    sharing = str(gpu.get("sharing") or EXCLUSIVE)
    _one_of("spec.workers.gpu.sharing", [sharing], (EXCLUSIVE, SHARED))
    if sharing == SHARED and not gpu.get("memoryBudgetMiB"):
        raise ValueError("spec.workers.gpu.memoryBudgetMiB is required when "
                         "spec.workers.gpu.sharing is Shared")
    return sharing


MODEL_URI_SCHEMES = ("s3://", "gs://", "az://")


def _model_name(model: dict[str, Any]) -> str:
    """What the runner loads: spec.model.uri (a model staged in object storage, which the
    runner copies once per pod) or spec.model.name. Admission refuses both at once and other
    schemes; checked here too for a CRD installed without its rules."""
    name, uri = str(model.get("name") or ""), str(model.get("uri") or "")
    if not uri:
        return name or contract.DEFAULT_MODEL
    if name:
        raise ValueError("spec.model: give name or uri, not both")
    if not uri.startswith(MODEL_URI_SCHEMES) or len(uri.rstrip("/")) <= len("s3://"):
        raise ValueError("spec.model.uri must be an object-storage prefix "
                         f"({', '.join(MODEL_URI_SCHEMES)}) where `whisperfleet models pull` "
                         "staged the model; a model on a volume is spec.model.name inside "
                         "spec.model.cacheVolume")
    return uri
