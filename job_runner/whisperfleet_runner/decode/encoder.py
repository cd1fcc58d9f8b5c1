"""The encoder pass over a batch of 30 s windows.

On a GPU the whole batch goes through at once: that is what batching is for. On the CPU it
buys nothing and costs memory (benchmarks/README.md, "Measurements behind design choices"),
so there the windows are encoded one by one and their outputs stacked; the decoder still
runs the batch as one call (where batching does pay on the CPU).
"""

from __future__ import annotations

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel


def encode(whisper: WhisperModel, features: np.ndarray) -> ctranslate2.StorageView:
    """Encoder outputs [windows, frames, width] for log-mel `features` [windows, mels, 3000],
    as `WhisperModel.encode` returns them (on the model's device)."""
    if whisper.model.device != "cpu" or len(features) <= 1:
        return whisper.encode(features)
    outputs = [np.asarray(whisper.encode(window[None])) for window in features]
    # The view keeps a reference to the stacked array, so it stays valid as long as it does.
    return ctranslate2.StorageView.from_array(np.concatenate(outputs))
