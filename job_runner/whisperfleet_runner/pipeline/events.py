"""What flows from the intake to the model stage: one file's item, then its events.

Each file becomes a `FileItem` (its ledger record, its outputs) and a few events: `Settled`
(done before any audio: skipped or failed), `Clip` (a short file, whole), or `Opened`,
`Part`s (windows of audio, in order) and `Closed` (which carries a failure found late:
damaged media is only known once decoding ends, a store can fail mid-file). `FLUSH`, passed
through from the stream of files, asks the model stage to transcribe what it holds now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from whisperfleet_runner import storage
from whisperfleet_runner.media.speech_chunks import Window
from whisperfleet_runner.pipeline.failures import FileFailed
from whisperfleet_runner.pipeline.ledger import LedgerRecord


@dataclass(eq=False)
class FileItem:
    """One input file on its way through the run."""

    file: storage.InputFile
    record: LedgerRecord
    started: float = field(default_factory=time.monotonic)
    outputs: dict[str, str] = field(default_factory=dict)  # format -> output uri
    seconds: float = 0.0  # decoded audio, once known
    damage: str = ""  # what its damaged media lost, when kept in part (keep_partial)
    closed: bool = False  # its record is written: later events for it are ignored


@dataclass
class Settled:
    """The file ends before any audio is read: skipped (outputs exist) or failed."""

    item: FileItem


@dataclass
class Clip:
    """A short file, whole (a candidate for packing)."""

    item: FileItem
    samples: np.ndarray


@dataclass
class Opened:
    """A longer file begins; its audio follows as `Part`s."""

    item: FileItem


@dataclass
class Part:
    """A window of a streamed file's audio (windows come in order, cut at silence)."""

    item: FileItem
    window: Window


@dataclass
class Closed:
    """A streamed file has no more audio; `failure` when it failed after all."""

    item: FileItem
    failure: FileFailed | None = None


class Flush:
    """Transcribe what is held now (a worker at its share of files must free its hands)."""

    def __repr__(self) -> str:
        return "FLUSH"


FLUSH = Flush()

Event = Settled | Clip | Opened | Part | Closed | Flush


# More than any read-ahead budget: such an event waits for an empty queue, and the next for it
# to be taken (overlap.Prefetcher lets one result larger than its budget pass, alone).
ALONE = 1 << 62


def size_of(event: Event) -> int:
    """What an event weighs in the read-ahead's budget: the bytes of samples it holds, but
    a streamed file's later windows weigh the whole budget, so one of them waits at a time.
    Cut in pauses, a recording of any length would otherwise keep the read-ahead full of its
    windows (32 MiB) beside the model's batches for its whole length, and the run's peak
    grew with the length (benchmarks/README.md, "Measurements behind design choices");
    one window ahead is enough there, as cutting one takes a fraction of transcribing it. A
    file's first window still weighs its bytes: files' first windows queue up as before."""
    if isinstance(event, Clip):
        return event.samples.nbytes
    if isinstance(event, Part):
        return event.window.samples.nbytes if event.window.start == 0 else ALONE
    return 0
