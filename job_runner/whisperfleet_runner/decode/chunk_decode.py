"""Decode one batch of chunks that may come from several files.

faster-whisper's `BatchedInferencePipeline` fills a batch with the chunks of one file and
gives every item the same prompt. Here each item is a chunk (speech_chunks) with a prompt of
its own (its file's language, the task, the initial prompt and hotwords), so files of different
languages share a batch; every chunk still has its own 30 s window, so nothing of one file
can reach another's transcript. Everything else is faster-whisper 1.2.1's own, step for
step as `BatchedInferencePipeline.forward` does it: encode, `generate`, split at timestamps,
align words (`add_word_timestamps`, per file, so its "first word after a pause" rule sees
only that file's previous words), then map speech time back to file time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from faster_whisper.vad import SpeechTimestampsMap

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Word
from whisperfleet_runner.decode import encoder, languages
from whisperfleet_runner.media.audio import SAMPLE_RATE
from whisperfleet_runner.media.speech_chunks import Chunk

_PREPEND = "\"'“¿([{-"  # faster-whisper's defaults for word alignment
_APPEND = "\"'.。,，!！?？:：”)]}、"


@dataclass
class Item:
    """A chunk in a batch: its features and whose prompt it takes."""

    chunk: Chunk
    features: np.ndarray  # [n_mels, 3000]
    language: str
    owner: object  # the file: word alignment is per owner
    last_speech: float = 0.0  # the owner's last word end so far, in speech time


class ChunkDecoder:
    """Batches of chunks through one WhisperModel."""

    def __init__(self, whisper: WhisperModel) -> None:
        self.whisper = whisper
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}

    def features(self, chunk: Chunk) -> np.ndarray:
        """The chunk's log-mel without padding (as the pipeline computes it)."""
        return self.whisper.feature_extractor(chunk.samples)[..., :-1]

    def detect_language(self, features: Sequence[np.ndarray],
                        candidates: Sequence[str] = ()) -> tuple[str, float]:
        """The language of a file from its first chunks' features (the pipeline's rule:
        the first 30 s of speech), the likeliest of `candidates` when there are any."""
        joined = np.concatenate(
            [*features, np.full((self.whisper.model.n_mels, 1), -1.5, np.float32)], axis=1)
        return languages.pick(self.whisper.detect_language(
            features=joined, language_detection_segments=1, language_detection_threshold=0.5),
            candidates)

    def tokenizer(self, language: str, task: str) -> Tokenizer:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.whisper.hf_tokenizer,
                                              self.whisper.model.is_multilingual,
                                              task=task, language=language)
        return self._tokenizers[key]

    def decode(self, items: Sequence[Item], options: TranscriptionOptions
               ) -> list[list[Segment]]:
        """Each item's segments, in file time; items of one owner must come in order, and
        each item's `last_speech` is updated for the owner's next chunks."""
        whisper = self.whisper
        tokenizers = [self.tokenizer(i.language, options.task) for i in items]
        encoded = encoder.encode(whisper, np.stack([pad_or_trim(i.features) for i in items]))
        prompts = [self._prompt(t, options) for t in tokenizers]
        results = whisper.model.generate(
            encoded, prompts, beam_size=options.beam_size, patience=1, length_penalty=1,
            max_length=whisper.max_length, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizers[0], [-1]),
            return_scores=True, return_no_speech_prob=True, sampling_temperature=0.0,
            repetition_penalty=1, no_repeat_ngram_size=0,
        )
        raw = [self._split(item, tokenizer, result)
               for item, tokenizer, result in zip(items, tokenizers, results, strict=True)]
        if options.word_timestamps:
            self._align(items, tokenizers, raw, encoded)
        return [[_segment(s, item.chunk, options.word_timestamps) for s in segments]
                for item, segments in zip(items, raw, strict=True)]

    def _prompt(self, tokenizer: Tokenizer, options: TranscriptionOptions) -> list[int]:
        previous = tokenizer.encode(options.initial_prompt) if options.initial_prompt else []
        return self.whisper.get_prompt(tokenizer, previous_tokens=previous,
                                       without_timestamps=True, hotwords=options.hotwords)

    def _split(self, item: Item, tokenizer: Tokenizer,
               result: ctranslate2.models.WhisperGenerationResult) -> list[dict[str, Any]]:
        """The pipeline's `forward` for one item: text segments at speech-time offsets."""
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        duration = item.chunk.duration
        fps = self.whisper.frames_per_second
        subsegments, _, _ = self.whisper._split_segments_by_timestamps(
            tokenizer=tokenizer, tokens=tokens, time_offset=item.chunk.offset,
            segment_size=int(math.ceil(duration) * fps), segment_duration=duration, seek=0)
        return [
            {"text": tokenizer.decode(s["tokens"]), "avg_logprob": avg_logprob,
             "no_speech_prob": result.no_speech_prob, "tokens": s["tokens"],
             "start": s["start"], "end": s["end"],
             "compression_ratio": get_compression_ratio(tokenizer.decode(s["tokens"])),
             "seek": int(item.chunk.offset * fps)}
            for s in subsegments
        ]

    def _align(self, items: Sequence[Item], tokenizers: list[Tokenizer],
               raw: list[list[dict[str, Any]]], encoded: ctranslate2.StorageView) -> None:
        """Word timings: one alignment call per prompt start (CTranslate2 takes one start
        sequence per call; a batch of one language makes one call), then faster-whisper's
        post-processing per file, with that file's own last word."""
        whisper = self.whisper
        sizes = [int(math.ceil(i.chunk.duration) * whisper.frames_per_second) for i in items]
        alignments: list[list[dict[str, Any]] | None] = [None] * len(items)
        groups: dict[tuple[int, ...], list[int]] = {}
        for n, tokenizer in enumerate(tokenizers):
            groups.setdefault(tuple(tokenizer.sot_sequence), []).append(n)
        for members in groups.values():
            tokenizer = tokenizers[members[0]]
            text = [[t for s in raw[n] for t in s["tokens"] if t < tokenizer.eot]
                    for n in members]
            # A batch of one start sequence aligns against its own encoding; a mixed one
            # encodes each group again (CTranslate2 cannot slice an encoder output).
            encoding = encoded if len(members) == len(items) else encoder.encode(
                whisper, np.stack([pad_or_trim(items[n].features) for n in members]))
            found = whisper.find_alignment(tokenizer, text, encoding,
                                           [sizes[n] for n in members])
            for n, alignment in zip(members, found, strict=True):
                alignments[n] = alignment
        start = 0
        while start < len(items):  # runs of one owner, in order
            end = start + 1
            while end < len(items) and items[end].owner is items[start].owner:
                end += 1
            run = range(start, end)
            last = whisper.add_word_timestamps.__func__(  # type: ignore[attr-defined]
                _Aligned(whisper, [alignments[n] for n in run]),
                [raw[n] for n in run], tokenizers[start], None, [sizes[n] for n in run],
                _PREPEND, _APPEND, items[start].last_speech)
            for n in run:
                items[n].last_speech = last if last is not None else items[n].last_speech
            start = end


class _Aligned:
    """What `WhisperModel.add_word_timestamps` needs of its model, with the alignments
    already found for the batch (so one file's words are post-processed on their own)."""

    def __init__(self, whisper: WhisperModel, alignments: list[Any]) -> None:
        self.frames_per_second = whisper.frames_per_second
        self._alignments = alignments

    def find_alignment(self, *_: Any, **__: Any) -> list[Any]:
        return self._alignments


def _segment(raw: dict[str, Any], chunk: Chunk, words: bool) -> Segment:
    """A faster-whisper segment in file time (the pipeline's rounding, then
    restore_speech_timestamps with this chunk's spans)."""
    start, end = round(raw["start"], 3), round(raw["end"], 3)
    found = [Word(start=float(w["start"]), end=float(w["end"]), word=w["word"],
                  probability=float(w["probability"])) for w in raw.get("words") or []]
    if chunk.vad:
        spans = SpeechTimestampsMap([{"start": a, "end": b} for a, b in chunk.spans],
                                    SAMPLE_RATE)
        if found:
            for w in found:
                index = spans.get_chunk_index((w.start + w.end) / 2 - chunk.offset)
                w.start = spans.get_original_time(w.start - chunk.offset, index)
                w.end = spans.get_original_time(w.end - chunk.offset, index)
            start, end = found[0].start, found[-1].end
        else:
            start = spans.get_original_time(start - chunk.offset)
            end = spans.get_original_time(end - chunk.offset, is_end=True)
    return Segment(id=0, start=float(start), end=float(end), text=raw["text"],
                   avg_logprob=float(raw["avg_logprob"]),
                   no_speech_prob=float(raw["no_speech_prob"]),
                   words=found if words else None)
