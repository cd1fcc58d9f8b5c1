"""glibc's allocator, set once at the start of each runner process: one arena for all threads.

glibc gives a thread that allocates while another thread holds the arena an arena of its own
(up to 8 per core), and memory freed in one arena serves only that arena's threads. Here the
model's thread, the read-ahead thread (decoding, VAD) and the publisher allocate and free
buffers of many sizes beside each other, each in a heap of its own, and every heap keeps its
own fragments: a run's heaps held 2-4 times what was in use at its peak RSS, and the longer
the recording, the longer the read-ahead thread worked beside the model and the higher the
peak (benchmarks/README.md, "Measurements behind design choices"). With one arena the
threads reuse each other's freed memory.

`MALLOC_ARENA_MAX` in the environment, if set, is left to glibc (it reads it itself).
"""

from __future__ import annotations

import ctypes
import os

_M_ARENA_MAX = -8  # glibc's malloc.h


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
