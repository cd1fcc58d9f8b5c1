"""TranscriptionJob spec (camelCase, DESIGN §3) -> the runner's WorkOrder.

Admission (schema + CEL) refuses most bad specs; the checks here catch what slips through
(e.g. a CRD installed without validation) with a message naming the field.
"""

from __future__ import annotations

from typing import Any

from whisperfleet_runner import config

from .settings import OperatorSettings


def _spec(tj: dict[str, Any]) -> dict[str, Any]:
    spec = tj.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("TranscriptionJob has no spec")
    return spec


def _section(spec: dict[str, Any], key: str) -> dict[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"spec.{key} must be an object")
    return value


def model_cache_claim(tj: dict[str, Any], settings: OperatorSettings | None) -> str:
    """The PVC holding pre-staged models: the job's own, else the operator default, else ""."""
    cache = _section(_section(_spec(tj), "model"), "cacheVolume")
    claim = str(cache.get("claimName") or "")
    if not claim and settings is not None:
        claim = settings.model_cache_claim
    return claim


def work_order_for(
    tj: dict[str, Any], settings: OperatorSettings | None = None
) -> config.WorkOrder:
    spec = _spec(tj)
    uid = (tj.get("metadata") or {}).get("uid")
    if not uid:
        raise ValueError("TranscriptionJob has no metadata.uid")
    inp, out = _section(spec, "input"), _section(spec, "output")
    model, tr = _section(spec, "model"), _section(spec, "transcription")

    input_uri = str(inp.get("uri") or "")
    output_uri = str(out.get("uri") or "")
    if not input_uri:
        raise ValueError("spec.input.uri is required")
    if not output_uri:
        raise ValueError("spec.output.uri is required")

    formats = tuple(out.get("formats") or config.DEFAULT_FORMATS)
    unknown = sorted(set(formats) - set(config.FORMATS))
    if unknown:
        raise ValueError(
            f"spec.output.formats: unknown {unknown}; choose from {', '.join(config.FORMATS)}"
        )
    compute_type = str(model.get("computeType") or "auto")
    if compute_type not in config.COMPUTE_TYPES:
        raise ValueError(
            f"spec.model.computeType: {compute_type!r} is not one of "
            f"{', '.join(config.COMPUTE_TYPES)}"
        )
    task = str(tr.get("task") or "transcribe")
    if task not in config.TASKS:
        raise ValueError(f"spec.transcription.task: {task!r} is not one of {config.TASKS}")
    beam_size = int(tr.get("beamSize", config.DEFAULT_BEAM_SIZE))
    batch_size = int(tr.get("batchSize", config.DEFAULT_BATCH_SIZE))
    if beam_size < 1 or batch_size < 1:
        raise ValueError("spec.transcription.beamSize and batchSize must be at least 1")
    shards = int(spec.get("shards") or 0)
    if shards < 0:
        raise ValueError("spec.shards must not be negative (0 = auto)")

    return config.WorkOrder(
        job_uid=str(uid),
        input_uri=input_uri,
        output=config.OutputOptions(
            uri=output_uri, formats=formats, overwrite=bool(out.get("overwrite", False))
        ),
        include=tuple(inp.get("include") or config.DEFAULT_INCLUDE),
        model=config.ModelOptions(
            name=str(model.get("name") or config.DEFAULT_MODEL),
            compute_type=compute_type,
            # The read-only mount; the runner looks for <cache>/<name> before downloading.
            cache_dir=config.MODEL_CACHE_MOUNT if model_cache_claim(tj, settings) else None,
        ),
        transcription=config.TranscriptionOptions(
            language=str(tr.get("language") or "") or None,
            task=task,
            beam_size=beam_size,
            batch_size=batch_size,
            vad_filter=bool(tr.get("vadFilter", True)),
            word_timestamps=bool(tr.get("wordTimestamps", False)),
            pack_short_clips=bool(tr.get("packShortClips", True)),
            initial_prompt=str(tr.get("initialPrompt") or "") or None,
        ),
        shards=shards,
        device="cuda",
    )
