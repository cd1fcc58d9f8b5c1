"""A TranscriptionJob -> the runner's WorkOrder (the JSON its pods receive)."""

from __future__ import annotations

import dataclasses

from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_runner import contract


def model_cache_claim(job: TranscriptionJob, settings: OperatorSettings | None) -> str:
    """The PVC holding pre-staged models: the job's own, else the operator default, else ""."""
    return job.model_cache_claim or (settings.model_cache_claim if settings else "")


def work_order_for(job: TranscriptionJob, settings: OperatorSettings | None = None
                   ) -> contract.WorkOrder:
    # The read-only mount; the runner looks for <cache>/<name> before downloading.
    cache_dir = contract.MODEL_CACHE_MOUNT if model_cache_claim(job, settings) else None
    return contract.WorkOrder(
        job_uid=job.uid,
        input_uri=job.input_uri,
        output=dataclasses.replace(job.output),  # copies: the job's own stay as parsed
        include=job.include,
        model=contract.ModelOptions(job.model.name, job.model.compute_type, cache_dir),
        transcription=dataclasses.replace(job.transcription),
        shards=job.shards,
        device="cuda",
        metrics_port=settings.metrics_port if settings else 0,
        gpu_memory_budget_mib=job.workers.gpu.memory_budget_mib,
    )
