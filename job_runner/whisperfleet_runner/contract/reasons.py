"""Why a file, a shard or a plan failed, and the exit code each reason ends a process with.

One table (`EXIT_CODES`) maps every reason to its exit code; the operator's podFailurePolicy
keys on those codes, so this is the one place they are decided.
"""

from __future__ import annotations

import enum

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


def error_exit_code(reason: str) -> int:
    """The exit code of a process that ends for `reason` (unknown: 1, retried)."""
    known = Reason.parse(reason)
    return known.exit_code if known else EXIT_SOME_FAILED  # unknown: let Kubernetes retry
