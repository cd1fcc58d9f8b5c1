"""The work-order contract between the operator, the planner and the runner.

This module is the one source of truth for defaults, exit codes and the environment
variables that carry a work order into a pod. The operator imports it, so it must stay
free of heavy imports (no faster-whisper, no fsspec, no click).
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

# --- exit codes (CLI and pods; the operator's podFailurePolicy keys on them) -------------
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some files failed; the others were written (CLI)
EXIT_USAGE = 2  # bad usage, bad spec or nothing usable
EXIT_NO_GPU = 3  # a GPU was required (device cuda) but none allocated/usable
EXIT_BAD_INPUT = 42  # a shard finished, but some of its files are bad media: FailIndex, no retry
EXIT_STORAGE = 43  # input/output storage unreachable (missing bucket, bad credentials)
EXIT_INTERRUPTED = 130  # CLI stopped by Ctrl-C (128 + SIGINT); a re-run resumes


class Reason(str, enum.Enum):
    """Why a file, a shard or a plan failed: the names that cross the runner/operator
    boundary (ledger records, pod reports, exit codes, TranscriptionJob status)."""

    # A file's own fault: no retry can fix it (its shard fails without retries).
    BAD_MEDIA = "BadMedia"
    UNSAFE_KEY = "UnsafeKey"
    OUTPUT_COLLISION = "OutputCollision"
    # A file that failed for a reason a retry may cure.
    TRANSCRIPTION_FAILED = "TranscriptionFailed"
    # A whole shard or plan that could not run.
    NO_GPU = "NoGPU"
    GPU_LOST = "GpuLost"
    BAD_WORK_ORDER = "BadWorkOrder"
    BAD_MANIFEST = "BadManifest"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_LOAD = "ModelLoad"
    UNSUPPORTED_OPTIONS = "UnsupportedOptions"
    NO_MATCHING_FILES = "NoMatchingFiles"
    # Storage (input, output or state), translated from the storage client's errors.
    BUCKET_NOT_FOUND = "BucketNotFound"
    ACCESS_DENIED = "AccessDenied"
    INVALID_CREDENTIALS = "InvalidCredentials"
    NO_CREDENTIALS = "NoCredentials"
    NOT_FOUND = "NotFound"
    INVALID_URI = "InvalidUri"
    UNREACHABLE = "Unreachable"
    MISSING_DRIVER = "MissingDriver"
    STORAGE_ERROR = "StorageError"

    def __str__(self) -> str:
        return self.value

    @property
    def exit_code(self) -> int:
        """The pod's exit code when this reason ends it; the podFailurePolicy keys on it."""
        return EXIT_CODES[self]

    @property
    def bad_input(self) -> bool:
        """The file itself is at fault: retrying the shard cannot help."""
        return EXIT_CODES[self] == EXIT_BAD_INPUT

    @classmethod
    def parse(cls, value: str) -> Reason | None:
        try:
            return cls(value)
        except ValueError:
            return None


_STORAGE = (Reason.BUCKET_NOT_FOUND, Reason.ACCESS_DENIED, Reason.INVALID_CREDENTIALS,
            Reason.NO_CREDENTIALS, Reason.NOT_FOUND, Reason.INVALID_URI, Reason.UNREACHABLE,
            Reason.MISSING_DRIVER, Reason.STORAGE_ERROR)
# The one table of reasons and exit codes. EXIT_USAGE fails the whole Job (every shard would
# fail alike); EXIT_NO_GPU and EXIT_STORAGE are retried within spec.retries.perShard (another
# node, a passing outage); 1 is retried too.
EXIT_CODES: dict[Reason, int] = {
    Reason.BAD_MEDIA: EXIT_BAD_INPUT,
    Reason.UNSAFE_KEY: EXIT_BAD_INPUT,
    Reason.OUTPUT_COLLISION: EXIT_BAD_INPUT,
    Reason.TRANSCRIPTION_FAILED: EXIT_SOME_FAILED,
    Reason.NO_GPU: EXIT_NO_GPU,
    Reason.GPU_LOST: EXIT_NO_GPU,
    Reason.BAD_WORK_ORDER: EXIT_USAGE,
    Reason.BAD_MANIFEST: EXIT_USAGE,
    Reason.MODEL_NOT_FOUND: EXIT_USAGE,
    Reason.MODEL_LOAD: EXIT_SOME_FAILED,
    Reason.UNSUPPORTED_OPTIONS: EXIT_USAGE,
    Reason.NO_MATCHING_FILES: EXIT_USAGE,
    **dict.fromkeys(_STORAGE, EXIT_STORAGE),
}

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
ENV_TERMINATION_LOG = "WHISPERFLEET_TERMINATION_LOG"  # = the container's terminationMessagePath
ENV_MODEL_CACHE = "WHISPERFLEET_MODEL_CACHE"  # pre-staged models dir (<cache>/<name>/model.bin)
MODEL_CACHE_MOUNT = "/models"
DEFAULT_METRICS_PORT = 9471  # worker pods serve Prometheus metrics here (container port "metrics")
# Counters the operator sums over a job's running pods for status.progress (served with
# Prometheus' `_total` suffix; whisperfleet_runner.metrics defines them).
METRIC_FILES = "whisperfleet_files"
METRIC_AUDIO_SECONDS = "whisperfleet_audio_seconds"


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
    # Damaged or truncated media: False fails the file (BadMedia); True transcribes what
    # decodes and marks it partial (json "partial": true, counted apart as `partial`).
    keep_partial: bool = False


@dataclass
class JobOptions:
    """What to do with every file of a batch, wherever it runs: a shard pod or a local run."""

    output: OutputOptions
    model: ModelOptions = field(default_factory=ModelOptions)
    transcription: TranscriptionOptions = field(default_factory=TranscriptionOptions)


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
            output=_build(OutputOptions, data["output"]),
            include=tuple(data.get("include") or DEFAULT_INCLUDE),
            model=_build(ModelOptions, data.get("model") or {}),
            transcription=_build(TranscriptionOptions, data.get("transcription") or {}),
            shards=int(data.get("shards", 0)),
            device=data.get("device", "cuda"),
            metrics_port=int(data.get("metrics_port", 0)),
        )


def _error_exit_code(reason: str) -> int:
    known = Reason.parse(reason)
    return known.exit_code if known else EXIT_SOME_FAILED  # unknown: let Kubernetes retry


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, not {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields in work order: {sorted(unknown)}")
    values = {
        k: tuple(v) if isinstance(v, list) and k in ("formats", "include") else v
        for k, v in data.items()
    }
    return cls(**values)


# --- reports: what planner and shard pods write to their termination message ------------
# The operator parses these; both sides use these classes, so the shape has one definition.


@dataclass
class PlanReport:
    """The planner's termination message. On failure, error_reason/error_message are set."""

    files: int = 0
    bytes: int = 0
    shards: int = 0
    manifest_uri: str = ""
    error_reason: str = ""  # a Reason, e.g. BucketNotFound, NoMatchingFiles, AccessDenied
    error_message: str = ""  # human readable, never contains credentials

    @property
    def exit_code(self) -> int:
        """The planner pod's exit code (its Job fails at once on EXIT_USAGE/EXIT_STORAGE)."""
        return _error_exit_code(self.error_reason) if self.error_reason else EXIT_OK

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PlanReport:
        return _build(cls, json.loads(text))


@dataclass
class GpuIdentity:
    uuid: str
    name: str
    memory_mib: int
    device_index: int
    pci_bus_id: str = ""
    compute_capability: str = ""
    mig_profile: str = ""
    # What this GPU did, in a report of a pod that had several: each GPU's share of the work.
    files: int = 0
    failed: int = 0
    audio_seconds: float = 0.0


@dataclass
class FileFailure:
    uri: str
    reason: str  # for people: what went wrong and what to do
    code: str = ""  # a Reason value, for programs


# --- what happened to each file, and the one place outcomes are counted ------------------
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (SUCCEEDED, FAILED, SKIPPED)
MAX_REPORTED_FAILURES = 20  # reports and status carry the first ones; the ledger has them all


class Outcome(Protocol):
    """One file's outcome (a ledger record is one)."""

    uri: str
    status: str
    reason: str
    code: str
    audio_seconds: float
    partial: bool  # succeeded, from damaged media whose decodable part was kept


@dataclass
class Tally:
    """File outcomes counted: shard reports, local run summaries and the progress display
    all count through `add`, so they cannot disagree on what a status means."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    bad_input: int = 0  # of `failed`: bad media, unsafe keys, collisions; no retry can fix
    partial: int = 0  # of `succeeded`: damaged media transcribed in part (keep_partial)
    audio_seconds: float = 0.0
    failures: list[FileFailure] = field(default_factory=list)  # the first ones
    partial_files: list[FileFailure] = field(default_factory=list)  # the first; reason: damage

    def add(self, outcome: Outcome, keep_failures: int = MAX_REPORTED_FAILURES) -> None:
        self.total += 1
        if outcome.status == SUCCEEDED:
            self.succeeded += 1
            self.audio_seconds += outcome.audio_seconds
            if outcome.partial:
                self.partial += 1
                if len(self.partial_files) < keep_failures:
                    self.partial_files.append(FileFailure(outcome.uri, outcome.reason))
        elif outcome.status == SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1
            code = Reason.parse(outcome.code)
            self.bad_input += bool(code and code.bad_input)
            if len(self.failures) < keep_failures:
                self.failures.append(FileFailure(outcome.uri, outcome.reason, outcome.code))


@dataclass
class ShardReport(Tally):
    """A shard's summary; serialised to at most TERMINATION_MESSAGE_LIMIT bytes."""

    shard: int = 0
    wall_seconds: float = 0.0
    device: str = ""
    node: str = ""
    pod: str = ""
    gpus: list[GpuIdentity] = field(default_factory=list)
    error_reason: str = ""  # a Reason, set when the shard could not run at all
    error_message: str = ""

    @property
    def exit_code(self) -> int:
        """The shard pod's exit code; the operator's podFailurePolicy keys on it.

        A shard that could not run exits with its reason's code. Bad media alone gives
        EXIT_BAD_INPUT (FailIndex: retrying cannot help); any other file failure gives 1, so
        Kubernetes retries the index and the retry skips the files already written.
        """
        if self.error_reason:
            return _error_exit_code(self.error_reason)
        if self.failed > self.bad_input:
            return EXIT_SOME_FAILED
        return EXIT_BAD_INPUT if self.failed else EXIT_OK

    @property
    def real_time_factor(self) -> float:
        """Audio seconds transcribed per wall second (higher is faster)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """Compact JSON of at most `limit` bytes: drops partial files, then failures (then
        trims text) to fit."""
        data = asdict(self)
        data["audio_seconds"] = round(self.audio_seconds, 2)
        data["wall_seconds"] = round(self.wall_seconds, 2)
        data["real_time_factor"] = round(self.real_time_factor, 2)

        def dump() -> str:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

        text = dump()
        for key in ("partial_files", "failures"):
            while len(text.encode()) > limit and data[key]:
                data[key].pop()
                text = dump()
        for key in ("error_message",):
            while len(text.encode()) > limit and data[key]:
                data[key] = data[key][: len(data[key]) // 2]
                text = dump()
        if len(text.encode()) > limit:  # pathological: a single enormous field somewhere
            data["gpus"] = data["gpus"][:8]
            text = dump()
        return text

    @classmethod
    def from_json(cls, text: str) -> ShardReport:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a shard report must be a JSON object, not {type(data).__name__}")
        data.pop("real_time_factor", None)
        data["gpus"] = [_build(GpuIdentity, g) for g in data.get("gpus", [])]
        for key in ("failures", "partial_files"):
            data[key] = [_build(FileFailure, f) for f in data.get(key, [])]
        return _build(cls, data)
