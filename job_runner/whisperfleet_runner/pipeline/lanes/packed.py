"""The packed lane: short clips held until they fill the batch's shared 30 s windows, then
transcribed in one packed call (decode.packing); a failed call hands its clips to the main
lane one by one, so one clip cannot poison the others."""

from __future__ import annotations

import logging

import numpy as np

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.decode import packing
from whisperfleet_runner.decode.protocols import ClipPacking
from whisperfleet_runner.media.audio import duration
from whisperfleet_runner.pipeline.events import FileItem
from whisperfleet_runner.pipeline.lanes.base import Audio, CheckDevice, Lane, Publish

log = logging.getLogger(__name__)


class PackedLane:
    """Short clips packed into shared windows (see Lane for the methods); `fallback` takes
    the clips of a packed call that failed."""

    def __init__(self, engine: ClipPacking, options: TranscriptionOptions, publish: Publish,
                 check_device: CheckDevice, *, fallback: Lane) -> None:
        self.engine, self.options = engine, options
        self.publish, self.check_device, self.fallback = publish, check_device, fallback
        self.clips: list[tuple[FileItem, np.ndarray]] = []
        self.seconds = 0.0  # held, gaps included
        self.capacity = max(1, options.batch_size) * packing.WINDOW_CAPACITY

    def open(self, item: FileItem) -> None:
        pass

    def add(self, item: FileItem, audio: Audio) -> None:
        assert isinstance(audio, np.ndarray), "only whole short clips are packed"
        self.clips.append((item, audio))
        self.seconds += duration(audio) + packing.GAP_SECONDS
        if self.seconds >= self.capacity:
            self.flush()

    def close(self, item: FileItem) -> None:
        pass  # a clip's result comes with its packed call

    def flush(self) -> None:
        if not self.clips:
            return
        self.check_device()  # GpuLost stops the run; the clips are still held
        held, self.clips, self.seconds = self.clips, [], 0.0
        clips = [packing.Clip(item.file.uri, samples) for item, samples in held]
        try:
            transcripts = packing.transcribe_packed(self.engine, clips, self.options)
        except Exception:
            log.exception("packed transcription of %d files failed; transcribing them one "
                          "by one", len(held))
            for item, samples in held:
                self.fallback.open(item)
                self.fallback.add(item, samples)
                self.fallback.close(item)
            self.fallback.flush()
            return
        for (item, _), transcript in zip(held, transcripts, strict=True):
            self.publish(item, transcript)

    def drop(self, item: FileItem) -> None:
        self.clips = [(i, s) for i, s in self.clips if i is not item]
        self.seconds = sum(duration(s) + packing.GAP_SECONDS for _, s in self.clips)

    def release(self) -> list[FileItem]:
        held, self.clips, self.seconds = [i for i, _ in self.clips], [], 0.0
        return held
