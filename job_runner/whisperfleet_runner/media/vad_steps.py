"""Silero VAD in short steps, so its working memory stays small while the model decodes.

faster-whisper's `SileroVADModel` hands the ONNX model up to 10000 frames (320 s) per call,
carrying the recurrent state (h, c) from one call to the next. On one VAD window here (150 s
plus the 32 s heard first) that is one call whose tensors raised the peak by 75 MiB. A long
recording's VAD runs beside the model's batches for its whole length (a short file's is
done in the run's first seconds, ahead of the model), so that spike landed on the decode's
own peak in long recordings only, and the peak grew with length (benchmarks/README.md,
"Measurements behind design choices").

`in_steps` wraps the model's ONNX session so each call runs `STEP_FRAMES` frames at a time,
the state carried between steps as faster-whisper carries it between its calls: every
frame's probability is the same bit for bit (tests/runner/test_speech_chunks.py checks it
against faster-whisper's own model), with a fraction of the memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STEP_FRAMES = 512  # of 512 samples: 16 s of audio a call


class SessionInSteps:
    """An onnxruntime session of Silero VAD whose `run` takes its frames `step` at a time."""

    def __init__(self, session: Any, step: int = STEP_FRAMES) -> None:
        self.session, self.step = session, step

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        frames, h, c = feed["input"], feed["h"], feed["c"]
        outputs = []
        for first in range(0, frames.shape[0], self.step):
            output, h, c = self.session.run(
                names, {"input": frames[first: first + self.step], "h": h, "c": c})
            outputs.append(output)
        return [np.concatenate(outputs, axis=0), h, c]


def in_steps(model: Any, step: int = STEP_FRAMES) -> Any:
    """`model` (faster-whisper's SileroVADModel) with its session run in steps; once."""
    if not isinstance(model.session, SessionInSteps):
        model.session = SessionInSteps(model.session, step)
    return model
