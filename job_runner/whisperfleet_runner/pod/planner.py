"""The planner: list a job's input and output, balance the files over shards, write the manifest.

The manifest (`<output>/.whisperfleet/<job-uid>/manifest.jsonl`, see `manifest`) is the one
hand-off between the planner pod and the shard pods. It is published complete-or-absent, so
a shard never reads half a plan.

Memory stays flat in the number of objects except for compact arrays: both listings are
streamed page by page, each file's manifest line is spilled to a temporary file (TMPDIR) as
it is listed, and only its size, a 64-bit hash of its output stem and the line's offset stay
in memory (24 bytes a file; balancing and sorting add about as much again while they run).
The manifest is then written from the spill, in shard order, and uploaded in parts.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TypeVar

import numpy as np

from whisperfleet_runner import storage
from whisperfleet_runner.config import PlanReport, Reason, WorkOrder
from whisperfleet_runner.pod.manifest import (
    ManifestEntry,
    entry_head,
    entry_tail,
    manifest_text,
    parse_manifest,
    read_manifest,
)
from whisperfleet_runner.storage.keys import UnsafeKeyError, output_stem

__all__ = ["ManifestEntry", "assign", "auto_shards", "balance", "build_manifest",
           "manifest_text", "parse_manifest", "plan", "read_manifest", "shard_count"]

log = logging.getLogger(__name__)

SHARDS_PER_WORKER = 4  # enough shards that a slow pod's tail is short, few enough to stay cheap
_BATCH = 8192  # files handled per step where Python objects are made from the arrays
T = TypeVar("T")


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
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    order = np.argsort(-sizes, kind="stable")  # largest first, equal sizes in input order
    # (load, file count, shard index): the count spreads empty files, so no shard is left
    # without work while another holds several.
    heap = [(0, 0, s) for s in range(shards)]
    out = np.zeros(len(sizes), dtype=np.int32)
    for start in range(0, len(order), _BATCH):
        chunk = order[start:start + _BATCH]
        picked = []
        for size in np.maximum(sizes[chunk], 0).tolist():
            load, count, shard = heap[0]
            heapq.heapreplace(heap, (load + size, count + 1, shard))
            picked.append(shard)
        out[chunk] = picked
    return out


def assign(sizes: np.ndarray, stems: np.ndarray, done: np.ndarray, shards: int
           ) -> tuple[np.ndarray, int]:
    """(shard of each file, shard count used), from sizes, output-stem hashes and done flags.

    Files whose outputs would coincide (`talk.wav` and `talk.mp3` both give `talk.*`) are
    kept in one shard, so that shard sees the collision and fails the later file with a
    clear reason instead of two pods racing to write the same outputs. The groups are
    balanced by the bytes still to transcribe: a done file weighs nothing (it is skipped).
    """
    group = _groups(stems)
    weights = np.zeros(int(group.max(initial=-1)) + 1, dtype=np.int64)
    np.add.at(weights, group, np.where(done, 0, np.maximum(sizes, 0)))
    count = max(1, min(shards, len(weights)))  # no shard without work
    return _lpt(weights, count)[group], count


def _groups(stems: np.ndarray) -> np.ndarray:
    """Group number of each file (equal stems, equal group), numbered in order of first
    appearance; int32 and freed as it goes, since this is the planner's peak of memory."""
    order = np.argsort(stems, kind="stable")
    ordered = stems[order]
    starts = np.empty(len(stems), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    del ordered
    in_sorted = np.cumsum(starts, dtype=np.int32) - 1  # group id along the sorted order
    first = order[starts]  # each group's earliest file (the sort is stable)
    del starts
    rank = np.empty(len(first), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
    del first
    group = np.empty(len(stems), dtype=np.int32)
    group[order] = rank[in_sorted]
    return group


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
    with tempfile.TemporaryFile(prefix="whisperfleet-plan-") as spill:
        try:
            listed = _spill_inputs(order, spill)
            if not len(listed.sizes):
                return _failed(report, Reason.NO_MATCHING_FILES,
                               f"no files under {order.input_uri} match "
                               f"{', '.join(order.include) or '(no globs)'}")
            done = _done(order, listed)
        except storage.StorageError as exc:
            return _failed(report, exc.reason, str(exc))
        files = len(listed.sizes)
        shard_of, count = assign(listed.sizes, listed.stems, done,
                                 shard_count(files, requested, workers))
        try:
            with storage.publish_stream(order.manifest_uri) as out:
                _write_manifest(spill, listed, shard_of, done, out)
        except storage.StorageError as exc:
            return _failed(report, exc.reason, str(exc))
    report.files, report.bytes, report.shards = files, int(listed.sizes.sum()), count
    log.info("planned %d files (%d bytes; %d done already) over %d shards: %s",
             report.files, report.bytes, int(done.sum()), count, order.manifest_uri)
    return report


@dataclass
class _Listed:
    sizes: np.ndarray  # int64, one a file, in listing (key) order
    stems: np.ndarray  # int64 hashes of the output stems
    offsets: np.ndarray  # int64: file i's spilled line is [offsets[i], offsets[i + 1])
    start: str  # what every output stem begins with (the output is listed from there)


def _spill_inputs(order: WorkOrder, spill: IO[bytes]) -> _Listed:
    """Stream the input listing: each file's line start goes to the spill, its numbers to
    compact arrays (8 bytes each, no Python object per file)."""
    sizes, stems, offsets = array("q"), array("q"), array("q", [0])
    position, low, high = 0, "", ""
    for file in storage.iter_inputs(order.input_uri, order.include):
        head = entry_head(file.uri, file.key, file.size)
        spill.write(head)
        position += len(head)
        offsets.append(position)
        sizes.append(file.size)
        stem = _stem(file.key)
        stems.append(_stem_hash(file.key, stem))
        if stem is not None:
            low, high = min(low or stem, stem), max(high, stem)
    spill.flush()
    arrays = (np.frombuffer(a, dtype=np.int64) for a in (sizes, stems, offsets))
    return _Listed(*arrays, start=storage.common_start([low, high] if low else []))


def _done(order: WorkOrder, listed: _Listed) -> np.ndarray:
    """Which files have an output in every format already, from one streamed listing of the
    output (of the keys that begin as all stems do; state folders left out). Outputs are
    matched to files by stem hash, so memory holds a byte of found formats per distinct
    stem, never the listing. Two different stems would have to share a 64-bit hash for
    every format for a file to be marked done wrongly.
    """
    stems = listed.stems
    if order.output.overwrite:
        return np.zeros(len(stems), dtype=bool)
    formats = list(dict.fromkeys(order.output.formats))
    known = np.unique(stems)
    found = np.zeros(len(known), dtype=np.uint8)
    outputs = storage.iter_outputs(order.output.uri, formats, listed.start)
    for batch in _batched(outputs, _BATCH):
        hashes = np.fromiter((hash(stem) for stem, _ in batch), np.int64, len(batch))
        bits = np.fromiter((1 << i for _, i in batch), np.uint8, len(batch))
        at = np.minimum(np.searchsorted(known, hashes), len(known) - 1)
        hit = known[at] == hashes
        np.bitwise_or.at(found, at[hit], bits[hit])
    return found[np.searchsorted(known, stems)] == (1 << len(formats)) - 1


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _write_manifest(spill: IO[bytes], listed: _Listed, shard_of: np.ndarray,
                    done: np.ndarray, out: IO[bytes]) -> None:
    """Lines grouped by shard, each shard's files largest first (its work order), equal sizes
    in key order; each line read back from the spill and completed with shard and done."""
    n = len(listed.sizes)
    order = np.lexsort((np.arange(n), -listed.sizes, shard_of))
    fd, offsets = spill.fileno(), listed.offsets
    for start in range(0, n, _BATCH):
        picked = order[start:start + _BATCH]
        rows = zip(offsets[picked].tolist(), offsets[picked + 1].tolist(),
                   shard_of[picked].tolist(), done[picked].tolist(), strict=True)
        out.write(b"".join(os.pread(fd, end - begin, begin) + entry_tail(shard, is_done)
                           for begin, end, shard, is_done in rows))


def _failed(report: PlanReport, reason: Reason, message: str) -> PlanReport:
    report.error_reason = reason.value
    report.error_message = message
    log.error("planning failed: %s: %s", report.error_reason, message)
    return report
