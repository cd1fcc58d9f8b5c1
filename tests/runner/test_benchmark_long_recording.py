"""benchmarks/long_recording.py: sides alternate over rounds, and the script it scores against
is exactly what the recording says (speech missing at the end counts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import pytest

from benchmarks import long_recording
from tests.support.paths import REPO


def test_the_reference_is_the_script_of_exactly_the_audio_written(tmp_path: Path) -> None:
    talks = long_recording.talks(tmp_path)
    plan = long_recording.recording_plan([t.samples.shape[0] for t in talks], 140)
    assert plan == [0, 1, 2]  # 49 + 59 + 36 s: whole talks until 140 s are reached
    seconds = long_recording.write_mp3(tmp_path / "r.mp3", [talks[i].samples for i in plan])
    assert seconds == sum(talks[i].samples.shape[0] for i in plan) / long_recording.RATE
    with av.open(str(tmp_path / "r.mp3")) as container:
        decoded = sum(f.samples for f in container.decode(audio=0)) / long_recording.RATE
    assert decoded == pytest.approx(seconds, abs=0.1)  # mp3 padding only
    # A transcript that stops before the last talk is scored for what it left out (the
    # script used to be cut to the transcript's length, which made this 0).
    reference = " ".join(talks[i].text for i in plan)
    missing_last = " ".join(talks[i].text for i in plan[:-1])
    share = len(talks[plan[-1]].text.split()) / len(reference.split())
    assert long_recording.wer(reference, missing_last) == pytest.approx(share)
    assert long_recording.wer(reference, reference.upper()) == 0.0


@pytest.mark.slow
def test_a_short_run_alternates_whole_processes_and_bounds_its_figures(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "long_recording.py"), "--minutes", "1",
         "--equal-minutes", "1", "--rounds", "2", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # Round 1 starts with whisperfleet, round 2 with bare.
    assert re.search(r"^1 min round 1: whisperfleet [\d.]+ s, bare [\d.]+ s$", out, re.M), out
    assert re.search(r"^1 min round 2: bare [\d.]+ s, whisperfleet [\d.]+ s$", out, re.M), out
    assert "1 min (1.8 min written, 2 talks)" in out
    wers = dict(re.findall(r"(wer_\w+) = ([\d.]+)", out))
    assert float(wers["wer_between_sides"]) <= 0.02  # windows cut in pauses change nothing
    assert float(wers["wer_whisperfleet"]) <= 0.15 and float(wers["wer_bare"]) <= 0.15
    ratio = float(re.search(r"time ratio ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert 0.5 <= ratio <= 3.0, out  # the same work on one machine, however loaded


@pytest.mark.slow
def test_heap_figures_say_what_the_run_held_against_what_the_allocator_kept(
        tmp_path: Path) -> None:
    """`--heap` runs whisperfleet under heap_sampler.py: at the sampled peak, the heap's
    bytes in use and free add up to its size, and no sample exceeds the process's peak."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "long_recording.py"), "--minutes", "1",
         "--bare-up-to", "0", "--equal-minutes", "0", "--rounds", "1", "--heap",
         "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(
        r"^1 min whisperfleet heap: at the sampled peak RSS (\d+) MiB: heap (\d+) MiB "
        r"\((\d+) in use, (\d+) free\), (\d+) MiB mapped blocks; most in use at any time "
        r"(\d+) MiB$", result.stdout, re.M)
    assert found, result.stdout
    rss, heap, in_use, free, mapped, most = map(int, found.groups())
    assert abs(in_use + free - heap) <= 2  # rounding of each figure to whole MiB
    assert in_use + mapped <= most + 1
    # The model (tiny.en int8, ~40 MiB) and a batch's buffers were sampled at some point
    # (217 MiB measured on a 1-minute recording): the sampler saw the run, not only its end.
    assert most >= 100, result.stdout
    peak = float(re.search(r"peak RSS (\d+) MiB, ", result.stdout).group(1))  # type: ignore[union-attr]
    assert rss <= peak + 1  # a sample cannot exceed the process's own high-water mark
