"""The `whisperfleet` program: the console script, and `python -m whisperfleet_runner`.

It first starts itself again with glibc's heap on transparent huge pages where that makes a
difference (fleet/allocator.py), before importing the commands, so the restart costs a bare
interpreter's start and not the command group's imports too.
"""

from __future__ import annotations

from whisperfleet_runner.fleet import allocator


def run() -> None:
    allocator.restart_with_huge_pages()
    from whisperfleet_runner.cli import main

    main()


if __name__ == "__main__":
    run()
