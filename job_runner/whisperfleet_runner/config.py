"""The work-order contract between the operator, the planner and the runner.

This module is the one source of truth for defaults, exit codes and the environment
variables that carry a work order into a pod. The operator imports it, so it must stay
free of heavy imports (no faster-whisper, no fsspec, no click).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# --- exit codes (CLI and pods; the operator's podFailurePolicy keys on them) -------------
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some files failed; the others were written (CLI)
EXIT_USAGE = 2  # bad usage, bad spec or nothing usable
EXIT_NO_GPU = 3  # a GPU was required (device cuda) but none allocated/usable
EXIT_BAD_INPUT = 42  # a shard finished, but some of its files are bad media: FailIndex, no retry
EXIT_STORAGE = 43  # input/output storage unreachable (missing bucket, bad credentials)

# --- defaults --------------------------------------------------------------------------
DEFAULT_INCLUDE: tuple[str, ...] = (
    "*.wav", "*.mp3", "*.flac", "*.ogg", "*.opus", "*.m4a", "*.aac", "*.wma", "*.webm",
    "*.mp4", "*.mkv", "*.mov", "*.avi", "*.mka",
)
FORMATS: tuple[str, ...] = ("json", "txt", "srt", "vtt", "tsv")
DEFAULT_FORMATS: tuple[str, ...] = ("json", "txt", "srt", "vtt")
COMPUTE_TYPES: tuple[str, ...] = ("auto", "float16", "int8_float16", "int8", "float32", "bfloat16",
                                  "int8_float32", "int8_bfloat16")
TASKS: tuple[str, ...] = ("transcribe", "translate")
DEFAULT_MODEL = "large-v3"
DEFAULT_BEAM_SIZE = 5
DEFAULT_BATCH_SIZE = 8
STATE_DIR = ".whisperfleet"  # <output>/.whisperfleet/<job-uid>/{manifest.jsonl,ledger/}
TERMINATION_MESSAGE_LIMIT = 4096  # bytes, Kubernetes' cap on terminationMessagePath
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# --- environment that carries a work order into a pod ----------------------------------
ENV_WORK_ORDER = "WHISPERFLEET_WORK_ORDER"  # JSON of WorkOrder
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by the Indexed Job controller
ENV_MODEL_CACHE = "WHISPERFLEET_MODEL_CACHE"  # pre-staged models dir (<cache>/<name>/model.bin)
MODEL_CACHE_MOUNT = "/models"


@dataclass
class ModelOptions:
    name: str = DEFAULT_MODEL
    compute_type: str = "auto"
    cache_dir: str | None = None  # pre-staged model dir; also the download cache when writable


@dataclass
class TranscriptionOptions:
    language: str | None = None  # None = detect
    task: str = "transcribe"
    beam_size: int = DEFAULT_BEAM_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE  # 1 = sequential
    vad_filter: bool = True
    word_timestamps: bool = False
    initial_prompt: str | None = None
    pack_short_clips: bool = True


@dataclass
class OutputOptions:
    uri: str
    formats: tuple[str, ...] = DEFAULT_FORMATS
    overwrite: bool = False


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
        data: dict[str, Any] = json.loads(text)
        return cls(
            job_uid=data["job_uid"],
            input_uri=data["input_uri"],
            output=_build(OutputOptions, data["output"]),
            include=tuple(data.get("include") or DEFAULT_INCLUDE),
            model=_build(ModelOptions, data.get("model") or {}),
            transcription=_build(TranscriptionOptions, data.get("transcription") or {}),
            shards=int(data.get("shards", 0)),
            device=data.get("device", "cuda"),
        )


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields in work order: {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)
