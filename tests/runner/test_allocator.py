"""A runner process keeps one glibc malloc arena for all its threads (fleet/allocator.py):
with an arena per thread, the read-ahead thread's heaps and the model's kept
their own fragments, and a long recording's peak RSS grew with its length.

The arenas are counted by glibc's own `malloc_info` in a child process that starts the
`whisperfleet` command group (as the console script does) and then allocates and frees
on four threads at once, as the runner's threads do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import ctypes, sys, threading
from whisperfleet_runner.cli import main

main.main(["gpus"], standalone_mode=False)  # any command: the group starts first
barrier = threading.Barrier(4)

def work():
    barrier.wait()  # all four at once, so each would take an arena of its own
    for _ in range(200):
        blocks = [ctypes.create_string_buffer(64 * 1024) for _ in range(8)]
        del blocks

threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
out = libc.fopen(sys.argv[1].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fclose(ctypes.c_void_p(out))
"""


def arenas(tmp_path: Path, env: dict[str, str]) -> int:
    report = tmp_path / "malloc_info.xml"
    subprocess.run([sys.executable, "-c", CHILD, str(report)], env=env, check=True,
                   capture_output=True, timeout=120)
    return report.read_text().count("<heap nr=")


def test_the_runner_s_threads_share_one_malloc_arena(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert arenas(tmp_path, env) == 1


def test_a_malloc_arena_max_in_the_environment_is_left_to_glibc(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert arenas(tmp_path, {**env, "MALLOC_ARENA_MAX": "8"}) > 1
