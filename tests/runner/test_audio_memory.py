"""An hour of audio decoded through `storage.open_input` + `audio.open_stream` in a memory
budget that does not grow with the file: its samples alone would take 230 MB.

Peak RSS is measured in a child process that does nothing else, after a first block of
the same file has loaded the codecs, as the child's own high-water mark (VmHWM: its
ru_maxrss would start at the pytest process's peak, which a child started with vfork
inherits); the same measurement of a whole-file decode shows that it would see the
samples if they were kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from whisperfleet_runner.media.audio import SAMPLE_RATE

pytestmark = pytest.mark.slow  # an hour of audio, encoded and decoded twice

HOUR = 3600
DECODED = HOUR * SAMPLE_RATE * 4  # bytes of float32 samples
MB = 1 << 20

CHILD = """
import json, sys
from whisperfleet_runner import storage
from whisperfleet_runner.media import audio

path, how = sys.argv[1], sys.argv[2]

def peak():
    with open("/proc/self/status") as fh:
        return 1024 * next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

with storage.open_input(path) as fh, audio.open_stream(fh, path) as stream:
    next(stream)
base = peak()
if how == "stream":
    samples = 0
    with storage.open_input(path) as fh, audio.open_stream(fh, path) as stream:
        for block in stream:
            samples += len(block)
else:
    samples = len(audio.decode_media(storage.read_bytes(path), path).samples)
print(json.dumps({"samples": samples, "growth": peak() - base}))
"""


def write_long_flac(path: Path, seconds: int) -> None:
    """`seconds` of a wandering tone with noise as 16 kHz mono FLAC, ten seconds at a time."""
    rng = np.random.default_rng(11)
    step = 10 * SAMPLE_RATE
    t = np.arange(step) / SAMPLE_RATE
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        for i in range(seconds // 10):
            x = 0.2 * np.sin(2 * np.pi * (300 + i % 500) * t) + 0.02 * rng.standard_normal(step)
            frame = av.AudioFrame.from_ndarray((x * 32767).astype(np.int16).reshape(1, -1),
                                               format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def measure(path: Path, how: str) -> dict[str, int]:
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), how],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_an_hour_streams_in_memory_that_does_not_grow_with_it(tmp_path: Path) -> None:
    path = tmp_path / "hour.flac"
    write_long_flac(path, HOUR)
    streamed = measure(path, "stream")
    assert streamed["samples"] == HOUR * SAMPLE_RATE
    assert streamed["growth"] < 40 * MB, streamed  # less than the file, let alone its samples
    whole = measure(path, "whole")
    assert whole["samples"] == HOUR * SAMPLE_RATE
    assert whole["growth"] > DECODED, whole  # the probe sees samples that are kept
