"""Balancing files over shards by size: pure arithmetic, no storage."""

from __future__ import annotations

import random

import pytest

from whisperfleet_runner.pod.planner import (
    ManifestEntry,
    auto_shards,
    balance,
    build_manifest,
    manifest_text,
    parse_manifest,
    shard_count,
)
from whisperfleet_runner.storage import InputFile


def loads(sizes: list[int], assignment: list[int], shards: int) -> list[int]:
    totals = [0] * shards
    for size, shard in zip(sizes, assignment, strict=True):
        totals[shard] += size
    return totals


def test_one_big_file_gets_a_shard_to_itself_and_small_ones_share() -> None:
    sizes = [100, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    assignment = balance(sizes, 2)
    assert loads(sizes, assignment, 2) == [100, 100]
    big = assignment[0]
    assert all(s != big for s in assignment[1:])


def test_lpt_stays_within_its_bound_on_random_sizes() -> None:
    rng = random.Random(7)
    for _ in range(50):
        sizes = [rng.randint(1, 10_000) for _ in range(rng.randint(1, 60))]
        shards = rng.randint(1, 12)
        totals = loads(sizes, balance(sizes, shards), shards)
        # Greedy LPT: the heaviest shard exceeds the ideal by at most the largest file.
        assert max(totals) <= sum(sizes) / shards + max(sizes)
        assert sum(totals) == sum(sizes)


def test_equal_sizes_spread_evenly() -> None:
    sizes = [5] * 12
    assert sorted(loads(sizes, balance(sizes, 4), 4)) == [15, 15, 15, 15]


def test_balance_is_deterministic() -> None:
    sizes = [3, 9, 9, 1, 4, 4, 7, 0, 2]
    assert balance(sizes, 3) == balance(list(sizes), 3)
    assert balance(sizes, 3) == [1, 0, 1, 1, 2, 0, 2, 0, 2]


def test_empty_and_zero_sized_files() -> None:
    assert balance([], 3) == []
    assert sorted(balance([0, 0, 0], 3)) == [0, 1, 2]


def test_balance_refuses_zero_shards() -> None:
    with pytest.raises(ValueError, match="shards must be >= 1"):
        balance([1], 0)


@pytest.mark.parametrize(
    ("files", "requested", "workers", "expected"),
    [
        (100, 0, 4, 16),  # auto: about 4 per worker
        (100, 0, 0, 4),  # no worker count -> as if one
        (3, 0, 4, 3),  # never more shards than files
        (1, 0, 10, 1),
        (0, 0, 4, 1),  # at least one
        (10, 25, 1, 10),  # an explicit request is clamped to the file count
        (10, 4, 99, 4),  # an explicit request wins over the worker count
    ],
)
def test_shard_count(files: int, requested: int, workers: int, expected: int) -> None:
    assert shard_count(files, requested, workers) == expected


def test_auto_shards_and_negative_request() -> None:
    assert auto_shards(1000, 2) == 8
    with pytest.raises(ValueError, match="shards must be >= 0"):
        shard_count(5, -1, 1)


def test_manifest_groups_by_shard_largest_first_and_round_trips() -> None:
    files = [InputFile(uri=f"s3://b/in/{n}.wav", key=f"{n}.wav", size=s)
             for n, s in [("a", 10), ("b", 50), ("c", 30), ("d", 20), ("é x", 40)]]
    entries = build_manifest(files, 2)
    assert {e.key for e in entries} == {f.key for f in files}
    shards = [e.shard for e in entries]
    assert shards == sorted(shards)
    for shard in (0, 1):
        sizes = [e.size for e in entries if e.shard == shard]
        assert sizes == sorted(sizes, reverse=True)
    assert parse_manifest(manifest_text(entries)) == entries
    assert entries[0] == ManifestEntry(uri="s3://b/in/b.wav", key="b.wav", size=50, shard=0)


def test_malformed_manifest_line_is_named() -> None:
    with pytest.raises(ValueError, match="manifest line 2"):
        parse_manifest('{"uri":"u","key":"k","size":1,"shard":0}\n{"uri":"u"}\n')
