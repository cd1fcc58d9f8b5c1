"""The ledger: per-attempt objects, incremental flushes, and the merging reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperfleet_runner.pipeline.ledger import (
    FAILED,
    SKIPPED,
    SUCCEEDED,
    LedgerRecord,
    LedgerWriter,
    attempt_name,
    ledger_object_uri,
    merge,
    read_ledger,
)


def rec(uri: str, status: str, t: float, reason: str = "") -> LedgerRecord:
    return LedgerRecord(uri=uri, key=uri.rsplit("/", 1)[-1], status=status, reason=reason, time=t)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_object_per_attempt_named_by_shard_and_pod() -> None:
    assert ledger_object_uri("s3://b/out/.whisperfleet/u/ledger/", 3, "job-3-abcde") == (
        "s3://b/out/.whisperfleet/u/ledger/shard-00003-job-3-abcde.jsonl"
    )
    assert attempt_name("pod/with spaces") == "pod-with-spaces"
    a, b = attempt_name(None), attempt_name("")
    assert a != b and len(a) == 12  # random when the pod name is unknown


def test_flushes_every_n_records_so_progress_survives_a_crash(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    writer = LedgerWriter(str(ledger), 1, "pod-a", flush_every=2, flush_seconds=1e9)
    writer.add(rec("in/a.wav", SUCCEEDED, 1))
    assert read_ledger(str(ledger)) == []  # one record: not yet flushed
    writer.add(rec("in/b.wav", FAILED, 2, "bad media: empty file (0 bytes)"))
    # No close(): as if the pod died here. Both records are already durable.
    records = read_ledger(str(ledger))
    assert [(r.uri, r.status, r.reason) for r in records] == [
        ("in/a.wav", SUCCEEDED, ""),
        ("in/b.wav", FAILED, "bad media: empty file (0 bytes)"),
    ]
    assert list(ledger.iterdir()) == [ledger / "shard-00001-pod-a.jsonl"]


def test_a_long_shard_uploads_its_ledger_a_bounded_number_of_times(tmp_path: Path) -> None:
    uploads: list[int] = []

    def publish(uri: str, data: bytes) -> None:
        uploads.append(len(data))

    writer = LedgerWriter(str(tmp_path), 0, "p", flush_seconds=1e9, publish=publish)
    for n in range(20_000):
        writer.add(rec(f"in/{n}.wav", SKIPPED, n))
    writer.close()
    final = uploads[-1]
    # Every 10 records would be 2,000 uploads of up to the whole ledger (~200x its size).
    assert len(uploads) < 100
    assert sum(uploads) < 12 * final


def test_flushes_after_enough_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = LedgerWriter(str(tmp_path), 0, "p", flush_every=100, flush_seconds=30, clock=clock)
    writer.add(rec("a", SUCCEEDED, 1))
    assert read_ledger(str(tmp_path)) == []
    clock.now = 31.0
    writer.add(rec("b", SUCCEEDED, 2))
    assert len(read_ledger(str(tmp_path))) == 2


def test_close_flushes_the_rest_and_a_failed_publish_is_retried(tmp_path: Path) -> None:
    from whisperfleet_runner import storage

    calls: list[int] = []

    def flaky(uri: str, data: bytes) -> None:
        calls.append(data.count(b"\n"))
        if len(calls) == 1:
            raise storage.StorageError("AccessDenied", "denied")
        storage.publish(uri, data)

    with LedgerWriter(str(tmp_path), 0, "p", flush_every=1, publish=flaky) as writer:
        writer.add(rec("a", SUCCEEDED, 1))  # publish fails: logged, kept for the next flush
        writer.add(rec("b", SUCCEEDED, 2))
    assert calls == [1, 2]
    assert [r.uri for r in read_ledger(str(tmp_path))] == ["a", "b"]


def test_reader_merges_attempts_and_skips_torn_lines(tmp_path: Path) -> None:
    first = LedgerWriter(str(tmp_path), 2, "pod-1")
    first.add(rec("s3://b/x.wav", SUCCEEDED, 10))
    first.add(rec("s3://b/y.wav", FAILED, 11, "storage error"))
    first.close()
    second = LedgerWriter(str(tmp_path), 2, "pod-2")
    second.add(rec("s3://b/x.wav", SKIPPED, 20))  # re-run of a replaced pod
    second.add(rec("s3://b/y.wav", SUCCEEDED, 21))
    second.close()
    (tmp_path / "shard-00002-pod-2.jsonl").open("a").write('{"uri": "s3://b/z.w')  # torn
    records = read_ledger(str(tmp_path))
    assert [r.time for r in records] == [10, 11, 20, 21]
    merged = merge(records)
    assert {u: r.status for u, r in merged.items()} == {
        "s3://b/x.wav": SUCCEEDED,  # a later skip does not hide that it was written
        "s3://b/y.wav": SUCCEEDED,
    }


def test_merge_keeps_latest_failure_reason() -> None:
    merged = merge([rec("u", FAILED, 1, "first"), rec("u", FAILED, 2, "second")])
    assert merged["u"].reason == "second"


def test_missing_ledger_folder_reads_empty(tmp_path: Path) -> None:
    assert read_ledger(str(tmp_path / "nothing-here")) == []


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="ledger status"):
        LedgerRecord(uri="u", key="k", status="done")
