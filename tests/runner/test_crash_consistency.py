"""Runs killed with SIGKILL at random moments, then run again to the end, leave complete output
sets or none, and counts that match what happened.

Four ways to run the same files — `whisperfleet transcribe` and `run-shard`, each into a
local folder and into moto S3 — are each killed at five seeded moments: during start-up
(model load, first decodes), as soon as the first output of three drawn files shows (the
rest of that file's formats are being published), and once every output is there (a shard
then writes its ledger and report). After every kill each visible output must parse and
every complete set must agree with itself; at the end every good file has its whole set,
the bad file none, and the last run skipped exactly the files whose sets were complete
before it — a partial set is redone, never skipped — while the ledger holds each file once.
A killed `transcribe` must also leave no worker process running.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import wave
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.kill_points import KillPoint, run_until, started
from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract, storage
from whisperfleet_runner.contract import OutputOptions, ShardReport, WorkOrder
from whisperfleet_runner.pipeline.ledger import (
    FAILED,
    SKIPPED,
    SUCCEEDED,
    merge,
    parse_records,
    read_ledger,
)
from whisperfleet_runner.pod.planner import plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SEED = int(os.environ.get("WHISPERFLEET_CRASH_SEED", "20261201"))
KILLS = 5  # per way of running: 20 in all
FORMATS = ("json", "txt", "srt", "vtt", "tsv")
CLIPS = {  # input key -> fixture: short clips, some twice
    "hello.wav": "hello.wav", "nested/numbers.wav": "nested/numbers.wav",
    "with space é.wav": "with space é.wav", "nested/deeper/hello.wav": "nested/deeper/hello.wav",
    "silence.wav": "silence.wav", "more/numbers-2.wav": "nested/numbers.wav",
    "more/hello-3.wav": "hello.wav", "more/space-4.wav": "with space é.wav",
}
BAD = "bad/notes.mp3"  # not audio: fails in every attempt, never has outputs
STEMS = sorted(key.rsplit(".", 1)[0] for key in CLIPS)
TIME = re.compile(r"^\d\d:\d\d:\d\d[,.]\d{3} --> \d\d:\d\d:\d\d[,.]\d{3}$")


class Outputs:
    """The visible outputs under a local folder or an S3 prefix (state and temporary files
    left out), as a user's listing shows them."""

    def __init__(self, uri: str, s3: Any = None) -> None:
        self.uri, self.s3 = uri, s3

    def _keys(self) -> list[str]:
        if self.s3 is None:  # os.walk: cheap enough to look every millisecond
            keys = []
            for folder, dirs, names in os.walk(self.uri):
                dirs[:] = [d for d in dirs if d != contract.STATE_DIR]
                rel = os.path.relpath(folder, self.uri)
                keys += [os.path.normpath(os.path.join(rel, n)) for n in names
                         if not n.startswith(".")]
            return keys
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])
                if not o["Key"][len(prefix):].startswith(contract.STATE_DIR + "/")]

    def count(self) -> int:
        return len(self._keys())

    def read(self) -> dict[str, bytes]:
        if self.s3 is None:
            return {key: (Path(self.uri) / key).read_bytes() for key in self._keys()}
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        return {key: self.s3.get_object(Bucket=bucket, Key=prefix + key)["Body"].read()
                for key in self._keys()}


def check_file(key: str, data: bytes) -> None:
    """One output on its own is whole: it parses as its format says."""
    text, fmt = data.decode("utf-8"), key.rsplit(".", 1)[1]
    assert not text or text.endswith("\n"), key
    if fmt == "json":
        assert isinstance(json.loads(text)["segments"], list), key
    elif fmt == "srt":
        for number, block in enumerate((b for b in text.split("\n\n") if b.strip()), 1):
            lines = block.strip("\n").split("\n")
            assert lines[0] == str(number) and TIME.match(lines[1]) and lines[2], (key, block)
    elif fmt == "vtt":
        assert text.startswith("WEBVTT\n"), key
    elif fmt == "tsv":
        assert text.split("\n", 1)[0] == "start\tend\ttext", key


def check_set(stem: str, found: dict[str, bytes]) -> None:
    """A complete set: every format there, and all of them saying the same segments."""
    segments = json.loads(found[f"{stem}.json"])["segments"]
    lines = [" ".join(s["text"].split()) for s in segments if s["text"].split()]
    assert found[f"{stem}.txt"].decode().splitlines() == lines, stem
    cues = [b for b in found[f"{stem}.srt"].decode().split("\n\n") if b.strip()]
    assert [c.strip("\n").split("\n")[2] for c in cues] == lines, stem
    assert found[f"{stem}.vtt"].decode().count(" --> ") == len(lines), stem
    assert len(found[f"{stem}.tsv"].decode().splitlines()) == len(lines) + 1, stem


def sets(outputs: Outputs) -> tuple[set[str], set[str]]:
    """(stems with every format, stems with some), after checking each visible output."""
    found = outputs.read()
    for key, data in found.items():
        check_file(key, data)
    have = Counter(key.rsplit(".", 1)[0] for key in found)
    assert set(have) <= set(STEMS), set(have) - set(STEMS)  # the bad file never has one
    complete = {stem for stem, n in have.items() if n == len(FORMATS)}
    for stem in complete:
        check_set(stem, found)
    return complete, set(have) - complete


def kill_points(rng: random.Random) -> list[KillPoint]:
    """During start-up (model load, first decodes); at once when the first output of three
    drawn files' sets is visible (mid-publish: a local set takes ~3 ms); when every output
    is there (a shard then writes its ledger and report)."""
    return [KillPoint(rng.uniform(0.3, 3.0)),
            *(KillPoint(0, outputs=len(FORMATS) * i + 1)
              for i in sorted(rng.sample(range(len(STEMS)), 3))),
            KillPoint(rng.uniform(0, 0.03), outputs=len(STEMS) * len(FORMATS))]


Command = Callable[[int], tuple[list[str], dict[str, str]]]  # attempt -> argv, environment


def crash_and_finish(name: str, command: Command, outputs: Outputs, logs: Path
                     ) -> tuple[list[tuple[str, int, int]], set[str], int]:
    """Run `command` and kill it at KILLS seeded moments, then run it to the end. Returns
    (each kill's moment with the complete and partial sets it left), the sets complete
    before the last run, and the last run's exit code."""
    rng = random.Random(f"{SEED}-{name}")
    points, seen, attempt = kill_points(rng), [], 0
    while points:
        attempt += 1
        assert attempt <= 3 * KILLS, f"{name}: the runs kept ending before their kill points"
        argv, env = command(attempt)
        with started(argv, env, logs / f"{name}-{attempt}.log") as process:
            outcome = run_until(process, points[0], outputs.count)
        complete, partial = sets(outputs)  # whenever it was killed, nothing is half-written
        if outcome.killed:
            seen.append((points.pop(0).describe(), len(complete), len(partial)))
        else:  # it ended first (only the last point can be that late): kill a start-up
            assert outcome.returncode in (contract.EXIT_SOME_FAILED, contract.EXIT_BAD_INPUT), (
                (logs / f"{name}-{attempt}.log").read_text())
            points[0] = KillPoint(rng.uniform(0.3, 2.0))
    before, _ = sets(outputs)
    argv, env = command(attempt + 1)
    with started(argv, env, logs / f"{name}-last.log") as process:
        returncode = process.wait(timeout=300)
    assert sets(outputs) == (set(STEMS), set()), (name, seen)
    print(f"{name}: {len(seen)} of {attempt} attempts killed, then one to the end", *(
        f"{moment}: {done} sets complete, {cut} partial" for moment, done, cut in seen),
        sep="\n  ")
    return seen, before, returncode


@pytest.fixture
def inputs(tmp_path: Path, audio_dir: Path) -> Path:
    folder = tmp_path / "in"
    for key, fixture in {**CLIPS, BAD: BAD}.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(audio_dir / fixture, folder / key)
    (tmp_path / "logs").mkdir()
    return folder


def hidden_leftovers(out: str) -> list[str]:
    """Temporary files a kill left in a local output: hidden, and never taken for outputs."""
    return [p.name for p in Path(out).rglob(".*.tmp-*")] if not out.startswith("s3:") else []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_transcribe_runs_leave_whole_sets_and_a_rerun_skips_only_those(
    where: str, inputs: Path, tmp_path: Path, tiny_model_path: Path,
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    out = str(tmp_path / "out") if where == "local" else f"s3://{s3_bucket}/out/"
    summary = tmp_path / "summary.json"
    argv = [str(WHISPERFLEET), "transcribe", str(inputs), "-o", out, "--model",
            str(tiny_model_path), "--formats", ",".join(FORMATS), "--quiet",
            "--summary-json", str(summary)]
    name = f"transcribe-{where}"
    seen, before, code = crash_and_finish(name, lambda _: (argv, s3_env),
                                          Outputs(out, s3 if where == "s3" else None),
                                          tmp_path / "logs")
    assert any(partial for _, _, partial in seen), seen  # some kill cut a set in two
    assert code == contract.EXIT_SOME_FAILED, (tmp_path / "logs" / f"{name}-last.log").read_text()
    files = json.loads(summary.read_text())["files"]
    expected = {"total": len(CLIPS) + 1, "succeeded": len(CLIPS) - len(before),
                "skipped": len(before), "failed": 1, "not_attempted": 0}
    assert {key: files.get(key) for key in expected} == expected, seen
    print("hidden temporary files left by the kills:", len(hidden_leftovers(out)))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_shards_leave_whole_sets_and_a_ledger_counting_each_file_once(
    where: str, inputs: Path, tmp_path: Path, tiny_model_path: Path,
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    source, out = str(inputs), str(tmp_path / "out")
    if where == "s3":
        for path in (p for p in inputs.rglob("*") if p.is_file()):
            s3.upload_file(str(path), s3_bucket, f"in/{path.relative_to(inputs)}")
        source, out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/"
    order = WorkOrder(job_uid="crash", input_uri=source, shards=1, device="cpu",
                      output=OutputOptions(uri=out, formats=list(FORMATS)))
    order.model.name = str(tiny_model_path)
    assert plan(order).files == len(CLIPS) + 1
    (tmp_path / "order.json").write_text(order.to_json())
    report = tmp_path / "report.json"

    def command(attempt: int) -> tuple[list[str], dict[str, str]]:
        # Each attempt is a new pod of the Indexed Job's index 0, with a name of its own.
        return ([str(WHISPERFLEET), "run-shard", "--work-order", str(tmp_path / "order.json"),
                 "--index", "0", "--termination-log", str(report)],
                {**s3_env, "POD_NAME": f"crash-0-{attempt}"})

    name = f"shard-{where}"
    seen, before, code = crash_and_finish(name, command,
                                          Outputs(out, s3 if where == "s3" else None),
                                          tmp_path / "logs")
    # Killed attempts flush no ledger (a flush is due every 10 files): the sets they wrote
    # were found by asking the store, and skipped.
    assert before, seen
    assert code == contract.EXIT_BAD_INPUT, (tmp_path / "logs" / f"{name}-last.log").read_text()
    last = ShardReport.from_json(report.read_text())  # only the last attempt wrote one
    assert (last.total, last.succeeded, last.skipped, last.failed) == (
        len(CLIPS) + 1, len(CLIPS) - len(before), len(before), 1), seen
    # Each attempt's ledger object holds a file at most once; merged, every file once.
    objects = storage.list_uris(order.ledger_uri, ".jsonl")
    for uri in objects:
        assert max(Counter(r.uri for r in parse_records(storage.read_text(uri))).values(),
                   default=1) == 1, uri
    statuses = {r.key: r.status for r in merge(read_ledger(order.ledger_uri)).values()}
    assert set(statuses) == {*CLIPS, BAD} and statuses[BAD] == FAILED, statuses
    assert {statuses[key] for key in CLIPS} <= {SUCCEEDED, SKIPPED}, statuses
    print("ledger objects:", len(objects), "merged:", dict(Counter(statuses.values())),
          "hidden temporary files left by the kills:", len(hidden_leftovers(out)))


def test_a_killed_run_leaves_no_worker_behind(tmp_path: Path, tiny_model_path: Path) -> None:
    # The transcription runs in a spawned worker: killed with its parent, it must stop
    # too, not go on writing beside the re-run and then wait for work forever.
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(400):  # 0.1 s of silence each: quick files, a long queue
        with wave.open(str(folder / f"s{i:03d}.wav"), "wb") as clip:
            clip.setnchannels(1)
            clip.setsampwidth(2)
            clip.setframerate(16000)
            clip.writeframes(b"\0\0" * 1600)
    outputs = Outputs(str(tmp_path / "out"))
    argv = [str(WHISPERFLEET), "transcribe", str(folder), "-o", outputs.uri, "--model",
            str(tiny_model_path), "--formats", "json", "--quiet"]
    with started(argv, dict(os.environ), tmp_path / "run.log") as process:
        outcome = run_until(process, KillPoint(0, outputs=20), outputs.count, gone_within=5)
    assert outcome.killed
    written = outputs.count()
    assert 20 <= written < 400, written  # it stopped: the worker did not finish the queue
