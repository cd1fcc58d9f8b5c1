"""Damaged media through the installed `whisperfleet` commands, on the bundled tiny.en (CPU).

`transcribe` fails a damaged mp3 by default and keeps its partial transcript with
--keep-partial; `plan` + `run-shard` (a pod's commands) do the same from a work order and
write it to the ledger and the shard report. An mp3 named .wav is no damage either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import damaged_media as dm
from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.pipeline.ledger import FAILED, SUCCEEDED, read_ledger

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WHISPERFLEET), *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def speech_mp3() -> bytes:
    return dm.mp3_cbr(dm.speech())  # no Xing header: only the decoder can tell the damage


@pytest.fixture
def inputs(tmp_path: Path, audio_dir: Path, speech_mp3: bytes) -> Path:
    """talk.mp3: 3 KB of garbage at two thirds (in "directions", before hello.wav's words);
    mislabeled.wav: a clean mp3; hello.wav: a clean WAV."""
    folder = tmp_path / "in"
    folder.mkdir()
    at = len(speech_mp3) * 2 // 3
    (folder / "talk.mp3").write_bytes(dm.overwrite(speech_mp3, at, 3000))
    (folder / "mislabeled.wav").write_bytes((audio_dir / "hello.mp3").read_bytes())
    shutil.copy(audio_dir / "hello.wav", folder / "hello.wav")
    return folder


def summary_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_transcribe_fails_damaged_media_then_keeps_it_with_keep_partial(
    tmp_path: Path, inputs: Path, tiny_model_path: Path
) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    args = [str(inputs), "-o", str(out), "--model", str(tiny_model_path), "--summary-json",
            str(summary)]
    strict = cli("transcribe", *args)
    assert strict.returncode == contract.EXIT_SOME_FAILED, strict.stderr
    data = summary_of(summary)
    assert {k: data["files"][k] for k in ("succeeded", "partial", "failed")} == {
        "succeeded": 2, "partial": 0, "failed": 1}
    [failure] = data["failures"]
    assert failure["uri"].endswith("talk.mp3")
    assert failure["reason"].startswith("bad media: damaged audio: ")
    assert " at 0:1" in failure["reason"] and "s lost" in failure["reason"]
    assert not list(out.glob("talk.*"))
    assert "partial" not in json.loads((out / "mislabeled.json").read_text(encoding="utf-8"))

    kept = cli("transcribe", *args, "--keep-partial")
    assert kept.returncode == contract.EXIT_OK, kept.stderr
    data = summary_of(summary)
    assert {k: data["files"][k] for k in ("succeeded", "partial", "skipped", "failed")} == {
        "succeeded": 1, "partial": 1, "skipped": 2, "failed": 0}
    [partial] = data["partial_files"]
    damage = failure["reason"].removeprefix("bad media: ")
    assert partial["uri"].endswith("talk.mp3") and partial["reason"] == damage
    assert "1 partial" in kept.stdout and "talk.mp3" in kept.stdout
    transcript = json.loads((out / "talk.json").read_text(encoding="utf-8"))
    assert transcript["partial"] is True and transcript["damage"] == damage
    whole = len(dm.speech()) / dm.RATE
    assert 12 < transcript["duration"] < whole  # what decoded, the damaged part left out
    # The end of hello.wav, spoken after the damage: decoding went on past it.
    assert "transcription system" in transcript["text"].lower()
    assert (out / "talk.srt").is_file() and (out / "talk.txt").is_file()


@pytest.mark.parametrize("keep", [False, True])
def test_pod_commands_record_damaged_media_in_ledger_and_report(
    tmp_path: Path, inputs: Path, tiny_model_path: Path, keep: bool
) -> None:
    out = tmp_path / "out"
    order = contract.WorkOrder(job_uid="uid-damage", input_uri=str(inputs), shards=1,
                             output=contract.OutputOptions(uri=str(out), keep_partial=keep),
                             device="cpu")
    order.model.name = str(tiny_model_path)
    (tmp_path / "order.json").write_text(order.to_json())
    planned = cli("plan", "--work-order", str(tmp_path / "order.json"),
                  "--termination-log", str(tmp_path / "plan.log"))
    assert planned.returncode == 0, planned.stderr
    env = {**os.environ, contract.ENV_WORK_ORDER: order.to_json(),
           contract.ENV_COMPLETION_INDEX: "0", "POD_NAME": "tj-0-abcde"}
    pod = cli("run-shard", "--termination-log", str(tmp_path / "shard.log"), env=env)
    report = contract.ShardReport.from_json((tmp_path / "shard.log").read_text())
    records = {r.key: r for r in read_ledger(order.ledger_uri)}
    talk = records["talk.mp3"]
    assert talk.reason.removeprefix("bad media: ").startswith("damaged audio: ")
    assert not records["mislabeled.wav"].partial and records["mislabeled.wav"].status == SUCCEEDED
    if keep:
        assert pod.returncode == contract.EXIT_OK, pod.stderr
        assert (report.succeeded, report.partial, report.failed) == (3, 1, 0)
        assert [f.uri for f in report.partial_files] == [talk.uri]
        assert (talk.status, talk.partial, talk.code) == (SUCCEEDED, True, "")
        assert json.loads((out / "talk.json").read_text(encoding="utf-8"))["partial"] is True
    else:
        assert pod.returncode == contract.EXIT_BAD_INPUT, pod.stderr  # no retry can fix it
        assert (report.succeeded, report.partial, report.failed, report.bad_input) == (2, 0, 1,
                                                                                      1)
        assert (talk.status, talk.partial, talk.code) == (FAILED, False,
                                                          contract.Reason.BAD_MEDIA.value)
        assert not list(out.glob("talk.*"))
