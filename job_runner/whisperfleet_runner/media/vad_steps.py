"""Silero VAD as faster-whisper's batched mode runs it, in short steps and without copies of
the audio, so its working memory stays small while the model decodes.

faster-whisper's `get_speech_timestamps` pads the audio (a copy), frames it with each
frame's 64 samples of context (a second copy, 1.125x the audio) and hands the ONNX model up
to 10000 frames (320 s) per call. On one VAD window here (150 s plus the 32 s heard first)
those copies and the call's tensors added 25-75 MiB to the producer's working memory. A long
recording's VAD runs beside the model's batches for its whole length (a short file's is done
in the run's first seconds, ahead of the model), so that memory landed on the decode's own
peak in long recordings only, and the peak grew with length (benchmarks/README.md,
"Measurements behind design choices").

`probabilities` builds `STEP_FRAMES` frames at a time straight from the audio, carrying the
recurrent state (h, c) between steps as faster-whisper carries it between its calls: every
frame's probability is the same bit for bit. `spans` is faster-whisper 1.2's own rule from
probabilities to speech spans, unchanged (tests/runner/test_speech_chunks.py checks both
against faster-whisper's `get_speech_timestamps`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

STEP_FRAMES = 512  # of 512 samples: 16 s of audio a call
FRAME = 512  # Silero's frame at 16 kHz (faster-whisper's window_size_samples)
CONTEXT = 64  # samples of the frame before that Silero hears with each frame
_STATE = (1, 1, 128)


def probabilities(session: Any, audio: np.ndarray, step: int = STEP_FRAMES) -> np.ndarray:
    """Silero's speech probability of each frame of `audio` as faster-whisper computes it
    (`SileroVADModel(np.pad(audio, ...))`): padded with zeros to a whole frame beyond the
    audio (a whole frame of zeros when it is already whole), each frame heard after the 64
    samples before it (zeros before the first), and, as faster-whisper does in place, the
    last frame's own last 64 samples zeroed."""
    frames = audio.shape[0] // FRAME + 1
    out = np.empty(frames, np.float32)
    h, c = np.zeros(_STATE, np.float32), np.zeros(_STATE, np.float32)
    for first in range(0, frames, step):
        count = min(step, frames - first)
        # This step's samples with the context before them: [first*FRAME - CONTEXT, end).
        begin, end = first * FRAME - CONTEXT, (first + count) * FRAME
        piece = np.zeros(end - begin, np.float32)
        have = audio[max(begin, 0): min(end, audio.shape[0])]
        piece[max(begin, 0) - begin: max(begin, 0) - begin + have.shape[0]] = have
        if first + count == frames:
            piece[-CONTEXT:] = 0.0  # faster-whisper's `context[-1] = 0` writes into the audio
        batch = np.lib.stride_tricks.as_strided(
            piece, shape=(count, FRAME + CONTEXT), strides=(FRAME * 4, 4), writeable=False)
        output, h, c = session.run(None, {"input": np.ascontiguousarray(batch), "h": h,
                                          "c": c})
        out[first: first + count] = output
    return out


def spans(probs: np.ndarray, samples: int, options: Any, rate: int = 16000
          ) -> list[tuple[int, int]]:
    """Speech spans [start, end) in `samples` samples of audio whose frames have `probs`,
    by faster-whisper 1.2's `get_speech_timestamps` rule (its code, from the probabilities on;
    `options` are its VadOptions)."""
    threshold = options.threshold
    neg_threshold = options.neg_threshold
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    min_speech_samples = rate * options.min_speech_duration_ms / 1000
    speech_pad_samples = rate * options.speech_pad_ms / 1000
    max_speech_samples = (rate * options.max_speech_duration_s - FRAME
                          - 2 * speech_pad_samples)
    min_silence_samples = rate * options.min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = rate * 98 / 1000
    triggered = False
    speeches: list[dict[str, float]] = []
    current: dict[str, float] = {}
    temp_end = prev_end = next_start = 0
    for i, prob in enumerate(probs):  # numpy scalars, compared as faster-whisper compares
        at = FRAME * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = at
        if prob >= threshold and not triggered:
            triggered = True
            current["start"] = at
            continue
        if triggered and at - current["start"] > max_speech_samples:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:  # silence since, and not speech again yet
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = at
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = at
            if at - temp_end > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if at - temp_end < min_silence_samples:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech_samples:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
    if current and samples - current["start"] > min_speech_samples:
        current["end"] = samples
        speeches.append(current)
    return _padded(speeches, samples, speech_pad_samples)


def _padded(speeches: list[dict[str, float]], samples: int, pad: float
            ) -> list[tuple[int, int]]:
    """faster-whisper's padding of each span, halved where spans are closer than twice it."""
    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * pad:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(samples, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(samples, speech["end"] + pad))
    return [(int(s["start"]), int(s["end"])) for s in speeches]
