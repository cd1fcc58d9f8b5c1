"""The planner: list a job's input, balance the files over shards by size, write the manifest.

The manifest (`<output>/.whisperfleet/<job-uid>/manifest.jsonl`) is the one hand-off between
the planner pod and the shard pods: one JSON line per file with its uri, key, size and shard.
It is published complete-or-absent, so a shard never reads half a plan.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from whisperfleet_runner import storage
from whisperfleet_runner.config import PlanReport, Reason, WorkOrder
from whisperfleet_runner.storage.keys import UnsafeKeyError, output_stem

log = logging.getLogger(__name__)

SHARDS_PER_WORKER = 4  # enough shards that a slow pod's tail is short, few enough to stay cheap


@dataclass(frozen=True)
class ManifestEntry:
    uri: str
    key: str
    size: int
    shard: int

    def to_input(self) -> storage.InputFile:
        return storage.InputFile(uri=self.uri, key=self.key, size=self.size)


def auto_shards(files: int, workers: int) -> int:
    """About SHARDS_PER_WORKER shards per worker, never more shards than files, at least 1."""
    return max(1, min(files, SHARDS_PER_WORKER * max(1, workers)))


def shard_count(files: int, requested: int, workers: int) -> int:
    """The shard count to use: `requested` (0 = auto), clamped to [1, files]."""
    if requested < 0:
        raise ValueError(f"shards must be >= 0 (0 = auto), got {requested}")
    if requested == 0:
        return auto_shards(files, workers)
    return max(1, min(files, requested))


def balance(sizes: Sequence[int], shards: int) -> list[int]:
    """The shard of each file: longest-processing-time greedy over sizes.

    Files go largest first to the currently lightest shard (ties: fewer files, then the
    lower shard index; among equal sizes the earlier file goes first), so the result is
    deterministic for a given input order. Size stands in for audio duration, which is
    unknown until decoding.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    # (load, file count, shard index): the count spreads empty files, so no shard is left
    # without work while another holds several.
    heap = [(0, 0, s) for s in range(shards)]
    assignment = [0] * len(sizes)
    for i in order:
        load, count, shard = heapq.heappop(heap)
        assignment[i] = shard
        heapq.heappush(heap, (load + max(0, sizes[i]), count + 1, shard))
    return assignment


def build_manifest(files: Sequence[storage.InputFile], shards: int) -> list[ManifestEntry]:
    """Manifest entries grouped by shard, each shard's files largest first (its work order).

    Files whose outputs would coincide (`talk.wav` and `talk.mp3` both give `talk.*`) are
    kept in one shard, so that shard sees the collision and fails the later file with a
    clear reason instead of two pods racing to write the same outputs.
    """
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        try:
            stem = output_stem(f.key)
        except UnsafeKeyError:
            stem = "\0" + f.key  # fails alone in its shard; never groups with a safe key
        groups.setdefault(stem, []).append(i)
    members = list(groups.values())
    shards = max(1, min(shards, len(members)))  # no shard without work
    group_shards = balance([sum(files[i].size for i in m) for m in members], shards)
    shard_of = {i: s for m, s in zip(members, group_shards, strict=True) for i in m}
    entries = [
        ManifestEntry(uri=f.uri, key=f.key, size=f.size, shard=shard_of[i])
        for i, f in enumerate(files)
    ]
    return sorted(entries, key=lambda e: (e.shard, -e.size, e.key))


def manifest_text(entries: Sequence[ManifestEntry]) -> str:
    return "".join(
        json.dumps(asdict(e), ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries
    )


def parse_manifest(text: str) -> list[ManifestEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            entries.append(
                ManifestEntry(
                    uri=str(data["uri"]),
                    key=str(data["key"]),
                    size=int(data["size"]),
                    shard=int(data["shard"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"manifest line {number} is malformed: {exc}") from exc
    return entries


def read_manifest(uri: str) -> list[ManifestEntry]:
    """All manifest entries; raises storage.StorageError when the manifest cannot be read."""
    return parse_manifest(storage.read_bytes(uri).decode("utf-8"))


def plan(order: WorkOrder, shards: int | None = None, *, workers: int = 1) -> PlanReport:
    """List, balance and publish the manifest; failures come back in the report, not raised.

    `shards` defaults to `order.shards`; 0 means about SHARDS_PER_WORKER per worker.
    """
    requested = order.shards if shards is None else shards
    report = PlanReport(manifest_uri=order.manifest_uri)
    try:
        files = list(storage.list_inputs(order.input_uri, order.include))
    except storage.StorageError as exc:
        return _failed(report, exc.reason, str(exc))
    if not files:
        return _failed(
            report,
            Reason.NO_MATCHING_FILES,
            f"no files under {order.input_uri} match {', '.join(order.include) or '(no globs)'}",
        )
    entries = build_manifest(files, shard_count(len(files), requested, workers))
    count = max(e.shard for e in entries) + 1
    try:
        storage.publish(order.manifest_uri, manifest_text(entries).encode("utf-8"))
    except storage.StorageError as exc:
        return _failed(report, exc.reason, str(exc))
    report.files = len(entries)
    report.bytes = sum(e.size for e in entries)
    report.shards = count
    log.info(
        "planned %d files (%d bytes) over %d shards: %s",
        report.files, report.bytes, count, order.manifest_uri,
    )
    return report


def _failed(report: PlanReport, reason: Reason, message: str) -> PlanReport:
    report.error_reason = reason.value
    report.error_message = message
    log.error("planning failed: %s: %s", report.error_reason, message)
    return report
