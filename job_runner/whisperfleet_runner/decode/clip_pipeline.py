"""faster-whisper's batched pipeline over encoder outputs made elsewhere (packed_decode):
the model proxy that hands them to it, the pipeline with a prompt per clip, and the
pipeline's options for whisperfleet's settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions as FwOptions
from faster_whisper.transcribe import get_suppressed_tokens

from whisperfleet_runner.contract import TranscriptionOptions

FRAME_SECONDS = 0.02  # one encoder frame (two mel frames): clip starts sit on this grid


class StartedPipeline(BatchedInferencePipeline):
    """faster-whisper's batched pipeline, with each item's prompt ending in the timestamp
    of its clip's start: the decoder is told where the clip's speech begins, and decodes
    with timestamps from there (without that, Whisper base decoded a clip that did not
    start its window as "You're" for two sentences: benchmarks/README.md, "Measurements
    behind design choices"). Clips alone in their windows (`starts` None) are decoded as
    the batched pipeline decodes a short file: without timestamps."""

    def __init__(self, whisper: WhisperModel, starts: Sequence[float] | None) -> None:
        super().__init__(whisper)
        self.starts = starts

    def generate_segment_batched(
        self, features: np.ndarray, tokenizer: Tokenizer, options: FwOptions
    ) -> tuple[ctranslate2.StorageView, list[dict[str, Any]]]:
        # faster-whisper 1.2.1's generate_segment_batched, one prompt per item.
        previous = (tokenizer.encode(options.initial_prompt)
                    if options.initial_prompt is not None else [])
        prompt = self.model.get_prompt(tokenizer, previous_tokens=previous,
                                       without_timestamps=self.starts is None,
                                       hotwords=options.hotwords)
        encoder_output = self.model.encode(features)
        results = self.model.model.generate(
            encoder_output,
            [prompt] * features.shape[0] if self.starts is None else
            [[*prompt, tokenizer.timestamp_begin + round(start / FRAME_SECONDS)]
             for start in self.starts],
            beam_size=options.beam_size, patience=options.patience,
            length_penalty=options.length_penalty, max_length=self.model.max_length,
            suppress_blank=options.suppress_blank, suppress_tokens=options.suppress_tokens,
            return_scores=True, return_no_speech_prob=True,
            sampling_temperature=options.temperatures[0],
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        output = []
        for result in results:
            # With a start timestamp, the tokens begin with it, as a decoder's own would.
            length = len(result.sequences_ids[0])
            output.append({"avg_logprob": result.scores[0] * length / (length + 1),
                           "no_speech_prob": result.no_speech_prob,
                           "tokens": result.sequences_ids[0]})
        return encoder_output, output


class EncodedModel:
    """The WhisperModel, except that `encode()` returns the given per-clip encoder outputs."""

    def __init__(self, whisper: WhisperModel, encoded: ctranslate2.StorageView) -> None:
        self._whisper, self._encoded = whisper, encoded

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        return self._encoded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._whisper, name)


def storage(array: np.ndarray) -> ctranslate2.StorageView:
    # A CPU StorageView serves every device (see packed_decode.PackedDecoder._encode).
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


def fw_options(options: TranscriptionOptions, tokenizer: Tokenizer) -> FwOptions:
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
        without_timestamps=False, max_initial_timestamp=0.0,
    )
