"""The planner's working set on disk: hash partitions, so memory does not grow with the files.

Each listed file becomes one fixed-width record (size, output-stem hash, listing index, the
byte range of its spilled manifest line), and each output the output listing finds becomes
(stem hash, format bit). Both go to one of P partition files by stem hash, with P chosen so a
partition holds about PARTITION files. Whatever must see every file of one stem together
(which files are done, which files would write the same outputs) then needs one partition in
memory at a time; whatever needs one global order (groups balanced largest first, manifest
lines in shard order) merges the partitions' sorted runs, read back BLOCK records at a time.
So memory is about one partition plus a block per open run, whatever the object count. At
most MAX_OPEN_RUNS runs are open at once: with more partitions, runs are first merged in
rounds into fewer, longer runs (one more pass over the records per round), so the planner
never meets the file limit (1,024 by default; 1,000 partitions hold 65 million files).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

from whisperfleet_runner.pod.manifest import entry_tail

PARTITION = 65_536  # files a partition holds, about (stem hashes are uniform)
T = TypeVar("T")
BLOCK = 256  # records read from each sorted run at a time while merging
MAX_OPEN_RUNS = 64  # sorted runs read at once while merging; far below any file limit

FILE = np.dtype([("size", "<i8"), ("stem", "<i8"), ("index", "<i8"), ("start", "<i8"),
                 ("end", "<i8")])
OUTPUT = np.dtype([("stem", "<i8"), ("bit", "u1")])
GROUP = np.dtype([("neg_weight", "<i8"), ("rep", "<i8")])  # rep: the group's first file
META = np.dtype([("done", "u1"), ("group", "<i4")])  # group: its rank in the partition's run
LINE = np.dtype([("shard", "<i8"), ("neg_size", "<i8"), ("index", "<i8"), ("start", "<i8"),
                 ("end", "<i8"), ("done", "u1")])


class Partitions:
    """Files and outputs split by stem hash into `count` partitions under `folder`."""

    def __init__(self, folder: Path, files: int) -> None:
        self.folder = folder
        self.count = max(1, -(-files // PARTITION))
        self.done = 0  # files whose outputs all exist (after `group`)
        self.groups = 0  # distinct output stems (after `group`)

    def add_files(self, records: np.ndarray) -> None:
        self._scatter("files", records, records["stem"])

    def add_outputs(self, records: np.ndarray) -> None:
        self._scatter("outputs", records, records["stem"])

    def group(self, formats: int) -> None:
        """Per partition: which files are done (an output in each of `formats`; 0: none is,
        overwrite), and the files grouped by stem with each group's weight, the bytes still
        to transcribe; the groups written as a run sorted heaviest first, then by first file.
        """
        for p in range(self.count):
            files = self._load("files", p)
            done = (_done(files["stem"], self._load("outputs", p), formats) if formats
                    else np.zeros(len(files), dtype=bool))
            group = stem_groups(files["stem"])  # numbered by first appearance
            firsts = np.full(int(group.max(initial=-1)) + 1, np.iinfo(np.int64).max)
            np.minimum.at(firsts, group, files["index"])  # each group's earliest file
            weights = np.zeros(len(firsts), dtype=np.int64)
            np.add.at(weights, group, np.where(done, 0, np.maximum(files["size"], 0)))
            order = np.lexsort((firsts, -weights))
            rank = np.empty(len(order), dtype=np.int32)
            rank[order] = np.arange(len(order), dtype=np.int32)
            run = np.empty(len(order), dtype=GROUP)
            run["neg_weight"], run["rep"] = -weights[order], firsts[order]
            self._write("groups", p, run)
            meta = np.empty(len(files), dtype=META)
            meta["done"], meta["group"] = done, rank[group]
            self._write("meta", p, meta)
            self.done += int(done.sum())
            self.groups += len(order)

    def balance(self, shards: int) -> None:
        """`lpt` over every group, heaviest first (ties: the earlier first file): what
        planner.assign does in memory, here from the merged runs."""
        pending: list[list[int]] = [[] for _ in range(self.count)]
        groups = ((-neg_weight, p) for neg_weight, _rep, p in self._merged("groups", GROUP))
        for shard, p in lpt(groups, shards):
            pending[p].append(shard)
            if len(pending[p]) >= BLOCK:
                self._append("shards", p, np.asarray(pending[p], dtype=np.int32))
                pending[p].clear()
        for p, shards_of in enumerate(pending):
            self._append("shards", p, np.asarray(shards_of, dtype=np.int32))

    def write_manifest(self, spill: IO[bytes], out: IO[bytes]) -> None:
        """Lines grouped by shard, each shard's files largest first (its work order), equal
        sizes in listing order; each read back from the spill and completed."""
        for p in range(self.count):
            files, meta = self._load("files", p), self._load("meta", p)
            shard = self._load("shards", p)[meta["group"]]
            order = np.lexsort((files["index"], -files["size"], shard))
            lines = np.empty(len(files), dtype=LINE)
            lines["shard"], lines["neg_size"] = shard[order], -files["size"][order]
            for name in ("index", "start", "end"):
                lines[name] = files[name][order]
            lines["done"] = meta["done"][order]
            self._write("lines", p, lines)
        fd, batch = spill.fileno(), []
        for shard, _size, _index, start, end, done, _p in self._merged("lines", LINE):
            batch.append(os.pread(fd, end - start, start) + entry_tail(shard, bool(done)))
            if len(batch) >= BLOCK:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch))

    def _merged(self, kind: str, dtype: np.dtype) -> Iterator[tuple[int, ...]]:
        """Every record of the partitions' `kind` runs in sorted order, as tuples ending
        with the record's partition, never reading more than MAX_OPEN_RUNS files at once."""
        tagged = np.dtype([*((name, dtype[name]) for name in dtype.names), ("part", "<i8")])
        runs: list[Callable[[], Iterator[tuple[int, ...]]]] = [
            functools.partial(_run, self._path(kind, p), dtype, p) for p in range(self.count)]
        merged: list[Path] = []  # this round's merged runs, removed once read
        for level in itertools.count():
            if len(runs) <= MAX_OPEN_RUNS:
                break
            written = []
            for first in range(0, len(runs), MAX_OPEN_RUNS):
                path = self.folder / f"{kind}-merge{level}-{first // MAX_OPEN_RUNS:05d}"
                with open(path, "wb") as out:
                    group = runs[first:first + MAX_OPEN_RUNS]
                    for block in chunks(heapq.merge(*(run() for run in group)), tagged, BLOCK):
                        out.write(block.tobytes())
                written.append(path)
            for path in merged:
                path.unlink()
            merged = written
            runs = [functools.partial(_run, path, tagged) for path in merged]
        yield from heapq.merge(*(run() for run in runs))
        for path in merged:
            path.unlink()

    def _scatter(self, kind: str, records: np.ndarray, stems: np.ndarray) -> None:
        part = stems.view(np.uint64) % np.uint64(self.count)
        order = np.argsort(part, kind="stable")  # keeps listing order inside a partition
        bounds = np.searchsorted(part[order], np.arange(self.count + 1, dtype=np.uint64))
        ordered = records[order]
        for p in range(self.count):
            if bounds[p + 1] > bounds[p]:
                self._append(kind, p, ordered[bounds[p]:bounds[p + 1]])

    def _path(self, kind: str, p: int) -> Path:
        return self.folder / f"{kind}-{p:05d}"

    def _append(self, kind: str, p: int, records: np.ndarray) -> None:
        with open(self._path(kind, p), "ab") as fh:
            fh.write(records.tobytes())

    def _write(self, kind: str, p: int, records: np.ndarray) -> None:
        self._path(kind, p).write_bytes(records.tobytes())

    def _load(self, kind: str, p: int) -> np.ndarray:
        dtype = {"files": FILE, "outputs": OUTPUT, "meta": META, "shards": np.dtype("<i4")}[kind]
        path = self._path(kind, p)
        return np.fromfile(path, dtype=dtype) if path.exists() else np.empty(0, dtype=dtype)


def lpt(items: Iterable[tuple[int, T]], shards: int) -> Iterator[tuple[int, T]]:
    """Longest-processing-time greedy: each (weight, tag), given heaviest first, goes to the
    currently lightest shard (ties: fewer items, then the lower index); yields (shard, tag)
    as it goes, so a stream of any length needs memory for the shards only."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    # (load, item count, shard index): the count spreads empty files, so no shard is left
    # without work while another holds several.
    heap = [(0, 0, s) for s in range(shards)]
    for weight, tag in items:
        load, count, shard = heap[0]
        heapq.heapreplace(heap, (load + weight, count + 1, shard))
        yield shard, tag


def stem_groups(stems: np.ndarray) -> np.ndarray:
    """Group number of each file (equal stems, equal group), numbered in order of first
    appearance; int32 and freed as it goes, since this is the peak of memory."""
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


def _done(stems: np.ndarray, outputs: np.ndarray, formats: int) -> np.ndarray:
    """Whether each file's stem has an output in every one of `formats` formats. Outputs are
    matched by stem hash: two stems would have to share a 64-bit hash in every format for a
    file to be marked done wrongly."""
    known = np.unique(stems)
    found = np.zeros(len(known), dtype=np.uint8)
    if len(known) and len(outputs):
        at = np.minimum(np.searchsorted(known, outputs["stem"]), len(known) - 1)
        hit = known[at] == outputs["stem"]
        np.bitwise_or.at(found, at[hit], outputs["bit"][hit])
    return found[np.searchsorted(known, stems)] == (1 << formats) - 1


def _run(path: Path, dtype: np.dtype, p: int | None = None) -> Iterator[tuple[int, ...]]:
    """A sorted run's records as tuples ending with the partition (`p`, or the records' own
    last field when they carry it: a merged run's), BLOCK at a time."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        while len(block := np.fromfile(fh, dtype=dtype, count=BLOCK)):
            columns = [block[name].tolist() for name in dtype.names]
            if p is not None:
                columns.append([p] * len(block))
            yield from zip(*columns, strict=True)


def chunks(records: Iterable[tuple[int, ...]], dtype: np.dtype, size: int
           ) -> Iterator[np.ndarray]:
    """Tuples as record arrays of at most `size` records."""
    batch: list[tuple[int, ...]] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield np.array(batch, dtype=dtype)
            batch = []
    if batch:
        yield np.array(batch, dtype=dtype)
