"""The encoder on the CPU: window by window, the same outputs as one batched call, in a
fraction of its working memory (what keeps a long recording's peak memory low)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

from whisperfleet_runner.decode import encoder

WINDOWS = 8  # the default batch size

# Peak RSS is this process's own high-water mark (VmHWM), not ru_maxrss: a child started
# with vfork inherits its parent's peak in ru_maxrss, and a long pytest session's peak hides
# the call's growth entirely.
CHILD = """
import json, sys
import numpy as np
from faster_whisper import WhisperModel
from whisperfleet_runner.decode import encoder

model_path, how, windows = sys.argv[1], sys.argv[2], int(sys.argv[3])
whisper = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=1)
rng = np.random.default_rng(0)
one = whisper.feature_extractor(rng.standard_normal(16000 * 30).astype(np.float32) * 0.1)
features = np.stack([one[:, :3000]] * windows)
def peak_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

base = peak_kib()
out = whisper.encode(features) if how == "batched" else encoder.encode(whisper, features)
assert np.asarray(out).shape[0] == windows
print(json.dumps({"grew_kib": peak_kib() - base}))
"""


def _features(whisper: WhisperModel, windows: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([whisper.feature_extractor(
        rng.standard_normal(16000 * 30).astype(np.float32) * 0.1)[:, :3000]
        for _ in range(windows)])


def test_window_by_window_gives_the_batched_outputs(tiny_model_path: Path) -> None:
    whisper = WhisperModel(str(tiny_model_path), device="cpu", compute_type="int8")
    features = _features(whisper, 3)
    ours = np.asarray(encoder.encode(whisper, features))
    assert ours.shape[:2] == (3, 1500)
    np.testing.assert_array_equal(ours, np.asarray(whisper.encode(features)))


def _peak_growth(model: Path, how: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), how, str(WINDOWS)],
                         capture_output=True, text=True, check=True, timeout=300)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["grew_kib"])


def test_a_batch_of_windows_costs_a_fraction_of_the_batched_calls_memory(
        tiny_model_path: Path) -> None:
    batched = _peak_growth(tiny_model_path, "batched")
    ours = _peak_growth(tiny_model_path, "windows")
    # Measured: 485 MiB for one call of 8 windows against 20 MiB one at a time (once,
    # while a Go build ran beside it, 200 MiB for the call): the floor only shows that the
    # measurement sees the call's working memory at all.
    assert batched > 100 * 1024, f"the batched call grew the peak by only {batched} KiB"
    assert ours < batched / 4, f"window by window grew the peak by {ours} KiB, " \
                               f"the batched call by {batched} KiB"
