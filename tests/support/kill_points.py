"""SIGKILL a command at a chosen moment, and make sure nothing of it keeps running.

A kill point is a delay after the start, or after a marker (enough outputs are visible) is
first seen. Each command runs in a session of its own, so that whatever it spawned (worker
processes) can be found afterwards by its process group (read from /proc: Linux only): a
kill leaves nothing running.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POLL = 0.001  # seconds between looks at the marker: one file's outputs take ~3 ms to publish


@dataclass(frozen=True)
class KillPoint:
    """`outputs` > 0: `delay` seconds after that many outputs are visible. Else `delay`
    seconds after the start, or at once when one output more than at the start is visible:
    a kill meant for the start-up never waits until the work is done."""

    delay: float
    outputs: int = 0

    def describe(self) -> str:
        if self.outputs:
            return f"{self.delay * 1000:.0f} ms after {self.outputs} outputs were visible"
        return f"{self.delay:.2f} s after the start, or at its first output"


@dataclass
class Outcome:
    killed: bool
    seconds: float  # from the start to the kill, or to the exit
    returncode: int | None


def live_in_group(group: int) -> list[int]:
    """Processes of process group `group` that are still running (zombies left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # it ended while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


@contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The command running in a session of its own, its output going to `log`; whatever
    of it still runs when the block ends (a failed test) is killed."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if live_in_group(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def run_until(process: subprocess.Popen[bytes], point: KillPoint,
              visible: Callable[[], int], timeout: float = 120,
              gone_within: float = 20) -> Outcome:
    """SIGKILL `process` (its main process only, as the OOM killer or `kill -9` would) at
    `point`, unless it exits first; then wait until no process of its group runs (what it
    spawned must end with it, within `gone_within` seconds)."""
    began = time.monotonic()
    if point.outputs:
        marker, due = point.outputs, math.inf
    else:
        marker, due = visible() + 1, began + point.delay
    while process.poll() is None:
        now = time.monotonic()
        if marker and visible() >= marker:  # seen: no need to look again
            due, marker = min(due, now + (point.delay if point.outputs else 0)), 0
        if now >= due:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            _wait_group_gone(process.pid, gone_within)
            return Outcome(True, now - began, process.returncode)
        if now - began > timeout:
            raise AssertionError(f"{process.args} still running after {timeout} s")
        time.sleep(POLL)
    return Outcome(False, time.monotonic() - began, process.returncode)


def _wait_group_gone(group: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while left := live_in_group(group):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {left} of the killed run still run {timeout} s "
                                 "after it was killed")
        time.sleep(0.05)
