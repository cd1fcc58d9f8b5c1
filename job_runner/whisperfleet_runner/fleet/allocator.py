"""glibc's allocator, set at the start of each runner process: one arena for all threads, and
transparent huge pages for what it allocates.

glibc gives a thread that allocates while another thread holds the arena an arena of its own
(up to 8 per core), and memory freed in one arena serves only that arena's threads. Here the
model's thread, the read-ahead thread (decoding, VAD) and the publisher allocate and free
buffers of many sizes beside each other, each in a heap of its own, and every heap keeps its
own fragments: a run's heaps held 2-4 times what was in use at its peak RSS, and the longer
the recording, the longer the read-ahead thread worked beside the model and the higher the
peak (benchmarks/README.md, "Measurements behind design choices"). With one arena the
threads reuse each other's freed memory.

`MALLOC_ARENA_MAX` in the environment, if set, is left to glibc (it reads it itself).

Huge pages: on the CPU, CTranslate2 works through buffers of many MiB (a batch's encoder
output and cross-attention keys and values, 17.6 MiB each), which glibc's heap serves in
4 KiB pages. Where the kernel gives transparent huge pages only to memory that asks for them
(`madvise`, Ubuntu's default; in `always` mode every heap has them already), glibc 2.35 and
later ask for them when `glibc.malloc.hugetlb=1` is among its tunables, which it reads only
as a process starts: so the `whisperfleet` command starts itself again, once, with it set.
On a 1-hour recording on 2 CPUs: 17% less wall time, less user and system time, the same
peak RSS (benchmarks/README.md). A `glibc.malloc.hugetlb` already in `GLIBC_TUNABLES` is the
user's choice (`=0` turns this off); the runner image sets it in its environment.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from pathlib import Path

_M_ARENA_MAX = -8  # glibc's malloc.h
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def one_arena() -> bool:
    """Limit glibc to one malloc arena; before the process starts its threads (the limit
    is fixed when the second arena is made). False where it is not set (not glibc, or the
    environment says otherwise)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no mallopt (macOS)
        return False
    if not hasattr(libc, "gnu_get_libc_version"):
        return False  # musl's mallopt does nothing, and its allocator has no arenas to limit
    return bool(mallopt(_M_ARENA_MAX, 1))


def glibc_version() -> tuple[int, int] | None:
    """The version of the glibc this process runs on; None on another C library."""
    try:
        get = ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_char_p
    major, minor = get().decode().split(".")[:2]
    return int(major), int(minor)


def thp_mode(path: Path = THP_MODE) -> str | None:
    """The kernel's transparent huge page mode (`always`, `madvise` or `never`); None where
    there are none (not Linux, or a kernel without them)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def huge_pages_environment(environ: Mapping[str, str], mode: str | None,
                           glibc: tuple[int, int] | None) -> dict[str, str] | None:
    """The environment to start this process again with so that glibc asks for huge pages;
    None when a restart would change nothing: the kernel gives them to every process or to
    none, glibc is older than 2.35 (or absent), or the tunable is set already."""
    if mode != "madvise" or glibc is None or glibc < (2, 35):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if HUGE_PAGES_TUNABLE + "=" in tunables:
        return None
    setting = f"{HUGE_PAGES_TUNABLE}=1"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{setting}" if tunables else setting}


def restart_with_huge_pages() -> None:
    """Start this process again, in its place, with glibc asking for huge pages, if that
    changes anything (see `huge_pages_environment`); returns only when it does not. Call it
    first thing, before the process has threads or output."""
    environment = huge_pages_environment(os.environ, thp_mode(), glibc_version())
    if environment is None:
        return
    try:
        os.execve(sys.executable, sys.orig_argv, environment)
    except OSError:
        return  # the same command still runs, on 4 KiB pages
