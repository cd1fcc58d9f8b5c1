"""A runner process keeps one glibc malloc arena for all its threads (fleet/allocator.py):
with an arena per thread, the read-ahead thread's heaps and the model's kept
their own fragments, and a long recording's peak RSS grew with its length. And its large
buffers get transparent huge pages where the kernel gives them only on request.

The arenas are counted by glibc's own `malloc_info` in a child process that starts the
`whisperfleet` command group (as the console script does) and then allocates and frees
on four threads at once, as the runner's threads do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from whisperfleet_runner.fleet import allocator

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


HUGE_CHILD = r"""
import ctypes, os, sys
from whisperfleet_runner.fleet import allocator

allocator.restart_with_huge_pages()  # as the whisperfleet command does first


def huge_kib():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])


libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before = huge_kib()
block = libc.malloc(64 << 20)  # as large as a batch's buffers, and then some
ctypes.memset(block, 1, 64 << 20)
print(os.environ.get("GLIBC_TUNABLES", ""), huge_kib() - before, sep="|")
"""


def huge_pages_in_a_child(env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", HUGE_CHILD], env=env, check=True,
                          capture_output=True, text=True, timeout=120)
    tunables, kib = done.stdout.strip().split("|")
    return tunables, int(kib)


def test_a_runner_process_s_large_buffers_get_huge_pages_where_the_kernel_gives_them() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    tunables, huge_kib = huge_pages_in_a_child(env)
    mode, glibc = allocator.thp_mode(), allocator.glibc_version()
    if mode == "madvise" and glibc is not None and glibc >= (2, 35):
        assert tunables == "glibc.malloc.hugetlb=1"
        assert huge_kib >= 2048  # at least one 2 MiB page behind the 64 MiB buffer
        # and the user's "no" is kept: the process is not restarted, no huge page
        tunables, huge_kib = huge_pages_in_a_child({**env,
                                                    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
        assert (tunables, huge_kib) == ("glibc.malloc.hugetlb=0", 0)
    else:  # the kernel gives huge pages to every process or to none: nothing to restart for
        assert tunables == ""


@pytest.mark.parametrize(("environ", "mode", "glibc", "tunables"), [
    ({}, "madvise", (2, 36), "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", (2, 41),
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), None),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise", (2, 36), None),  # restarted
    ({}, "always", (2, 36), None),
    ({}, "never", (2, 36), None),
    ({}, None, (2, 36), None),  # no transparent huge pages (or not Linux)
    ({}, "madvise", (2, 31), None),  # glibc before the tunable: a restart changes nothing
    ({}, "madvise", None, None),  # musl
])
def test_the_restart_happens_only_where_it_changes_something(
        environ: dict[str, str], mode: str | None, glibc: tuple[int, int] | None,
        tunables: str | None) -> None:
    environment = allocator.huge_pages_environment({"PATH": "/usr/bin", **environ}, mode, glibc)
    if tunables is None:
        assert environment is None
    else:
        assert environment == {"PATH": "/usr/bin", "GLIBC_TUNABLES": tunables}


def test_the_whisperfleet_command_restarts_before_it_imports_the_commands() -> None:
    from importlib.metadata import entry_points

    from whisperfleet_runner import __main__ as program

    (script,) = entry_points(group="console_scripts", name="whisperfleet")
    assert script.load() is program.run
    child = ("import sys; from whisperfleet_runner.fleet import allocator; "
             "allocator.restart_with_huge_pages = lambda: print(sorted(sys.modules)); "
             "from whisperfleet_runner.__main__ import run; sys.argv = ['whisperfleet', '-h']; "
             "run()")
    done = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True,
                          text=True, timeout=120)
    loaded_at_restart = done.stdout.splitlines()[0]
    assert "'whisperfleet_runner.fleet.allocator'" in loaded_at_restart
    assert "whisperfleet_runner.cli" not in loaded_at_restart and "click" not in loaded_at_restart
    assert "Usage: whisperfleet" in done.stdout  # and then the command runs
