"""What the pipeline asks of a model: the `Engine` protocol, and the two capabilities a
decoding mode may need on top of it.

`WhisperEngine` (engine.py) has all three. A model offering only `Engine` still transcribes
every file, file by file in faster-whisper's sequential mode: the pipeline decides once, from
the options and these protocols, which lanes a run uses (pipeline.lanes.choose).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from whisperfleet_runner.contract import ModelOptions, TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Transcript

if TYPE_CHECKING:
    from whisperfleet_runner.decode.chunk_decode import ChunkDecoder, Item
    from whisperfleet_runner.decode.packed_decode import Decoded


@runtime_checkable
class Engine(Protocol):
    """A model on one device that transcribes 16 kHz mono float32 audio, file by file."""

    options: ModelOptions
    compute_type: str  # as the model runs it (CTranslate2 may substitute one)
    device_label: str  # "cpu", "cuda:0"
    batch_size: int  # what the last call ran with (for metrics)
    oom_halvings: int  # out-of-memory halvings so far

    @property
    def multilingual(self) -> bool:
        """Whether the model detects languages (an English-only `.en` model does not)."""
        ...

    def unsupported(self, options: TranscriptionOptions) -> str | None:
        """Why this model cannot honour `options` at all, or None."""
        ...

    def transcribe(self, audio: np.ndarray, source: str,
                   options: TranscriptionOptions) -> Transcript:
        """`audio` transcribed alone, in faster-whisper's sequential mode; `source` names
        the file in the result and in logs."""
        ...


@runtime_checkable
class ChunkDecoding(Engine, Protocol):
    """An engine that decodes batches of chunks, which may come from several files."""

    def chunk_decoder(self) -> ChunkDecoder:
        """Features and language detection for chunks (chunk_decode.ChunkDecoder)."""
        ...

    def decode_chunks(self, items: Sequence[Item], options: TranscriptionOptions,
                      source: str) -> list[list[Segment]]:
        """Each item's segments, `options.batch_size` items per model call."""
        ...


@runtime_checkable
class ClipPacking(Engine, Protocol):
    """An engine that transcribes short clips laid out in shared 30 s windows."""

    def transcribe_windows(self, windows: Sequence[Sequence[tuple[float, np.ndarray]]],
                           options: TranscriptionOptions, source: str) -> list[Decoded]:
        """Every clip's language and segments, windows in order, then clips (see
        packing)."""
        ...

    def warm_packing(self) -> None:
        """Get packing's fixed work done ahead of the first packed call."""
        ...
