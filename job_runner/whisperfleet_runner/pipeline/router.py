"""The model stage of a run: each file's events routed to its lane, on the model's thread.

The model loads on the first file that needs it (decode.lazy_engine: an all-skipped run loads
none); the lanes are then chosen once (lanes.choose). A short file goes to the packed lane
when the run packs clips, every other file to the main lane; results go to the outbox.
"""

from __future__ import annotations

from whisperfleet_runner.contract import JobOptions
from whisperfleet_runner.contract.transcript import Transcript
from whisperfleet_runner.decode.lazy_engine import LazyEngine
from whisperfleet_runner.pipeline import lanes
from whisperfleet_runner.pipeline.events import (
    Clip,
    Closed,
    Event,
    FileItem,
    Flush,
    Opened,
    Part,
    Settled,
)
from whisperfleet_runner.pipeline.failures import FileFailed, StoreHealth, fail
from whisperfleet_runner.pipeline.lanes.base import CheckDevice
from whisperfleet_runner.pipeline.outbox import Finish, Outbox


class Router:
    """Events in (`handle`), results out through the outbox. `check_device` runs before
    every model call (GpuLost stops the run)."""

    def __init__(self, options: JobOptions, engine: LazyEngine, outbox: Outbox,
                 store: StoreHealth, check_device: CheckDevice) -> None:
        self.options, self.engine, self.outbox = options, engine, outbox
        self.store, self.check_device = store, check_device
        self._lanes: lanes.Lanes | None = None  # chosen when the model is loaded

    def lanes(self) -> lanes.Lanes:
        if self._lanes is None:
            self._lanes = lanes.choose(self.options.transcription, self.engine.get(),
                                       self._publish, self.check_device)
        return self._lanes

    def handle(self, event: Event, finish: Finish) -> None:
        """One event; `finish` records a file that ends here without publishing."""
        if isinstance(event, Flush):
            self.flush()
        elif isinstance(event, Settled):
            self.outbox.close(event.item, finish)
        elif isinstance(event, Clip):
            lane = self.lanes().for_clip()
            lane.open(event.item)
            lane.add(event.item, event.samples)
            lane.close(event.item)
        elif isinstance(event, Opened):
            self.lanes().main.open(event.item)
        elif isinstance(event, Part):
            if not event.item.closed:  # else it failed already: its audio is not needed
                self.lanes().main.add(event.item, event.window)
        elif isinstance(event, Closed):
            self._closed(event, finish)

    def flush(self) -> None:
        """Transcribe what every lane holds."""
        for lane in self._lanes.all() if self._lanes is not None else []:
            lane.flush()

    def fail_held(self, failure: FileFailed, finish: Finish) -> None:
        """After a lost device or store: every file a lane holds ends failed."""
        held = [item for lane in (self._lanes.all() if self._lanes else [])
                for item in lane.release()]
        for item in dict.fromkeys(held):
            if not item.closed:
                fail(item.record, failure)
                self.outbox.close(item, finish)

    def _closed(self, event: Closed, finish: Finish) -> None:
        item = event.item
        if item.closed:
            return
        main = self.lanes().main
        if event.failure is None:
            main.close(item)
            return
        main.drop(item)  # damaged, or the store failed mid-file
        fail(item.record, event.failure)
        self.outbox.close(item, finish)

    def _publish(self, item: FileItem, result: Transcript | FileFailed) -> None:
        self.outbox.send(item, result)
