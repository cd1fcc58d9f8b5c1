"""The ledger: one record per file per shard attempt, under `<state>/ledger/`.

Object stores cannot append, so each shard attempt owns one object
(`shard-00003-<attempt>.jsonl`) and republishes it whole every few records or seconds:
progress survives a crash up to the last flush, and no two attempts (a pod and its
replacement) ever write the same object. The reader merges all objects.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from whisperfleet_runner import storage
from whisperfleet_runner.contract import FAILED, SKIPPED, STATUSES, SUCCEEDED

__all__ = ["FAILED", "SKIPPED", "SUCCEEDED", "LedgerRecord", "LedgerWriter", "merge",
           "parse_records", "read_ledger"]

log = logging.getLogger(__name__)
# When attempts disagree about a file, the most useful outcome wins: a later attempt that
# skipped a file (outputs exist) does not hide that an earlier one wrote them.
_RANK = {SUCCEEDED: 2, SKIPPED: 1, FAILED: 0}


@dataclass
class LedgerRecord:
    uri: str
    key: str
    status: str
    outputs: list[str] = field(default_factory=list)
    reason: str = ""  # for people (a partial file's: what its media lost)
    code: str = ""  # a contract.Reason value when failed
    partial: bool = False  # succeeded from damaged media: only what decoded was transcribed
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    device: str = ""  # what did it: "cuda:1", "GPU 2", "cpu"
    gpu: str = ""  # that GPU's UUID
    shard: int = 0
    time: float = field(default_factory=time.time)  # unix seconds when the file finished

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"ledger status must be one of {STATUSES}, got {self.status!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> LedgerRecord:
        return cls(
            uri=str(data["uri"]),
            key=str(data.get("key", "")),
            status=str(data["status"]),
            outputs=[str(o) for o in data.get("outputs") or []],
            reason=str(data.get("reason") or ""),
            code=str(data.get("code") or ""),
            partial=data.get("partial") is True,
            audio_seconds=float(data.get("audio_seconds") or 0.0),
            wall_seconds=float(data.get("wall_seconds") or 0.0),
            device=str(data.get("device") or ""),
            gpu=str(data.get("gpu") or ""),
            shard=int(data.get("shard") or 0),
            time=float(data.get("time") or 0.0),
        )


def attempt_name(pod_name: str | None) -> str:
    """A name unique to this shard attempt: the pod name when known, else random."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", pod_name or "").strip("-.")
    return cleaned or uuid.uuid4().hex[:12]


GROWTH = 10  # a flush is due after len(records) // GROWTH new records (at least flush_every)


def ledger_object_uri(ledger_uri: str, shard: int, attempt: str) -> str:
    return f"{ledger_uri.rstrip('/')}/shard-{shard:05d}-{attempt}.jsonl"


class LedgerWriter:
    """Collects records and republishes this attempt's ledger object incrementally."""

    def __init__(
        self,
        ledger_uri: str,
        shard: int,
        attempt: str,
        *,
        flush_every: int = 10,
        flush_seconds: float = 30.0,
        publish: Callable[[str, bytes], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = ledger_object_uri(ledger_uri, shard, attempt)
        self.records: list[LedgerRecord] = []
        self._flush_every = max(1, flush_every)
        self._flush_seconds = flush_seconds
        self._publish = publish or storage.publish
        self._clock = clock
        self._flushed_count = 0
        self._last_flush = clock()

    def start(self) -> None:
        """Publish this attempt's (empty) ledger object before any output is written: a later
        attempt of the shard (an evicted or killed pod's replacement) then knows outputs may
        exist that no ledger line records yet, and checks them instead of trusting the plan.
        A failed publish is logged: the worst case is transcribing those files again."""
        try:
            self._publish(self.uri, b"")
        except storage.StorageError as exc:
            log.warning("could not write ledger %s: %s", self.uri, exc)

    def add(self, record: LedgerRecord) -> None:
        self.records.append(record)
        pending = len(self.records) - self._flushed_count
        # Each flush republishes the whole object, so the count that triggers one grows with
        # it (a tenth of what is there): bytes uploaded stay about 10x the ledger, not
        # quadratic in a shard of 100,000 files; a crash loses at most that tenth, whose
        # outputs the next attempt checks (see pod.manifest.shard_inputs).
        due = max(self._flush_every, len(self.records) // GROWTH)
        if pending >= due or self._clock() - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Publish every record so far. A failed publish is logged, not raised: the outputs
        themselves are already written, and the next flush retries with the full list."""
        if self._flushed_count == len(self.records):
            return
        data = "".join(r.to_json() + "\n" for r in self.records).encode("utf-8")
        try:
            self._publish(self.uri, data)
        except storage.StorageError as exc:
            log.warning("could not write ledger %s: %s", self.uri, exc)
            return
        self._flushed_count = len(self.records)
        self._last_flush = self._clock()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_records(text: str, source: str = "") -> list[LedgerRecord]:
    """Records of one ledger object; a torn or malformed line is skipped with a warning."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(LedgerRecord.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping malformed ledger line %s:%d: %s", source, number, exc)
    return records


def read_ledger(ledger_uri: str) -> list[LedgerRecord]:
    """Every record of every attempt under `ledger_uri`, oldest first; [] when none exist."""
    records: list[LedgerRecord] = []
    for uri in storage.list_uris(ledger_uri, ".jsonl"):
        records.extend(parse_records(storage.read_text(uri), uri))
    return sorted(records, key=lambda r: r.time)


def merge(records: Iterable[LedgerRecord]) -> dict[str, LedgerRecord]:
    """One record per input uri: succeeded beats skipped beats failed, then the latest."""
    merged: dict[str, LedgerRecord] = {}
    for record in records:
        current = merged.get(record.uri)
        if current is None or (_RANK[record.status], record.time) >= (
            _RANK[current.status],
            current.time,
        ):
            merged[record.uri] = record
    return merged
