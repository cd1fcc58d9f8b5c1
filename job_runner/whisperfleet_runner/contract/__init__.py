"""The contract between the operator, the planner and the runner: the one source of truth for
reasons and exit codes (`reasons`), options and their defaults (`options`), the work order and
the environment that carries it into a pod (`work_order`), what pods report and how outcomes are
counted (`reports`), and a transcript's shape (`transcript`).

The operator imports this package and nothing else of the runner, so it stays free of heavy
imports (no faster-whisper, no fsspec, no click).
"""

from __future__ import annotations

from whisperfleet_runner.contract.options import (
    COMPUTE_TYPES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BEAM_SIZE,
    DEFAULT_FORMATS,
    DEFAULT_INCLUDE,
    DEFAULT_MODEL,
    FORMATS,
    TASKS,
    WHISPER_LANGUAGES,
    JobOptions,
    ModelOptions,
    OutputOptions,
    TranscriptionOptions,
    from_dict,
)
from whisperfleet_runner.contract.reasons import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_NO_GPU,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_STORAGE,
    EXIT_USAGE,
    Reason,
    error_exit_code,
)
from whisperfleet_runner.contract.reports import (
    FAILED,
    MAX_REPORTED_FAILURES,
    SKIPPED,
    STATUSES,
    SUCCEEDED,
    FileFailure,
    GpuIdentity,
    Outcome,
    PlanReport,
    ShardReport,
    Tally,
)
from whisperfleet_runner.contract.transcript import (
    Segment,
    Transcript,
    Word,
)
from whisperfleet_runner.contract.work_order import (
    DEFAULT_METRICS_PORT,
    ENV_COMPLETION_INDEX,
    ENV_MODEL_CACHE,
    ENV_TERMINATION_LOG,
    ENV_WORK_ORDER,
    METRIC_AUDIO_SECONDS,
    METRIC_FILES,
    MODEL_CACHE_MOUNT,
    STATE_DIR,
    TERMINATION_MESSAGE_LIMIT,
    TERMINATION_MESSAGE_PATH,
    WorkOrder,
)

__all__ = [
    "COMPUTE_TYPES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BEAM_SIZE",
    "DEFAULT_FORMATS",
    "DEFAULT_INCLUDE",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_MODEL",
    "ENV_COMPLETION_INDEX",
    "ENV_MODEL_CACHE",
    "ENV_TERMINATION_LOG",
    "ENV_WORK_ORDER",
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_INTERRUPTED",
    "EXIT_NO_GPU",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_STORAGE",
    "EXIT_USAGE",
    "FAILED",
    "FORMATS",
    "MAX_REPORTED_FAILURES",
    "METRIC_AUDIO_SECONDS",
    "METRIC_FILES",
    "MODEL_CACHE_MOUNT",
    "SKIPPED",
    "STATE_DIR",
    "STATUSES",
    "SUCCEEDED",
    "TASKS",
    "TERMINATION_MESSAGE_LIMIT",
    "TERMINATION_MESSAGE_PATH",
    "WHISPER_LANGUAGES",
    "FileFailure",
    "GpuIdentity",
    "JobOptions",
    "ModelOptions",
    "Outcome",
    "OutputOptions",
    "PlanReport",
    "Reason",
    "Segment",
    "ShardReport",
    "Tally",
    "Transcript",
    "TranscriptionOptions",
    "Word",
    "WorkOrder",
    "error_exit_code",
    "from_dict",
]
