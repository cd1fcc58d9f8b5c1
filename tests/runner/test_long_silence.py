"""A 3-hour recording with two hours of silence in the middle (a meeting with a long break)
transcribes whole: windows in which VAD finds no speech at all are passed over, and the speech
on either side keeps its place in the file.

Real parts: a FLAC file written here with PyAV, the CLI as installed, real Silero VAD and the
bundled tiny.en on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.paths import REPO, WHISPERFLEET

pytestmark = pytest.mark.slow
RATE = 16000
SENTENCES = {  # example audio: a word it says for sure
    "weather": "weather",
    "meeting": "report",
    "directions": "station",
}
# Where each sentence is said (seconds): some in the first half hour, none in the two hours
# of silence after it, some in the last half hour.
PLACES = [(12.0, "weather"), (700.0, "meeting"), (1790.0, "directions"),
          (9060.0, "weather"), (9900.0, "meeting"), (10700.0, "directions")]
HOURS = 3


def speech(name: str) -> np.ndarray:
    with wave.open(str(REPO / "examples" / "audio" / f"{name}.wav")) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def write_flac(path: Path) -> None:
    """The recording, written ten seconds at a time (it is never whole in memory)."""
    said = {name: speech(name) for name in SENTENCES}
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        block = 10 * RATE
        for first in range(0, HOURS * 3600 * RATE, block):
            samples = np.zeros(block, np.int16)
            for at, name in PLACES:
                start = int(at * RATE) - first
                clip = said[name]
                if -clip.shape[0] < start < block:
                    part = clip[max(0, -start): block - start]
                    samples[max(0, start): max(0, start) + part.shape[0]] = part
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("batch_size", ["8", "1"], ids=["batched", "sequential"])
def test_three_hours_with_two_hours_of_silence_transcribe_whole(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, batch_size: str,
) -> None:
    folder = tmp_path_factory.getbasetemp() / "long-silence"
    recording = folder / "break.flac"
    if not recording.exists():
        folder.mkdir(exist_ok=True)
        write_flac(recording)
    out = tmp_path_factory.mktemp("out")
    result = subprocess.run(
        [str(WHISPERFLEET), "transcribe", str(recording), "-o", str(out), "--quiet",
         "--model", str(tiny_model_path), "--device", "cpu", "--batch-size", batch_size,
         "--formats", "json"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    transcript = json.loads((out / "break.json").read_text(encoding="utf-8"))
    assert transcript["duration"] == pytest.approx(HOURS * 3600, abs=1)
    segments = transcript["segments"]
    # Every sentence is there, in order. (Chunks join speech from across the file as
    # faster-whisper's batched mode joins it, so one segment may hold several sentences.)
    said = " ".join(s["text"].lower() for s in segments)
    cursor = 0
    for _, name in PLACES:
        cursor = said.find(SENTENCES[name], cursor) + 1
        assert cursor, (name, said)
    # Times stay in the file: segments begin and end where a sentence does, none in the
    # two hours of silence.
    edges = [(at, at + speech(name).shape[0] / RATE) for at, name in PLACES]
    for segment in segments:
        assert any(a - 2 <= segment["start"] <= b for a, b in edges), segment
        assert any(a <= segment["end"] <= b + 2 for a, b in edges), segment
    assert not [s for s in segments if 1800 < s["start"] < 9000], "text in the silence"
