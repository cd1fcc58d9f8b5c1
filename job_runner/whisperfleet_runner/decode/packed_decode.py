"""Decode packed short clips: they share encoder passes, never a decoder pass.

Whisper's cost for a short clip is the encoder over a padded 30 s window. Clips laid out in
one window (see packing) share that encoder pass; then every clip gets an encoder output of
its own — the encoding of an all-silence window, with the frames of that clip's span (plus
a small margin) copied in from its window's encoding — and is decoded alone. The decoder for
a clip can only attend to that clip's frames: the other clips' speech is physically absent,
so no word can move between files. Frames stay at their window positions (the encoder's
positional embedding is baked in), so decoded times are window times, shifted per clip.

Decoding, segment splitting and word alignment are faster-whisper 1.2.1's own
(`BatchedInferencePipeline.forward`), on a thin proxy of the model whose `encode()` returns
the per-clip encoder outputs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions as FwOptions
from faster_whisper.transcribe import get_ctranslate2_storage, get_suppressed_tokens

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Word
from whisperfleet_runner.decode import encoder

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.02  # one encoder frame (two mel frames): clip starts sit on this grid
MARGIN_SECONDS = 0.2  # window frames kept either side of a clip (less than half a gap)
# Clip k's times come out of faster-whisper as (k + 1) * _SPACING + file time: far apart, so
# its "first word after a pause" rule sees every clip as following a pause (silence really
# precedes each clip in its encoder output) instead of the previous clip's last word.
_SPACING = 1000.0
MAX_WORDS_PER_SECOND = 6.0  # fast speech is ~4; more means the decoder is looping
_EPSILON = 1e-6  # faster-whisper truncates offset * 100 to an int: keep it from rounding down

# A clip in a window: (start in the window, seconds, on the FRAME_SECONDS grid; its samples).
Placed = tuple[float, np.ndarray]


class PackedDecoder:
    """Transcribes windows of placed clips with one `WhisperModel`; caches the silence
    encoding (one encoder pass per decoder, i.e. per engine)."""

    def __init__(self, whisper: WhisperModel) -> None:
        self.whisper = whisper
        self._silence: np.ndarray | None = None
        self._lock = threading.Lock()

    def decode(
        self, windows: Sequence[Sequence[Placed]], options: TranscriptionOptions, batch: int
    ) -> list[list[Segment]]:
        """Segments of every clip (windows in order, clips in order within a window), in
        time relative to the clip's own start. `batch` windows are encoded at once, and
        four times as many clips decoded at once (a window holds several clips).

        A clip whose decode says no word, or more words than anyone speaks, is decoded
        again alone, from the start of a window of its own: its neighbours' context in the
        shared encoder pass can derail tiny models (seen: a cut clip decoded as ". . . .").
        """
        out = self._decode(windows, options, batch)
        clips = [samples for window in windows for _, samples in window]
        rate = self.whisper.feature_extractor.sampling_rate
        redo = [i for i, segments in enumerate(out)
                if _implausible(segments, clips[i].shape[-1] / rate)]
        if redo:
            log.info("%d of %d packed clips decoded implausibly; decoding them alone",
                     len(redo), len(out))
            again = self._decode([[(0.0, clips[i])] for i in redo], options, batch)
            for i, segments in zip(redo, again, strict=True):
                out[i] = segments
        return out

    def _decode(
        self, windows: Sequence[Sequence[Placed]], options: TranscriptionOptions, batch: int
    ) -> list[list[Segment]]:
        batch = max(1, batch)
        per_clip: list[np.ndarray] = []
        spans: list[tuple[float, float]] = []  # each clip's (start, end) in its window
        for first in range(0, len(windows), batch):
            group = windows[first: first + batch]
            encoded = self._encode(np.stack([self._mel(w) for w in group]))
            for window, window_encoding in zip(group, encoded, strict=True):
                for start, samples in window:
                    end = start + samples.shape[-1] / self.whisper.feature_extractor.sampling_rate
                    # A clip alone in its window has no neighbour to hide: its window's
                    # encoding is what faster-whisper's batched mode decodes, and the
                    # silence encoding (one more encoder pass) is not needed.
                    per_clip.append(window_encoding if len(window) == 1
                                    else self._isolate(window_encoding, start, end))
                    spans.append((start, end))
        pipeline = BatchedInferencePipeline(self.whisper)
        tokenizer = Tokenizer(self.whisper.hf_tokenizer, self.whisper.model.is_multilingual,
                              task=options.task, language=_language(self.whisper, options))
        fw_options = _fw_options(options, tokenizer)
        out: list[list[Segment]] = []
        step = batch * 4
        for first in range(0, len(per_clip), step):
            encodings = np.stack(per_clip[first: first + step])
            metadata = [
                {"offset": (first + n + 1) * _SPACING - start + _EPSILON,
                 # Without timestamp tokens a segment ends at offset + duration: the clip's end.
                 "duration": end, "segments": []}
                for n, (start, end) in enumerate(spans[first: first + step])
            ]
            pipeline.model = _EncodedModel(self.whisper, _storage(encodings))
            pipeline.last_speech_timestamp = 0.0
            results = pipeline.forward(np.zeros((len(metadata), 1), np.float32), tokenizer,
                                       metadata, fw_options)
            for n, (result, (start, end)) in enumerate(
                    zip(results, spans[first: first + step], strict=True)):
                shift = (first + n + 1) * _SPACING
                out.append([_segment(s, shift, end - start, options.word_timestamps)
                            for s in result if s["text"].strip()])
        return out

    def silence(self) -> np.ndarray:
        """The encoding of an all-silence window ([frames, d]); computed once."""
        with self._lock:
            if self._silence is None:
                # 0 is the batched pipeline's padding value (the floor of digital silence
                # decodes worse: benchmarks/README.md, "Measurements behind design choices").
                mel = np.zeros((1, *self._mel_shape()), np.float32)
                self._silence = self._encode(mel)[0]
            return self._silence

    def _mel_shape(self) -> tuple[int, int]:
        return self.whisper.model.n_mels, self.whisper.feature_extractor.nb_max_frames

    def _mel(self, window: Sequence[Placed]) -> np.ndarray:
        """The window's log-mel: its clips at their offsets in 30 s of digital silence, as
        Whisper would see one recording (each clip's features alone, padded, decode worse:
        benchmarks/README.md, "Measurements behind design choices")."""
        extractor = self.whisper.feature_extractor
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


class _EncodedModel:
    """The WhisperModel, except that `encode()` returns the given per-clip encoder outputs."""

    def __init__(self, whisper: WhisperModel, encoded: ctranslate2.StorageView) -> None:
        self._whisper, self._encoded = whisper, encoded

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        return self._encoded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._whisper, name)


def _implausible(segments: list[Segment], seconds: float) -> bool:
    """No word at all (VAD found speech, or the clip would not be here), or more words per
    second than speech has (a decoder stuck repeating itself)."""
    text = " ".join(s.text for s in segments)
    spoken = [w for w in text.split() if any(c.isalnum() for c in w)]
    return not spoken or len(spoken) > MAX_WORDS_PER_SECOND * max(seconds, 1.0)


def _storage(array: np.ndarray) -> ctranslate2.StorageView:
    # A CPU StorageView serves every device (see PackedDecoder._encode).
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


def _language(whisper: WhisperModel, options: TranscriptionOptions) -> str:
    # Packing runs only on English-only models (packing.can_pack); the language given, if
    # any, otherwise.
    return options.language if whisper.model.is_multilingual else "en"


def _fw_options(options: TranscriptionOptions, tokenizer: Tokenizer) -> FwOptions:
    """BatchedInferencePipeline.transcribe's options, with its defaults, for our settings."""
    return FwOptions(
        beam_size=options.beam_size, best_of=5, patience=1, length_penalty=1,
        repetition_penalty=1, no_repeat_ngram_size=0, log_prob_threshold=-1.0,
        no_speech_threshold=0.6, compression_ratio_threshold=2.4, temperatures=[0.0],
        initial_prompt=options.initial_prompt or None, prefix=None, suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
        max_new_tokens=None, hotwords=options.hotwords, word_timestamps=options.word_timestamps,
        hallucination_silence_threshold=None, condition_on_previous_text=False,
        clip_timestamps=[], prompt_reset_on_temperature=0.5, multilingual=False,
        without_timestamps=True, max_initial_timestamp=0.0,
    )


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
