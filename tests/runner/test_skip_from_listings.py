"""Deciding what is done from listings: the planner's manifest, a local run's listing of the
output, a retried shard's earlier ledgers. Local folders only; S3 is in test_rerun_requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whisperfleet_runner import storage
from whisperfleet_runner.contract import DEFAULT_FORMATS, OutputOptions, WorkOrder
from whisperfleet_runner.pipeline.ledger import LedgerRecord, LedgerWriter
from whisperfleet_runner.pipeline.run import run_files
from whisperfleet_runner.pod.manifest import ManifestEntry, parse_manifest, shard_inputs
from whisperfleet_runner.pod.planner import assign, plan, read_manifest
from whisperfleet_runner.storage import InputFile


def write(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def outputs(out: Path, stem: str, formats: tuple[str, ...] = DEFAULT_FORMATS) -> None:
    for fmt in formats:
        write(out / f"{stem}.{fmt}", b"{}")


def order_for(tmp_path: Path, **output: object) -> WorkOrder:
    return WorkOrder(job_uid="uid-skip", input_uri=str(tmp_path / "in"), device="cpu",
                     output=OutputOptions(uri=str(tmp_path / "out"), **output))  # type: ignore[arg-type]


@pytest.fixture
def half_done(tmp_path: Path) -> Path:
    """in/: four talks; out/: a complete set, a set missing one format, a complete set of a
    format the job does not ask for, state and temporary files that must not count."""
    for key in ("a.wav", "b.wav", "sub/c.mp3", "d.wav"):
        write(tmp_path / "in" / key, b"\0" * 100)
    out = tmp_path / "out"
    outputs(out, "a")
    outputs(out, "b", DEFAULT_FORMATS[:-1])
    outputs(out, "sub/c", ("tsv",))
    outputs(out / ".whisperfleet" / "old", "d")  # a state folder holds no outputs
    for fmt in DEFAULT_FORMATS:
        write(out / f".d.{fmt}.tmp-0123456789ab")  # nor do half-written files
    return tmp_path


def test_the_manifest_marks_done_only_complete_sets(half_done: Path) -> None:
    order = order_for(half_done)
    report = plan(order, workers=1)
    assert (report.files, report.error_reason) == (4, "")
    done = {e.key: e.done for e in read_manifest(order.manifest_uri)}
    assert done == {"a.wav": True, "b.wav": False, "sub/c.mp3": False, "d.wav": False}
    # Formats can change between runs: asking for tsv too makes a's set incomplete.
    order.output.formats = (*DEFAULT_FORMATS, "tsv")
    plan(order, workers=1)
    assert not any(e.done for e in read_manifest(order.manifest_uri))


def test_overwrite_marks_nothing_done(half_done: Path) -> None:
    order = order_for(half_done, overwrite=True)
    plan(order, workers=1)
    assert not any(e.done for e in read_manifest(order.manifest_uri))


def test_the_manifest_line_format_stays_readable_both_ways(half_done: Path) -> None:
    order = order_for(half_done)
    plan(order, workers=1)
    lines = (Path(order.manifest_uri).read_text(encoding="utf-8")).splitlines()
    parsed = [json.loads(line) for line in lines]
    # An older reader needs uri, key, size and shard; `done` appears only when true.
    assert all({"uri", "key", "size", "shard"} <= set(p) for p in parsed)
    assert [p.get("done") for p in parsed if p["key"] == "a.wav"] == [True]
    assert all("done" not in p for p in parsed if p["key"] != "a.wav")
    old = '{"uri":"s3://b/in/x.wav","key":"x.wav","size":3,"shard":1}\n'
    assert parse_manifest(old) == [ManifestEntry("s3://b/in/x.wav", "x.wav", 3, 1, False)]


def test_done_files_weigh_nothing_in_the_balance() -> None:
    sizes = np.array([1000, 10, 10, 10, 10], dtype=np.int64)
    stems = np.arange(5, dtype=np.int64)
    busy, _ = assign(sizes, stems, np.zeros(5, dtype=bool), 2)
    assert (busy[1:] != busy[0]).all()  # the big pending file alone, the rest together
    idle, _ = assign(sizes, stems, np.array([True, False, False, False, False]), 2)
    # The big file is done: the four small ones spread over both shards, two each.
    assert sorted(np.bincount(idle[1:], minlength=2).tolist()) == [2, 2]


def test_a_local_run_lists_its_output_once_to_decide(half_done: Path) -> None:
    files = storage.list_inputs(str(half_done / "in"))
    marked = storage.mark_done(files, str(half_done / "out"), DEFAULT_FORMATS)
    assert {f.key: f.done for f in marked} == {
        "a.wav": True, "b.wav": False, "sub/c.mp3": False, "d.wav": False}
    unsafe = InputFile(uri=str(half_done / "in" / "a.wav"), key="../../a.wav", size=1)
    assert storage.mark_done([unsafe], str(half_done / "out"), DEFAULT_FORMATS)[0].done is None
    missing = storage.mark_done(files, str(half_done / "nowhere"), DEFAULT_FORMATS)
    assert [f.done for f in missing] == [False] * 4


def test_the_run_trusts_what_a_listing_decided(tmp_path: Path, audio_dir: Path) -> None:
    # done=True skips without asking (there are no outputs at all); done=False works on
    # the file even though its outputs exist (the listing said otherwise); None asks.
    options = order_for(tmp_path).options
    outputs(tmp_path / "out", "y")
    uri = str(audio_dir / "hello.wav")
    loads: list[int] = []

    def engine() -> object:
        loads.append(1)
        raise RuntimeError("no model in this test")

    skipped = run_files([InputFile(uri, "x.wav", 64, done=True)], options, engine)
    assert (skipped.skipped, loads) == (1, [])
    asked = run_files([InputFile(uri, "y.wav", 64, done=None)], options, engine)
    assert (asked.skipped, loads) == (1, [])
    redone = run_files([InputFile(uri, "y.wav", 64, done=False)], options, engine)
    assert redone.skipped == 0 and loads == [1]


def test_a_first_attempt_trusts_the_manifest_and_a_retry_reads_earlier_ledgers(
    half_done: Path,
) -> None:
    order = order_for(half_done, formats=("json",))
    order.shards = 1
    plan(order, workers=1)
    first = {f.key: f.done for f in shard_inputs(order, 0)}
    assert first == {"a.wav": True, "b.wav": True, "sub/c.mp3": False, "d.wav": False}
    # An earlier attempt of this shard wrote c (recorded) and d (after its last flush).
    c_uri, d_uri = (str(half_done / "in" / k) for k in ("sub/c.mp3", "d.wav"))
    with LedgerWriter(order.ledger_uri, 0, "pod-a") as ledger:
        ledger.add(LedgerRecord(uri=c_uri, key="sub/c.mp3", status="succeeded"))
        ledger.add(LedgerRecord(uri=d_uri, key="d.wav", status="failed"))
    with LedgerWriter(order.ledger_uri, 1, "pod-b") as other:  # another shard's: ignored
        other.add(LedgerRecord(uri=d_uri, key="d.wav", status="succeeded"))
    again = {f.key: f.done for f in shard_inputs(order, 0)}
    assert again == {"a.wav": True, "b.wav": True, "sub/c.mp3": True, "d.wav": None}


def test_a_listing_costlier_than_asking_per_file_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from whisperfleet_runner.storage import done

    monkeypatch.setattr(done, "LIST_PAGE", 2)  # a "page" of 2 keys: a budget of 2 keys
    out = tmp_path / "out"
    outputs(out, "talk", ("json",))
    outputs(out, "other", ("json",))  # does not begin like talk: never listed
    files = [InputFile(str(tmp_path / "talk.wav"), "talk.wav", 1)]
    assert [f.done for f in storage.mark_done(files, str(out), ("json",))] == [True]
    outputs(out, "talk-2", ("json",))
    outputs(out, "talk-3", ("json",))  # now 3 keys begin like it: more than asking would cost
    assert [f.done for f in storage.mark_done(files, str(out), ("json",))] == [None]


def test_every_shard_refuses_a_manifest_line_cut_short(tmp_path: Path) -> None:
    order = order_for(tmp_path)
    manifest = Path(order.manifest_uri)
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"uri":"a","key":"a.wav","size":1,"shard":1}\n{"uri":"b","key":"b.wa\n')
    for shard in (0, 1):
        with pytest.raises(ValueError, match="manifest line 2 is malformed"):
            shard_inputs(order, shard)
