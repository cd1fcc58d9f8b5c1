"""The faster-whisper engine: one model per process and device, with every capability the
pipeline uses (protocols: sequential transcription, chunk decoding, clip packing).

`get_engine` caches engines by their arguments, so the shard runner and the CLI workers load
the model once per process however many files they transcribe. On CUDA out-of-memory the
engine halves the batch size and retries the call (down to 1), and keeps the lower size for
the rest of the process: the memory a batch needs does not depend on the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import faster_whisper.transcribe
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.transcribe import TranscriptionInfo

from whisperfleet_runner.contract import ModelOptions, TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Transcript, Word
from whisperfleet_runner.decode import languages, models
from whisperfleet_runner.decode.chunk_decode import ChunkDecoder, Item
from whisperfleet_runner.decode.packed_decode import Decoded, PackedDecoder
from whisperfleet_runner.gpu import cpus, devices

log = logging.getLogger(__name__)
R = TypeVar("R")

# GPU memory a batched call needs, as a rough model: the weights (model.bin's size is the
# float16 footprint, an upper bound for int8 types) plus the CUDA context, plus per batch item
# (a 30 s window's encoder activations and the beams' decoder cache) about an eighth of the
# weights. faster-whisper's published large-v2 batch-16 run (~3 GB weights, ~8 GB in use)
# fits this. It only sets the starting batch: out-of-memory halving stays the safety net.
CUDA_CONTEXT_MIB = 512
MIN_ITEM_MIB = 128
# How CTranslate2 (CUDA / cuBLAS) words an allocation failure.
_OOM_MARKERS = ("out of memory", "alloc_failed")


class EngineError(RuntimeError):
    """Transcription failed for a reason other than the input media."""


class OutOfMemoryError(EngineError):
    """CUDA ran out of memory even at batch size 1."""


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in _OOM_MARKERS)


def batch_size_for_memory(requested: int, free_mib: int, weights_mib: int) -> int:
    """The largest batch, at most `requested`, whose activations fit in `free_mib` of GPU
    memory beside the weights (see CUDA_CONTEXT_MIB); at least 1."""
    item_mib = max(MIN_ITEM_MIB, weights_mib // 8)
    room = free_mib - weights_mib - CUDA_CONTEXT_MIB
    return max(1, min(requested, room // item_mib))


def _concrete_compute_type(compute_type: str, device: str, device_index: int) -> str:
    """The one rule (`devices.resolve_compute_type`); placements resolve "auto" with NVML's
    compute capability beforehand. Without one, CTranslate2's own float16 support on the
    device stands for "compute capability >= 7.0"."""
    capability = None
    if compute_type == "auto" and device == "cuda":
        import ctranslate2

        float16 = "float16" in ctranslate2.get_supported_compute_types(device, device_index)
        capability = "7.0" if float16 else "0.0"
    return devices.resolve_compute_type(compute_type, device, capability)


class WhisperEngine:
    """A loaded Whisper model on one device that transcribes arrays. Several GPUs are
    several processes, each with its own Engine (see scheduler): one model replica per
    device, each fed by its own loop, so no GPU waits for another's Python thread."""

    def __init__(
        self,
        model: ModelOptions,
        device: str = "cpu",
        device_index: int = 0,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        free_memory_mib: int | None = None,
    ) -> None:
        # `free_memory_mib`: the GPU's free memory (NVML, before loading); it bounds the
        # batch size from the start instead of waiting for an out-of-memory.
        self.options = model
        self.device = device
        self.device_label = "cpu" if device == "cpu" else f"{device}:{device_index}"
        requested = _concrete_compute_type(compute_type, device, device_index)
        if cpu_threads <= 0:
            # CTranslate2's default (4, or OMP_NUM_THREADS) ignores cgroup quotas and affinity.
            cpu_threads = cpus.available_cpus()
        self.cpu_threads = cpu_threads
        self.model_path = models.resolve_model(model.name, model.cache_dir)
        started = time.monotonic()
        self.whisper = WhisperModel(
            self.model_path,
            device=device,
            device_index=device_index,
            compute_type=requested,
            cpu_threads=cpu_threads,
        )
        # CTranslate2 may substitute a type the device lacks (int8 -> int8_float32 on CPU).
        self.compute_type: str = self.whisper.model.compute_type
        self._batch_cap: int | None = None  # lowered after an out-of-memory
        self.batch_size = 0  # what the last call ran with (for metrics)
        self.oom_halvings = 0
        self._packed: PackedDecoder | None = None  # made on the first packed call
        self._packed_lock = threading.Lock()
        self._chunks: ChunkDecoder | None = None
        if device == "cuda" and free_memory_mib is not None:
            weights_mib = _weights_mib(self.model_path)
            self._batch_cap = batch_size_for_memory(1 << 16, free_memory_mib, weights_mib)
            log.info("%d MiB free on %s, %d MiB of weights: batch size at most %d",
                     free_memory_mib, self.device_label, weights_mib, self._batch_cap)
        log.info(
            "loaded model %s from %s on %s (%s) in %.1f s",
            model.name, self.model_path, self.device_label, self.compute_type,
            time.monotonic() - started,
        )

    @property
    def multilingual(self) -> bool:
        """Whether the model detects languages (an English-only `.en` model does not)."""
        return bool(self.whisper.model.is_multilingual)

    def unsupported(self, options: TranscriptionOptions) -> str | None:
        """Why this model cannot honour `options` at all (checked once, before any file),
        or None. An English-only model ignores a language (and candidates) and only warns,
        as Whisper does."""
        language, candidates = options.language, options.language_candidates
        if not self.multilingual:
            if (language and language != "en") or candidates:
                log.warning("model %s is English-only: language %s is ignored",
                            self.options.name, language or "candidates " + ",".join(candidates))
            return None
        # faster-whisper lists all 100 codes for any multilingual model; Whisper before
        # large-v3 has no token for yue, and asking for it would fail every file.
        tokens = self.whisper.hf_tokenizer
        known = [c for c in self.whisper.supported_languages
                 if tokens.token_to_id(f"<|{c}|>") is not None]
        if language and language not in known:
            return (f"language {language!r} is not one model {self.options.name} knows; use a "
                    f"code such as en, de, fr, ja (or none, to detect it per file)")
        unknown = [c for c in candidates if c not in known]
        if unknown and not language:
            return (f"language candidates {', '.join(unknown)} are not languages model "
                    f"{self.options.name} knows (it knows {len(known)}: "
                    f"{', '.join(known[:8])} ...)")
        return None

    @property
    def batch_cap(self) -> int | None:
        """The batch size ceiling set by an earlier out-of-memory, if any."""
        return self._batch_cap

    def transcribe(
        self, audio: np.ndarray, source: str, options: TranscriptionOptions
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 `audio` alone, in faster-whisper's sequential mode
        (each window conditioned on the text before it); `source` names the file in results
        and logs. A file's chunks batched: chunk_batcher.transcribe_file."""
        segments, info, probability = self._retrying_oom(
            source, 1, lambda _: self._sequential(audio, options))
        return Transcript(
            source=source,
            language=info.language,
            language_probability=probability,
            duration=float(info.duration),
            model=self.options.name,
            compute_type=self.compute_type,
            device=self.device_label,
            segments=segments,
        )

    def chunk_decoder(self) -> ChunkDecoder:
        if self._chunks is None:
            self._chunks = ChunkDecoder(self.whisper)
        return self._chunks

    def decode_chunks(self, items: Sequence[Item], options: TranscriptionOptions,
                      source: str) -> list[list[Segment]]:
        """Segments of each chunk (chunk_decode), `options.batch_size` chunks per model call;
        on CUDA out-of-memory the calls are made smaller and the whole list is redone."""
        decoder = self.chunk_decoder()
        before = [i.last_speech for i in items]

        def run(batch: int) -> list[list[Segment]]:
            for item, last in zip(items, before, strict=True):
                item.last_speech = last  # a retry starts from the same word history
            out: list[list[Segment]] = []
            for first in range(0, len(items), batch):
                out += decoder.decode(items[first: first + batch], options)
            return out

        return self._retrying_oom(source, max(1, options.batch_size), run)

    def transcribe_windows(
        self, windows: Sequence[Sequence[tuple[float, np.ndarray]]],
        options: TranscriptionOptions, source: str,
    ) -> list[Decoded]:
        """Transcribe short clips laid out in windows: each window is `(start seconds, 16 kHz
        samples)` per clip, starts on packed_decode.FRAME_SECONDS, all within 30 s. Returns
        every clip's language and segments (windows in order, then clips), in time from the
        clip's start.

        Clips share encoder passes, never a decoder pass: no word can reach another clip (see
        packed_decode). `source` names the work in out-of-memory messages.
        """
        decoder = self.packed_decoder()
        return self._retrying_oom(source, max(1, options.batch_size),
                                  lambda batch: decoder.decode(windows, options, batch))

    def packed_decoder(self) -> PackedDecoder:
        """The decoder of packed windows, made once (`warm_packing` may make it early)."""
        with self._packed_lock:
            if self._packed is None:
                self._packed = PackedDecoder(self.whisper)
            return self._packed

    def warm_packing(self) -> None:
        """Encode the all-silence window packing isolates clips with, ahead of the first
        packed call (one encoder pass: 0.25 s with tiny.en on 2 CPUs), e.g. while the run
        still reads its first files."""
        self.packed_decoder().silence()

    def _retrying_oom(self, source: str, requested: int, run: Callable[[int], R]) -> R:
        """`run(batch)`; on CUDA out-of-memory halve the batch and retry, down to 1."""
        batch = requested if self._batch_cap is None else min(requested, self._batch_cap)
        while True:
            try:
                self.batch_size = max(1, batch)
                return run(self.batch_size)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                if batch <= 1:
                    raise OutOfMemoryError(
                        f"{source}: CUDA out of memory on {self.device_label} even at batch size "
                        f"1 (model {self.options.name}, {self.compute_type}): use a smaller model, "
                        "a lighter compute type (int8_float16) or a GPU with more free memory"
                    ) from exc
                batch //= 2
                self._batch_cap = batch
                self.oom_halvings += 1
                log.warning(
                    "%s: CUDA out of memory on %s; retrying with batch size %d",
                    source, self.device_label, batch,
                )

    def _sequential(self, audio: np.ndarray, options: TranscriptionOptions
                    ) -> tuple[list[Segment], TranscriptionInfo, float]:
        """Segments, info and the language's probability in faster-whisper's sequential
        mode (with candidates: detected first, then given, as faster-whisper detects)."""
        language, probability = options.language or None, 1.0
        if language is None and options.language_candidates and self.multilingual:
            language, probability = languages.detect_sequential(
                self.whisper, audio, options.vad_filter, options.language_candidates)
        raw, info = self.whisper.transcribe(
            audio, language=language, task=options.task,
            beam_size=options.beam_size, vad_filter=options.vad_filter,
            word_timestamps=options.word_timestamps,
            initial_prompt=options.initial_prompt or None, hotwords=options.hotwords,
        )
        # Segments are generated lazily: errors (out-of-memory too) surface while iterating.
        segments = [_segment(s, options.word_timestamps) for s in raw]
        if language is None or not options.language_candidates:
            probability = float(info.language_probability)
        return segments, info, probability


def _weights_mib(model_path: str) -> int:
    try:
        return os.path.getsize(os.path.join(model_path, "model.bin")) // 2**20
    except OSError:
        return 0


def _segment(seg: faster_whisper.transcribe.Segment, words: bool) -> Segment:
    return Segment(
        id=int(seg.id),
        start=float(seg.start),
        end=float(seg.end),
        text=seg.text,
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
        words=[
            Word(start=float(w.start), end=float(w.end), word=w.word,
                 probability=float(w.probability))
            for w in (seg.words or [])
        ] if words else None,
    )


_engines: dict[tuple[Any, ...], WhisperEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    model: ModelOptions,
    device: str = "cpu",
    device_index: int = 0,
    compute_type: str = "int8",
    cpu_threads: int = 0,
    free_memory_mib: int | None = None,
) -> WhisperEngine:
    """The process-wide engine for these arguments; the model loads on the first call only."""
    key = (dataclasses.astuple(model), device, device_index, compute_type, cpu_threads,
           free_memory_mib)
    with _engines_lock:  # held while loading, so two threads never load the same model twice
        engine = _engines.get(key)
        if engine is None:
            engine = WhisperEngine(model, device, device_index, compute_type, cpu_threads,
                                   free_memory_mib)
            _engines[key] = engine
        return engine


def load(model: ModelOptions, placement: devices.ModelPlacement) -> WhisperEngine:
    """The engine for `model` where `placement` (gpu.devices.place_model) puts it."""
    return get_engine(model, placement.device, placement.device_index, placement.compute_type,
                      placement.cpu_threads, placement.free_memory_mib)
