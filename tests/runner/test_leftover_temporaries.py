"""The hidden temporary files a killed run leaves in a local output are removed by the next run
of that output: ours only (by name), and only once no live run can be writing them (by age).

A SIGKILL lands mid-publish too rarely to be aimed at (a set takes ~3 ms), so what it leaves
is laid out here as `publish` names it (`storage.temporaries.temporary_path`), then aged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.contract import OutputOptions, WorkOrder
from whisperfleet_runner.pod.planner import plan
from whisperfleet_runner.storage.temporaries import STALE_SECONDS, temporary_path

HALF = b'{\n  "source": "in/hello.wav",\n  "lang'  # a transcript cut by the kill


def leave(path: Path, seconds_ago: float) -> Path:
    """A temporary file of `path` as `publish` writes it, last written `seconds_ago`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    left = Path(temporary_path(str(path)))
    left.write_bytes(HALF)
    then = time.time() - seconds_ago
    os.utime(left, (then, then))
    return left


def others(out: Path, seconds_ago: float) -> list[Path]:
    """Old files a user may keep in an output folder, that are not ours."""
    names = [".notes.tmp-backup", ".hello.wav.tmp-0123456789ab",  # not an output format
             "hello.json.tmp-0123456789ab",  # not hidden
             ".hello.json.tmp-0123456789abcdef"]  # not our 12 hex digits
    then = time.time() - seconds_ago
    found = []
    for name in names:
        (out / name).write_bytes(b"mine")
        os.utime(out / name, (then, then))
        found.append(out / name)
    target = out / "keep.txt"
    target.write_bytes(b"mine")
    link = out / ".link.json.tmp-0123456789ab"  # named like ours, but a link
    link.symlink_to(target)
    os.utime(link, (then, then), follow_symlinks=False)
    return [*found, target, link]


@pytest.mark.slow
def test_a_run_removes_what_a_killed_run_left_and_nothing_else(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    (inputs / "nested").mkdir(parents=True)
    shutil.copy(audio_dir / "hello.wav", inputs / "hello.wav")
    shutil.copy(audio_dir / "nested" / "numbers.wav", inputs / "nested" / "numbers.wav")
    stale = STALE_SECONDS + 60
    left = [leave(out / "hello.json", stale), leave(out / "nested" / "numbers.srt", stale)]
    live = leave(out / "hello.txt", 1)  # a run writing there right now: not ours to remove
    kept = others(out, stale)
    result = subprocess.run(
        [str(WHISPERFLEET), "transcribe", str(inputs), "-o", str(out), "--model",
         str(tiny_model_path), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == contract.EXIT_OK, result.stderr
    assert [p.name for p in left if p.exists()] == []
    assert live.read_bytes() == HALF
    assert all(p.is_symlink() or p.read_bytes() == b"mine" for p in kept)
    assert (out / ".link.json.tmp-0123456789ab").is_symlink()
    assert "hello world" in (out / "hello.txt").read_text().lower()  # the run's own outputs
    assert "removed 1 temporary file(s)" in result.stderr  # once in each folder


def test_a_jobs_planner_removes_them_from_its_output_folder(tmp_path: Path,
                                                             audio_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(audio_dir / "hello.wav", tmp_path / "in" / "hello.wav")
    out = tmp_path / "out"
    left = leave(out / "hello.vtt", STALE_SECONDS + 60)
    young = leave(out / "hello.json", STALE_SECONDS - 60)
    order = WorkOrder(job_uid="leftovers", input_uri=str(tmp_path / "in"),
                      output=OutputOptions(uri=str(out)), shards=1)
    assert plan(order).files == 1
    assert not left.exists() and young.exists()
