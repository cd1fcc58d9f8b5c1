"""The planner's memory per listed object, measured with tracemalloc on local folders.

tracemalloc counts every allocation Python and numpy make, so the peak during `plan` is
a deterministic measure (RSS is not: the allocator keeps freed pages). The difference
between planning 16,000 and 4,000 files, per extra file, must stay far below what holding
the listing would cost (an InputFile with its two strings is ~350 bytes, a manifest line
~150 more). S3's page-by-page listing is measured by benchmarks/planner_scale.py.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from whisperfleet_runner.config import OutputOptions, WorkOrder
from whisperfleet_runner.pod import planner

BYTES_PER_FILE = 80  # measured 42: 24 kept (size, stem hash, offset), the rest while grouping


def tree(root: Path, count: int) -> WorkOrder:
    for folder in range(100):
        (root / "in" / f"d{folder:02d}").mkdir(parents=True)
    for i in range(count):
        (root / "in" / f"d{i % 100:02d}" / f"talk-{i:06d}.wav").write_bytes(b"x" * (i % 7))
    return WorkOrder(job_uid="mem", input_uri=str(root / "in"), device="cpu",
                     output=OutputOptions(uri=str(root / "out")))


def peak_bytes(order: WorkOrder) -> int:
    planner.plan(order)  # first: one-time caches (compiled globs, lazy imports) stay out
    tracemalloc.start()
    try:
        report = planner.plan(order)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not report.error_reason, report
    return peak


def test_memory_per_listed_file_stays_a_few_dozen_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lines are completed in batches; make both runs hold full batches, so that what grows
    # between them is only what grows with the number of files.
    monkeypatch.setattr(planner, "_BATCH", 1000)
    small, large = 4000, 16000
    grown = peak_bytes(tree(tmp_path / "large", large)) - peak_bytes(tree(tmp_path / "small",
                                                                           small))
    per_file = grown / (large - small)
    assert per_file < BYTES_PER_FILE, f"{per_file:.0f} bytes per listed file"
