"""What planner and shard pods report (their termination messages), and the one place file
outcomes are counted (`Tally`). The operator parses these; both sides use these classes, so
the shape has one definition."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Protocol

from whisperfleet_runner.contract.options import from_dict
from whisperfleet_runner.contract.reasons import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_SOME_FAILED,
    Reason,
    error_exit_code,
)
from whisperfleet_runner.contract.work_order import TERMINATION_MESSAGE_LIMIT


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
        return error_exit_code(self.error_reason) if self.error_reason else EXIT_OK

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PlanReport:
        return from_dict(cls, json.loads(text))


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
            return error_exit_code(self.error_reason)
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
        data["gpus"] = [from_dict(GpuIdentity, g) for g in data.get("gpus", [])]
        for key in ("failures", "partial_files"):
            data[key] = [from_dict(FileFailure, f) for f in data.get(key, [])]
        return from_dict(cls, data)
