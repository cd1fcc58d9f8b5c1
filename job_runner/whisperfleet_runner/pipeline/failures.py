"""How a file fails, and how the run learns that the store itself is gone.

A file's failure (`FileFailed`) carries a `Reason` for programs and a message for people; it
ends in the file's ledger record. A failure of the store itself (`storage.store_lost`) is
different: every file after it would fail alike, each after retries of its own, so the first
one seen stops the run (`StoreHealth`), keeping the files already finished.
"""

from __future__ import annotations

import logging
import threading

from whisperfleet_runner import storage
from whisperfleet_runner.contract import FAILED, Reason
from whisperfleet_runner.pipeline.ledger import LedgerRecord

log = logging.getLogger(__name__)


class FileFailed(Exception):
    """One file failed: `code` says why for programs, the message for people."""

    def __init__(self, code: Reason, message: str) -> None:
        super().__init__(message)
        self.code = code


def fail(record: LedgerRecord, exc: FileFailed) -> None:
    """Mark `record` failed with `exc`'s reason."""
    record.status, record.code, record.reason = FAILED, exc.code.value, str(exc)
    log.warning("%s failed: %s", record.uri, record.reason)


def storage_failure(action: str, exc: storage.StorageError) -> FileFailed:
    return FileFailed(exc.reason, f"storage error {action} ({exc.reason}): {exc}")


def transcription_failure(exc: BaseException) -> FileFailed:
    return FileFailed(Reason.TRANSCRIPTION_FAILED,
                      f"transcription failed: {type(exc).__name__}: {exc}")


class StoreLost(Exception):
    """The store itself is gone: the run stops. `failure` is what the files still in its
    hands end with."""

    def __init__(self, uri: str, cause: FileFailed) -> None:
        super().__init__(f"stopped at {uri}: {cause}; the files not done are left for a "
                         "re-run once the store is back")
        self.failure = FileFailed(cause.code, "not done: the run stopped when the storage "
                                               f"failed ({cause.code}); a re-run does it")


class StoreHealth:
    """Whether the store is still there, as the run's threads (reading, the model's,
    publishing) find out: the first failure of the store itself is kept; the others then
    skip their storage work."""

    def __init__(self) -> None:
        self._lost: StoreLost | None = None
        self._lock = threading.Lock()

    def note(self, uri: str, failure: FileFailed) -> None:
        """Hear of a storage failure; one of the store itself marks the store lost."""
        if storage.store_lost(failure.code):
            with self._lock:
                if self._lost is None:
                    self._lost = StoreLost(uri, failure)

    @property
    def lost(self) -> StoreLost | None:
        return self._lost

    def failure(self) -> FileFailed | None:
        """What a file's storage work ends with at once, when the store is lost."""
        return self._lost.failure if self._lost is not None else None
