"""Language detection restricted to the languages a user expects (`language_candidates`).

Whisper scores every language it knows for a file's first 30 s of speech; faster-whisper
takes the likeliest. A batch known to hold only, say, English and German is better served by
the likelier of those two: a German speaker with an accent taken for Dutch, or a short
noisy file taken for Welsh, would otherwise be transcribed (and worded) in that language.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from faster_whisper import WhisperModel


def pick(found: tuple[str, float, list[tuple[str, float]]],
         candidates: Sequence[str]) -> tuple[str, float]:
    """(language, probability) from faster-whisper's `detect_language` result: its own
    choice without candidates, else the likeliest candidate (Whisper's probability of it)."""
    language, probability, every = found
    if not candidates:
        return language, float(probability)
    allowed = set(candidates)
    best = max(((p, lang) for lang, p in every if lang in allowed), default=None)
    if best is None:  # the model scores none of them (unsupported() refuses that earlier)
        raise ValueError(f"model knows none of the language candidates {list(candidates)}")
    return best[1], float(best[0])


def detect_sequential(whisper: WhisperModel, audio: np.ndarray, vad_filter: bool,
                      candidates: Sequence[str]) -> tuple[str, float]:
    """The language of `audio` as faster-whisper's sequential mode detects it (the first
    30 s, of speech only with the VAD filter), restricted to `candidates`."""
    return pick(whisper.detect_language(audio=audio, vad_filter=vad_filter), candidates)
