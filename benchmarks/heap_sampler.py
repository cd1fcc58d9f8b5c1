"""Run the whisperfleet CLI in this process while a thread samples its memory; on exit, write
what glibc's heap held at the peak RSS to a JSON file.

    python benchmarks/heap_sampler.py OUT.json transcribe FILE -o OUT ...

Peak RSS alone does not say whose memory it is. Every 50 ms the thread reads the RSS
(/proc/self/statm) and glibc's `mallinfo2`: the heap's size (arena), the bytes in use in it,
the free bytes it keeps, and the bytes in blocks mapped on their own (hblkhd). Memory in use
that stays flat while the heap grows is the allocator's (free space it cannot give back),
not something the run holds. glibc only; on another C library the heap fields are absent.
The samples miss spikes shorter than 50 ms: `long_recording.py` reports the process's own
peak (wait4) beside them.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PERIOD = 0.05
MIB = 2**20
_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


def _mallinfo() -> Callable[[], _Mallinfo2] | None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):  # not glibc, or glibc before 2.33
        return None
    libc.mallinfo2.restype = _Mallinfo2
    return libc.mallinfo2


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class Sampler:
    """The sample taken at the highest RSS seen, and the most ever in use in the heap."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {"rss": 0.0}
        self.most_in_use = 0.0
        self._info = _mallinfo()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {**{f"{k}_at_peak" if k != "rss" else "peak_rss": round(v, 1)
                   for k, v in self.peak.items()},
                "most_in_use": round(self.most_in_use, 1)}

    def _run(self) -> None:
        while not self._stop.wait(PERIOD):
            self._sample()

    def _sample(self) -> None:
        sample = {"rss": _rss_mib()}
        if self._info is not None:
            info = self._info()
            sample |= {"heap": info.arena / MIB, "in_use": info.uordblks / MIB,
                       "free": info.fordblks / MIB, "mapped": info.hblkhd / MIB}
            self.most_in_use = max(self.most_in_use, sample["in_use"] + sample["mapped"])
        if sample["rss"] > self.peak["rss"]:
            self.peak = sample


def main() -> int:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    from whisperfleet_runner.cli import main as cli
    from whisperfleet_runner.fleet import allocator

    allocator.restart_with_huge_pages()  # as the whisperfleet command does first
    allocator.one_arena()  # as the command group does, before this thread can make an arena
    sampler = Sampler()
    sampler.start()
    sys.argv = ["whisperfleet", *args]
    code: int | str | None = 1
    started = time.perf_counter()
    try:
        code = cli()
    except SystemExit as exc:
        code = exc.code
    finally:
        figures = sampler.stop()
        figures["seconds"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(figures))
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
