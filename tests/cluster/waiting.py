"""Waiting on a condition with a deadline — the only way cluster tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.25) -> T:
    """Call `probe` until it returns something truthy, and return that.

    Fails with an AssertionError naming `what` and the last value (or exception) seen
    once `timeout` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as error:  # e.g. the object does not exist yet
            last = error
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                 f"last seen: {last!r}")
        time.sleep(interval)
