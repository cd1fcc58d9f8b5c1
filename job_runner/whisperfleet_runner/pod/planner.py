"""The planner: list a job's input and output, balance the files over shards, write the manifest.

The manifest (`<output>/.whisperfleet/<job-uid>/manifest.jsonl`, see `manifest`) is the one
hand-off between the planner pod and the shard pods. It is published complete-or-absent, so
a shard never reads half a plan.

Memory does not grow with the number of objects: both listings are streamed page by page,
each file's manifest line is spilled to a temporary file (TMPDIR) as it is listed, and its
numbers go to hash partitions on disk (`partitions`), worked on one at a time. The manifest
is written from the spill, in shard order, and uploaded in parts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from whisperfleet_runner import storage
from whisperfleet_runner.contract import PlanReport, Reason, WorkOrder
from whisperfleet_runner.pod import partitions
from whisperfleet_runner.pod.manifest import (
    ManifestEntry,
    entry_head,
    manifest_text,
    parse_manifest,
    read_manifest,
)
from whisperfleet_runner.pod.partitions import lpt, stem_groups
from whisperfleet_runner.storage.keys import UnsafeKeyError, output_stem

__all__ = ["ManifestEntry", "assign", "auto_shards", "balance", "build_manifest",
           "manifest_text", "parse_manifest", "plan", "read_manifest", "shard_count"]

log = logging.getLogger(__name__)

SHARDS_PER_WORKER = 4  # enough shards that a slow pod's tail is short, few enough to stay cheap
_BATCH = 8192  # files handled per step where Python objects are made from the arrays


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
    return [int(s) for s in _lpt(np.asarray(sizes, dtype=np.int64), shards)]


def _lpt(sizes: np.ndarray, shards: int) -> np.ndarray:
    order = np.argsort(-sizes, kind="stable")  # largest first, equal sizes in input order
    weights = np.maximum(sizes[order], 0).tolist()
    out = np.zeros(len(sizes), dtype=np.int32)
    out[order] = [shard for shard, _ in lpt(zip(weights, order.tolist(), strict=True), shards)]
    return out


def assign(sizes: np.ndarray, stems: np.ndarray, done: np.ndarray, shards: int
           ) -> tuple[np.ndarray, int]:
    """(shard of each file, shard count used), from sizes, output-stem hashes and done flags.

    Files whose outputs would coincide (`talk.wav` and `talk.mp3` both give `talk.*`) are
    kept in one shard, so that shard sees the collision and fails the later file with a
    clear reason instead of two pods racing to write the same outputs. The groups are
    balanced by the bytes still to transcribe: a done file weighs nothing (it is skipped).
    """
    group = stem_groups(stems)
    weights = np.zeros(int(group.max(initial=-1)) + 1, dtype=np.int64)
    np.add.at(weights, group, np.where(done, 0, np.maximum(sizes, 0)))
    count = max(1, min(shards, len(weights)))  # no shard without work
    return _lpt(weights, count)[group], count


def _stem(key: str) -> str | None:
    try:
        return output_stem(key)
    except UnsafeKeyError:
        return None


def _stem_hash(key: str, stem: str | None = None) -> int:
    """A 64-bit hash of the key's output stem (Python's str hash: one process, one seed)."""
    stem = stem or _stem(key)
    # An unsafe key fails alone in its shard; it never groups with a safe key.
    return hash(stem if stem is not None else "\0" + key)


def build_manifest(files: Sequence[storage.InputFile], shards: int) -> list[ManifestEntry]:
    """Manifest entries grouped by shard, each shard's files largest first (its work order);
    `plan` does the same from a stream, this is the in-memory form."""
    n = len(files)
    shard_of, _ = assign(np.fromiter((f.size for f in files), np.int64, n),
                         np.fromiter((_stem_hash(f.key) for f in files), np.int64, n),
                         np.fromiter((bool(f.done) for f in files), bool, n), shards)
    entries = [ManifestEntry(uri=f.uri, key=f.key, size=f.size, shard=s, done=bool(f.done))
               for f, s in zip(files, shard_of.tolist(), strict=True)]
    return sorted(entries, key=lambda e: (e.shard, -e.size, e.key))


def plan(order: WorkOrder, shards: int | None = None, *, workers: int = 1) -> PlanReport:
    """List, balance and publish the manifest; failures come back in the report, not raised.

    `shards` defaults to `order.shards`; 0 means about SHARDS_PER_WORKER per worker. Unless
    the order says overwrite, the output is listed once and files whose outputs all exist
    are marked done, so shard pods skip them without asking the store again.
    """
    requested = order.shards if shards is None else shards
    report = PlanReport(manifest_uri=order.manifest_uri)
    with tempfile.TemporaryDirectory(prefix="whisperfleet-plan-") as tmp:
        folder = Path(tmp)
        with open(folder / "lines", "w+b") as spill:
            try:
                listed = _list_inputs(order, spill, folder)
                if not listed.files:
                    return _failed(report, Reason.NO_MATCHING_FILES,
                                   f"no files under {order.input_uri} match "
                                   f"{', '.join(order.include) or '(no globs)'}")
                parts = _partition(listed, folder)
                formats = 0 if order.output.overwrite else _add_outputs(order, listed, parts)
            except storage.StorageError as exc:
                return _failed(report, exc.reason, str(exc))
            parts.group(formats)
            count = max(1, min(shard_count(listed.files, requested, workers), parts.groups))
            parts.balance(count)  # no shard without work: at most one a group
            try:
                with storage.publish_stream(order.manifest_uri) as out:
                    parts.write_manifest(spill, out)
            except storage.StorageError as exc:
                return _failed(report, exc.reason, str(exc))
    report.files, report.bytes, report.shards = listed.files, listed.bytes, count
    log.info("planned %d files (%d bytes; %d done already) over %d shards: %s",
             report.files, report.bytes, parts.done, count, order.manifest_uri)
    return report


@dataclass
class _Listed:
    files: int
    bytes: int
    start: str  # what every output stem begins with (the output is listed from there)
    records: Path  # one partitions.FILE record a file, in listing order


def _list_inputs(order: WorkOrder, spill: IO[bytes], folder: Path) -> _Listed:
    """Stream the input listing: each file's line start goes to the spill, its numbers to a
    records file (no Python object kept per file)."""
    listed = _Listed(files=0, bytes=0, start="", records=folder / "listed")
    low, high = "", ""

    def records() -> Iterator[tuple[int, ...]]:
        nonlocal low, high
        position = 0
        for index, file in enumerate(storage.iter_inputs(order.input_uri, order.include)):
            head = entry_head(file.uri, file.key, file.size)
            spill.write(head)
            stem = _stem(file.key)
            if stem is not None:
                low, high = min(low or stem, stem), max(high, stem)
            listed.files, listed.bytes = index + 1, listed.bytes + file.size
            yield file.size, _stem_hash(file.key, stem), index, position, position + len(head)
            position += len(head)

    with open(listed.records, "wb") as out:
        for chunk in partitions.chunks(records(), partitions.FILE, _BATCH):
            out.write(chunk.tobytes())
    spill.flush()
    listed.start = storage.common_start([low, high] if low else [])
    return listed


def _partition(listed: _Listed, folder: Path) -> partitions.Partitions:
    parts = partitions.Partitions(folder, listed.files)
    with open(listed.records, "rb") as fh:
        while len(chunk := np.fromfile(fh, dtype=partitions.FILE, count=_BATCH)):
            parts.add_files(chunk)
    listed.records.unlink()
    return parts


def _add_outputs(order: WorkOrder, listed: _Listed, parts: partitions.Partitions) -> int:
    """The outputs already there, from one streamed listing of the output (of the keys that
    begin as all stems do; state folders left out), into the partitions; returns the number
    of formats a done file has."""
    formats = list(dict.fromkeys(order.output.formats))
    found = ((hash(stem), 1 << i)
             for stem, i in storage.iter_outputs(order.output.uri, formats, listed.start))
    for chunk in partitions.chunks(found, partitions.OUTPUT, _BATCH):
        parts.add_outputs(chunk)
    return len(formats)


def _failed(report: PlanReport, reason: Reason, message: str) -> PlanReport:
    report.error_reason = reason.value
    report.error_message = message
    log.error("planning failed: %s: %s", report.error_reason, message)
    return report
