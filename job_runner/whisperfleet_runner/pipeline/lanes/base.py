"""What every lane is: the `Lane` protocol, and what lanes are given (where results go, the
device check) and take (a file's audio)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from whisperfleet_runner.contract.transcript import Transcript
from whisperfleet_runner.media.speech_chunks import Window
from whisperfleet_runner.pipeline.events import FileItem
from whisperfleet_runner.pipeline.failures import FileFailed

# Where a lane sends each file's result: its transcript, or why it failed.
Publish = Callable[[FileItem, Transcript | FileFailed], None]
# Called before every model call: raises GpuLost when the device is gone.
CheckDevice = Callable[[], None]
# A file's audio as a lane takes it: a short file whole, or a window of a longer one.
Audio = np.ndarray | Window


class Lane(Protocol):
    """Files in, results out (through `Publish`): `open` a file, `add` its audio in order,
    `close` it; results may come at any of these calls or at `flush`."""

    def open(self, item: FileItem) -> None:
        """A file begins."""
        ...

    def add(self, item: FileItem, audio: Audio) -> None:
        """More of the file's audio (a whole short file comes in one piece)."""
        ...

    def close(self, item: FileItem) -> None:
        """The file has no more audio; its result follows when its last audio is done."""
        ...

    def flush(self) -> None:
        """Transcribe everything held now."""
        ...

    def drop(self, item: FileItem) -> None:
        """Forget a file that failed elsewhere (its audio held is not transcribed)."""
        ...

    def release(self) -> list[FileItem]:
        """Forget every file held (the device or the store is gone) and return them."""
        ...
