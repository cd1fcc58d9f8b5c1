"""Decode packed short clips: they share encoder passes, never a decoder pass.

Whisper's cost for a short clip is the encoder over a padded 30 s window. Clips laid out in
one window (see packing) share that encoder pass; then every clip gets an encoder output of
its own — the encoding of an all-silence window, with the frames of that clip's span (plus
a small margin) copied in from its window's encoding — and is decoded alone. The decoder for
a clip can only attend to that clip's frames: the other clips' speech is physically absent,
so no word can move between files. Frames stay at their window positions (the encoder's
positional embedding is baked in), so decoded times are window times, shifted per clip;
each clip's prompt ends in the timestamp of its start, so its decoder begins there.

Decoding, segment splitting and word alignment are faster-whisper 1.2.1's own
(`BatchedInferencePipeline.forward`), on a thin proxy of the model whose `encode()` returns
the per-clip encoder outputs. On a multilingual model without a given language, each clip
comes alone in its window (packing.shares_windows): its language is detected from that
encoding, and it is decoded from it as faster-whisper's batched pipeline decodes a short
file; clips are decoded grouped by language.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions as FwOptions
from faster_whisper.transcribe import get_ctranslate2_storage

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Word
from whisperfleet_runner.decode import encoder, languages
from whisperfleet_runner.decode.clip_pipeline import (
    FRAME_SECONDS,
    EncodedModel,
    StartedPipeline,
    fw_options,
    storage,
)

log = logging.getLogger(__name__)

MARGIN_SECONDS = 0.2  # window frames kept either side of a clip (less than half a gap)
# Clip k's times come out of faster-whisper as (k + 1) * _SPACING + file time: far apart, so
# its "first word after a pause" rule sees every clip as following a pause (silence really
# precedes each clip in its encoder output) instead of the previous clip's last word.
_SPACING = 1000.0
MAX_WORDS_PER_SECOND = 6.0  # fast speech is ~4; more means the decoder is looping
# Slow speech is ~1.5 words a second over its span (VAD trims the clip's ends); a third of
# a word a second means the decoder stopped early ("You're" for 6 s of speech).
MIN_WORDS_PER_SECOND = 1 / 3
# The log-mel that isolates a clip: what digital silence is in a window of speech (Whisper
# floors a window's log-mel at its loudest value - 8, then scales (x + 4) / 4: about -1
# where speech peaks near 0). The batched pipeline's padding value, 0, read as something
# to Whisper base: clips that did not start their window decoded as "Thank you."
# (benchmarks/README.md, "Measurements behind design choices").
SILENCE_MEL = -1.0
_EPSILON = 1e-6  # faster-whisper truncates offset * 100 to an int: keep it from rounding down

# A clip in a window: (start in the window, seconds, on the FRAME_SECONDS grid; its samples).
Placed = tuple[float, np.ndarray]


@dataclass
class Decoded:
    """One packed clip's transcription: its language (given, or detected from its own
    encoder pass) and its segments, in time from the clip's start."""

    language: str
    language_probability: float
    segments: list[Segment]


class PackedDecoder:
    """Transcribes windows of placed clips with one `WhisperModel`; caches the silence
    encoding (one encoder pass per decoder, i.e. per engine)."""

    def __init__(self, whisper: WhisperModel) -> None:
        self.whisper = whisper
        self._silence: np.ndarray | None = None
        self._lock = threading.Lock()

    def decode(
        self, windows: Sequence[Sequence[Placed]], options: TranscriptionOptions, batch: int
    ) -> list[Decoded]:
        """Every clip (windows in order, clips in order within a window). `batch` windows
        are encoded at once, and four times as many clips decoded at once (a window holds
        several clips). A multilingual model without `options.language` detects each clip's
        language from the clip's own window, which must then hold it alone (among
        `language_candidates`, if any); clips are decoded grouped by language.

        A clip whose decode says too few words for its length, or more words than anyone
        speaks, is decoded again alone, from the start of a window of its own: its
        neighbours' context in the shared encoder pass can derail a model (seen with tiny.en:
        a cut clip decoded as ". . . ."; with base: "You're" for two sentences).
        """
        batch = max(1, batch)
        encodings, spans = self._encode_clips(windows, batch)
        found = self._languages(windows, encodings, options, batch)
        shared = [len(window) > 1 for window in windows for _ in window]
        out = self._generate(encodings, spans, [not s for s in shared],
                             [lang for lang, _ in found], options, batch)
        clips = [samples for window in windows for _, samples in window]
        rate = self.whisper.feature_extractor.sampling_rate
        redo = [i for i, segments in enumerate(out)  # alone, it would decode the same again
                if shared[i] and _implausible(segments, clips[i].shape[-1] / rate)]
        if redo:
            log.info("%d of %d packed clips decoded implausibly; decoding them alone",
                     len(redo), len(out))
            alone, alone_spans = self._encode_clips([[(0.0, clips[i])] for i in redo], batch)
            again = self._generate(alone, alone_spans, [True] * len(redo),
                                   [found[i][0] for i in redo], options, batch)
            for i, segments in zip(redo, again, strict=True):
                out[i] = segments
        return [Decoded(lang, probability, segments)
                for (lang, probability), segments in zip(found, out, strict=True)]

    def _encode_clips(self, windows: Sequence[Sequence[Placed]], batch: int
                      ) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
        """Each clip's encoder output ([frames, d], its neighbours' frames silenced) and
        its (start, end) in its window."""
        per_clip: list[np.ndarray] = []
        spans: list[tuple[float, float]] = []
        rate = self.whisper.feature_extractor.sampling_rate
        for first in range(0, len(windows), batch):
            group = windows[first: first + batch]
            encoded = self._encode(np.stack([self._mel(w) for w in group]))
            for window, window_encoding in zip(group, encoded, strict=True):
                for start, samples in window:
                    end = start + samples.shape[-1] / rate
                    # A clip alone in its window has no neighbour to hide: its window's
                    # encoding is what faster-whisper's batched mode decodes, and the
                    # silence encoding (one more encoder pass) is not needed.
                    per_clip.append(window_encoding if len(window) == 1
                                    else self._isolate(window_encoding, start, end))
                    spans.append((start, end))
        return per_clip, spans

    def _languages(self, windows: Sequence[Sequence[Placed]], encodings: list[np.ndarray],
                   options: TranscriptionOptions, batch: int) -> list[tuple[str, float]]:
        """Each clip's (language, probability): the one given, English on an English-only
        model, else Whisper's language detection on the encoding of the clip alone in its
        window (what faster-whisper's detection reads for a short file: one decoder step
        more). A clip's frames from a shared window do not serve: their attention to the
        neighbours' speech skews it (Whisper base took a German clip for Welsh)."""
        if options.language or not self.whisper.model.is_multilingual:
            return [(options.language or "en", 1.0)] * len(encodings)
        if any(len(window) > 1 for window in windows):
            raise ValueError("detecting the language of packed clips needs one clip per "
                             "window (packing.shares_windows)")
        found: list[tuple[str, float]] = []
        step = batch * 4
        for first in range(0, len(encodings), step):
            scores = self.whisper.model.detect_language(
                storage(np.stack(encodings[first: first + step])))
            for clip_scores in scores:
                every = [(token[2:-2], float(p)) for token, p in clip_scores]
                found.append(languages.pick((every[0][0], every[0][1], every),
                                            options.language_candidates))
        return found

    def _generate(self, encodings: list[np.ndarray], spans: list[tuple[float, float]],
                  alone: list[bool], clip_languages: list[str], options: TranscriptionOptions,
                  batch: int) -> list[list[Segment]]:
        """Each clip's segments in clip time, decoded in groups of one language (a group
        shares its prompt's language token and its word alignment's start sequence) and
        of clips alone in their window or not (`StartedPipeline`)."""
        out: list[list[Segment]] = [[] for _ in encodings]
        groups: dict[tuple[str, bool], list[int]] = {}
        for n, language in enumerate(clip_languages):
            groups.setdefault((language, alone[n]), []).append(n)
        step = batch * 4
        for (language, _), members in sorted(groups.items()):
            tokenizer = Tokenizer(self.whisper.hf_tokenizer, self.whisper.model.is_multilingual,
                                  task=options.task, language=language)
            settings = fw_options(options, tokenizer)
            for first in range(0, len(members), step):
                part = members[first: first + step]
                for n, segments in zip(part, self._forward(
                        [encodings[i] for i in part], [spans[i] for i in part],
                        alone[part[0]], tokenizer, settings, options.word_timestamps),
                        strict=True):
                    out[n] = segments
        return out

    def _forward(self, encodings: list[np.ndarray], spans: list[tuple[float, float]],
                 alone: bool, tokenizer: Tokenizer, settings: FwOptions, words: bool
                 ) -> list[list[Segment]]:
        """faster-whisper's batched `forward` on these encodings: of clips `alone` in their
        windows, or each clip's decoder started at its clip's start (`StartedPipeline`)."""
        metadata = [
            {"offset": (n + 1) * _SPACING - start + _EPSILON, "duration": end, "segments": []}
            for n, (start, end) in enumerate(spans)
        ]
        pipeline = StartedPipeline(self.whisper, None if alone else
                                    [start for start, _ in spans])
        pipeline.model = EncodedModel(self.whisper, storage(np.stack(encodings)))
        pipeline.last_speech_timestamp = 0.0
        results = pipeline.forward(np.zeros((len(metadata), 1), np.float32), tokenizer,
                                   metadata, settings)
        return [[_segment(s, (n + 1) * _SPACING, end - start, words)
                 for s in result if s["text"].strip()]
                for n, (result, (start, end)) in enumerate(zip(results, spans, strict=True))]

    def silence(self) -> np.ndarray:
        """The encoding of an all-silence window ([frames, d]); computed once."""
        with self._lock:
            if self._silence is None:
                mel = np.full((1, *self._mel_shape()), SILENCE_MEL, np.float32)
                self._silence = self._encode(mel)[0]
            return self._silence

    def _mel_shape(self) -> tuple[int, int]:
        return self.whisper.model.n_mels, self.whisper.feature_extractor.nb_max_frames

    def _mel(self, window: Sequence[Placed]) -> np.ndarray:
        """The window's log-mel: its clips at their offsets in 30 s of digital silence, as
        Whisper would see one recording (each clip's features alone, padded, decode worse:
        benchmarks/README.md, "Measurements behind design choices"); a clip alone, as the
        batched pipeline computes a short file's (so it decodes as it would alone)."""
        extractor = self.whisper.feature_extractor
        if len(window) == 1 and window[0][0] == 0.0:
            return pad_or_trim(extractor(window[0][1])[..., :-1])
        rate = extractor.sampling_rate
        audio = np.zeros(extractor.n_samples, np.float32)
        for start, samples in window:
            first = round(start * rate)
            piece = samples[: audio.shape[0] - first]
            audio[first: first + piece.shape[0]] = piece
        return extractor(audio)[..., : extractor.nb_max_frames]

    def _encode(self, mels: np.ndarray) -> np.ndarray:
        """Encoder outputs [windows, frames, d] as a NumPy array on the CPU."""
        # On CUDA the output is copied to the CPU to be edited; generate/align accept CPU
        # encoder outputs (faster-whisper itself does so with several GPUs, see encode()).
        if self.whisper.model.device == "cuda":
            view = self.whisper.model.encode(get_ctranslate2_storage(mels), to_cpu=True)
        else:
            view = encoder.encode(self.whisper, mels)
        return np.array(view, copy=True)

    def _isolate(self, window_encoding: np.ndarray, start: float, end: float) -> np.ndarray:
        """Silence everywhere except this clip's frames (and a margin) from its window."""
        encoding = self.silence().copy()
        frames = encoding.shape[0]
        first = max(0, int((start - MARGIN_SECONDS) / FRAME_SECONDS))
        last = min(frames, int(np.ceil((end + MARGIN_SECONDS) / FRAME_SECONDS)))
        encoding[first:last] = window_encoding[first:last]
        return encoding


def _implausible(segments: list[Segment], seconds: float) -> bool:
    """No word at all (VAD found speech, or the clip would not be here), fewer words than
    the clip's length allows for (a decoder that gave up after a word or two), or more
    words per second than speech has (a decoder stuck repeating itself)."""
    text = " ".join(s.text for s in segments)
    spoken = [w for w in text.split() if any(c.isalnum() for c in w)]
    return (not spoken or len(spoken) < MIN_WORDS_PER_SECOND * seconds
            or len(spoken) > MAX_WORDS_PER_SECOND * max(seconds, 1.0))


def _segment(raw: dict[str, Any], shift: float, duration: float, words: bool) -> Segment:
    """A faster-whisper segment dict in clip time (`time - shift`, within the clip)."""

    def at(value: float) -> float:
        return min(max(round(float(value) - shift, 3), 0.0), duration)

    return Segment(
        id=0,
        start=at(raw["start"]),
        end=at(raw["end"]),
        text=raw["text"],
        avg_logprob=float(raw["avg_logprob"]),
        no_speech_prob=float(raw["no_speech_prob"]),
        words=[Word(start=at(w["start"]), end=at(w["end"]), word=w["word"],
                    probability=float(w["probability"])) for w in raw.get("words", [])]
        if words else None,
    )
