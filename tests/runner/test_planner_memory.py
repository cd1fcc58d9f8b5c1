"""The planner's memory per listed object, measured with tracemalloc on local folders.

tracemalloc counts every allocation Python and numpy make, so the peak during `plan` is
a deterministic measure (RSS is not: the allocator keeps freed pages). The planner holds
one hash partition of files at a time plus a read block per partition while it merges, so
what grows with the files is only the per-partition part. Here partitions hold 1,000 files
and blocks 4 records (the shipped 65,536 and 256 keep that proportion), so growth from
4,000 to 32,000 files shows it at 16 times its real weight; holding the listing would cost
~350 bytes a file (an InputFile with its two strings), a manifest line ~150 more. S3's
page-by-page listing is measured by benchmarks/planner_scale.py.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import tracemalloc
from pathlib import Path

import pytest

from whisperfleet_runner import storage
from whisperfleet_runner.contract import OutputOptions, WorkOrder
from whisperfleet_runner.pod import partitions, planner
from whisperfleet_runner.pod.manifest import read_manifest
from whisperfleet_runner.pod.planner import build_manifest

BYTES_PER_FILE = 8  # measured 0.6-4.4 here (16x the shipped partitions' weight); 141 in memory


def tree(root: Path, count: int) -> WorkOrder:
    for folder in range(100):
        (root / "in" / f"d{folder:02d}").mkdir(parents=True)
    for i in range(count):
        (root / "in" / f"d{i % 100:02d}" / f"talk-{i:06d}.wav").write_bytes(b"x" * (i % 7))
    return WorkOrder(job_uid="mem", input_uri=str(root / "in"), device="cpu",
                     output=OutputOptions(uri=str(root / "out")))


def peak_bytes(order: WorkOrder) -> int:
    planner.plan(order)  # first: one-time caches (compiled globs, lazy imports) stay out
    # Garbage other tests left behind changes when the collector runs inside the measured
    # plan (after test_planner_balance it measured 141 bytes a file, alone 0.6-4.4): both
    # plans start from an empty collector.
    gc.collect()
    tracemalloc.start()
    try:
        report = planner.plan(order)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not report.error_reason, report
    return peak


def test_memory_does_not_grow_with_the_listed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files are handled in batches; make both runs hold full batches, so that what grows
    # between them is only what grows with the number of files.
    monkeypatch.setattr(planner, "_BATCH", 1000)
    monkeypatch.setattr(partitions, "PARTITION", 1000)
    monkeypatch.setattr(partitions, "BLOCK", 4)
    small, large = 4000, 32000
    grown = peak_bytes(tree(tmp_path / "large", large)) - peak_bytes(tree(tmp_path / "small",
                                                                           small))
    per_file = grown / (large - small)
    assert per_file < BYTES_PER_FILE, f"{per_file:.0f} bytes per listed file"


def mixed_tree(root: Path) -> WorkOrder:
    """Files of many sizes, some whose outputs would coincide (talk.wav and talk.mp3), some
    already done in every format, one done in only one format."""
    rng = random.Random(5)
    for i in range(400):
        name = f"in/d{i % 9}/talk-{i:04d}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        for ext in ([".wav", ".mp3"] if i % 37 == 0 else [".wav"]):
            (root / f"{name}{ext}").write_bytes(b"x" * rng.randint(0, 3000))
        done = ["json", "txt"] if i % 5 == 0 else ["json"] if i % 11 == 0 else []
        for fmt in done:
            out = root / f"out/d{i % 9}/talk-{i:04d}.{fmt}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("{}")
    return WorkOrder(job_uid="mix", input_uri=str(root / "in"), device="cpu", shards=7,
                     output=OutputOptions(uri=str(root / "out"), formats=["json", "txt"]))


def test_partitions_on_disk_plan_exactly_as_one_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = mixed_tree(tmp_path)
    assert not planner.plan(order).error_reason  # 400 files: one partition
    whole = read_manifest(order.manifest_uri)
    monkeypatch.setattr(partitions, "PARTITION", 16)
    monkeypatch.setattr(partitions, "BLOCK", 3)
    assert not planner.plan(order).error_reason  # 26 partitions, runs merged 3 at a time
    split = read_manifest(order.manifest_uri)
    assert split == whole
    # ... and both are what the in-memory form makes of the same listing.
    by_key = {e.key: e.done for e in whole}
    files = [dataclasses.replace(f, done=by_key[f.key])
             for f in storage.list_inputs(order.input_uri, order.include)]
    assert build_manifest(files, 7) == whole
    # Every fifth stem is done (json alone is not): 80 stems, 3 of them (0, 185, 370) with a
    # .wav and an .mp3; the files that would write the same outputs share a shard.
    assert sum(e.done for e in whole) == 83
    for stem in ("talk-0000.", "talk-0037.", "talk-0074."):
        assert len({e.shard for e in whole if stem in e.key}) == 1
