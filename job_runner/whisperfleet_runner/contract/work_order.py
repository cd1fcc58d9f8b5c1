"""The work order: everything a planner or shard pod needs, carried in its environment, and the
names and paths that order and its pod share (state folder, termination message, metrics)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from whisperfleet_runner.contract.options import (
    DEFAULT_INCLUDE,
    JobOptions,
    ModelOptions,
    OutputOptions,
    TranscriptionOptions,
    from_dict,
)

STATE_DIR = ".whisperfleet"  # <output>/.whisperfleet/<job-uid>/{manifest.jsonl,ledger/}
TERMINATION_MESSAGE_LIMIT = 4096  # bytes, Kubernetes' cap on terminationMessagePath
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# --- environment that carries a work order into a pod ----------------------------------
ENV_WORK_ORDER = "WHISPERFLEET_WORK_ORDER"  # JSON of WorkOrder
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by the Indexed Job controller
ENV_TERMINATION_LOG = "WHISPERFLEET_TERMINATION_LOG"  # = the container's terminationMessagePath
ENV_MODEL_CACHE = "WHISPERFLEET_MODEL_CACHE"  # pre-staged models dir (<cache>/<name>/model.bin)
MODEL_CACHE_MOUNT = "/models"
DEFAULT_METRICS_PORT = 9471  # worker pods serve Prometheus metrics here (container port "metrics")
# Counters the operator sums over a job's running pods for status.progress (served with
# Prometheus' `_total` suffix; fleet.metrics defines them).
METRIC_FILES = "whisperfleet_files"
METRIC_AUDIO_SECONDS = "whisperfleet_audio_seconds"


@dataclass
class WorkOrder:
    """Everything a planner or shard pod needs, apart from credentials (those come from env)."""

    job_uid: str
    input_uri: str
    output: OutputOptions
    include: tuple[str, ...] = DEFAULT_INCLUDE
    model: ModelOptions = field(default_factory=ModelOptions)
    transcription: TranscriptionOptions = field(default_factory=TranscriptionOptions)
    shards: int = 0  # 0 = planner decides
    device: str = "cuda"  # pods: cuda (GPU required) or cpu
    metrics_port: int = 0  # > 0: serve Prometheus metrics there ($POD_IP, else all interfaces)
    # > 0: the GPU memory each runner may use (its share of a shared GPU); the batch is sized
    # from it, never from more than the GPU has free. 0: from the GPU's free memory.
    gpu_memory_budget_mib: int = 0

    @property
    def options(self) -> JobOptions:
        """The per-file options (the same objects: changing one changes the order)."""
        return JobOptions(self.output, self.model, self.transcription)

    @property
    def state_uri(self) -> str:
        return f"{self.output.uri.rstrip('/')}/{STATE_DIR}/{self.job_uid}"

    @property
    def manifest_uri(self) -> str:
        return f"{self.state_uri}/manifest.jsonl"

    @property
    def ledger_uri(self) -> str:
        return f"{self.state_uri}/ledger"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkOrder:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a work order must be a JSON object, not {type(data).__name__}")
        return cls(
            job_uid=data["job_uid"],
            input_uri=data["input_uri"],
            output=from_dict(OutputOptions, data["output"]),
            include=tuple(data.get("include") or DEFAULT_INCLUDE),
            model=from_dict(ModelOptions, data.get("model") or {}),
            transcription=from_dict(TranscriptionOptions, data.get("transcription") or {}),
            shards=int(data.get("shards", 0)),
            device=data.get("device", "cuda"),
            metrics_port=int(data.get("metrics_port", 0)),
            gpu_memory_budget_mib=int(data.get("gpu_memory_budget_mib", 0)),
        )
