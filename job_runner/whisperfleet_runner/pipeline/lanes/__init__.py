"""The model stage's lanes: one per decoding mode, each with the same few methods.

- `ChunkLane` (chunked.py): files cut into chunks of at most 30 s of speech; chunks of
  several files fill each batch (faster-whisper's batched mode, across files).
- `WindowLane` (windowed.py): each file transcribed alone, window after window, in
  faster-whisper's sequential mode (batch size 1, or a model without chunk decoding).
- `PackedLane` (packed.py): short clips laid out in shared 30 s windows (see decode.packing).

`choose` decides once, when the run's model is loaded, which lanes the run uses: the main
lane that every file can take, and the packed lane for short clips when packing applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.decode import packing
from whisperfleet_runner.decode.protocols import ChunkDecoding, ClipPacking, Engine
from whisperfleet_runner.pipeline.lanes.base import CheckDevice, Lane, Publish
from whisperfleet_runner.pipeline.lanes.chunked import ChunkLane
from whisperfleet_runner.pipeline.lanes.packed import PackedLane
from whisperfleet_runner.pipeline.lanes.windowed import WindowLane

log = logging.getLogger(__name__)

@dataclass
class Lanes:
    """The lanes of one run: `main` takes every file; `packed`, when set, short clips."""

    main: Lane
    packed: Lane | None = None

    def for_clip(self) -> Lane:
        return self.packed or self.main

    def all(self) -> list[Lane]:
        return [lane for lane in (self.packed, self.main) if lane is not None]


def choose(options: TranscriptionOptions, engine: Engine, publish: Publish,
           check_device: CheckDevice) -> Lanes:
    """The lanes a run with these options uses on this engine, decided once."""
    main: Lane
    if options.batch_size > 1 and isinstance(engine, ChunkDecoding):
        main = ChunkLane(engine, options, publish, check_device)
    else:
        if options.batch_size > 1:
            log.warning("model %s does not decode batches of chunks: each file is "
                        "transcribed alone (sequential mode)", engine.options.name)
        main = WindowLane(engine, options, publish, check_device)
    packed = None
    if isinstance(engine, ClipPacking) and packing.can_pack(options):
        packed = PackedLane(engine, options, publish, check_device, fallback=main)
    return Lanes(main, packed)


__all__ = ["ChunkLane", "Lane", "Lanes", "PackedLane", "WindowLane", "choose"]
