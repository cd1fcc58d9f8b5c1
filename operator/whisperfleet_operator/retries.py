"""Retries of a reconcile that an API error which may pass (a 409, a 5xx burst, a 429)
stopped: after a growing delay, until one gets through.

kopf retries its change handlers itself (handlers raise kopf.TemporaryError with
`retry_delay`), but never its event handlers, and the Job event a finished job's status is
written on comes once: a 409 or a 5xx burst on that write would leave the job Running for
good. `RetryTimers` keeps at most one pending retry per job; it reads the world afresh for
every failure since.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Seconds before a reconcile an API error stopped runs again; the last repeats until one
# gets through (the job is then finished, gone, or the API server back).
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
Key = tuple[str, str, str | None]  # namespace, name, uid (None: whichever incarnation)


def retry_delay(attempt: int) -> float:
    """The delay before retry number `attempt` (0 for the first)."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


class RetryTimers:
    """One pending retry per key, each after `retry_delay(failures in a row so far)`."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._timers: dict[Key, threading.Timer] = {}
        self._due: dict[Key, threading.Timer] = {}  # `at`: one pending call per key
        self._failures: dict[Key, int] = {}  # failed attempts in a row, for the backoff
        self._closed = False

    def later(self, key: Key, run: Callable[[], None], why: str) -> None:
        """Call `run` after the next delay for `key`, unless a retry is pending already."""
        with self._guard:
            if self._closed or key in self._timers:
                return
            attempt = self._failures.get(key, 0)
            self._failures[key] = attempt + 1
            delay = retry_delay(attempt)
            # kopf.event needs the context kopf gives handler threads; a timer's is empty.
            timer = threading.Timer(delay, contextvars.copy_context().run,
                                    (self._fire, key, run))
            timer.daemon = True
            self._timers[key] = timer
        logger.warning("reconciling %s/%s failed (%s); retrying in %.0f s", key[0], key[1],
                       why, delay)
        timer.start()

    def at(self, key: Key, delay: float, run: Callable[[], None]) -> None:
        """Call `run` in `delay` seconds (a TTL ending), unless a call is pending already."""
        with self._guard:
            if self._closed or key in self._due:
                return
            timer = threading.Timer(delay, contextvars.copy_context().run,
                                    (self._fire_due, key, run))
            timer.daemon = True
            self._due[key] = timer
        timer.start()

    def _fire_due(self, key: Key, run: Callable[[], None]) -> None:
        with self._guard:
            self._due.pop(key, None)
        try:
            run()
        except Exception:
            logger.exception("reconciling %s/%s failed", key[0], key[1])

    def pending(self) -> int:
        """Reconciles waiting for a retry after an API error (the operator's queue depth)."""
        with self._guard:
            return len(self._timers)

    def succeeded(self, key: Key) -> None:
        """`key` got through: its next failure starts the backoff afresh."""
        with self._guard:
            self._failures.pop(key, None)

    def close(self) -> None:
        """Cancel pending retries (the operator is stopping; a restart resumes every job)."""
        with self._guard:
            self._closed = True
            timers = [*self._timers.values(), *self._due.values()]
            self._timers, self._due = {}, {}
        for timer in timers:
            timer.cancel()

    def _fire(self, key: Key, run: Callable[[], None]) -> None:
        with self._guard:
            self._timers.pop(key, None)
        try:
            run()
        except Exception:  # on a timer thread nobody else would report it
            logger.exception("reconciling %s/%s failed", key[0], key[1])
