"""No tracked file may hold an absolute path of the machine it was written on.

Such a path (a virtualenv, a checkout, a home folder) works where it was written and breaks
on every other machine; CI may even run where it happens to exist, so only this check catches
it there. Paths that are part of a contract (pod mount points such as /tmp, /data, /models,
/dev/termination-log, system tools) are fine: what is refused is where THIS checkout, its
interpreter and its user live, and the usual roots of developer machines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO

# The usual roots of a developer's or CI machine's files (where THIS checkout lives comes from
# `this_machine`). The pods' own home (/home/whisperfleet) is a contract, not a machine path.
MACHINE_ROOTS = re.compile(
    r"(?<![\w.:/-])(?:/home/(?!whisperfleet\b)[\w.-]+/|/Users/[\w.-]+/|/root/"
    r"|/private/var/folders/|[A-Z]:\\Users\\)"
)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file
        return [p for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts
                and ".venv" not in p.parts]
    return [REPO / name for name in out.decode().split("\0") if name]


def this_machine() -> list[str]:
    """Absolute folders that exist only here: the checkout and its parent (unless a short
    shared root such as /tmp), the interpreter's prefix (a venv), the user's home."""
    found = {str(REPO), str(REPO.parent), sys.prefix, sys.base_prefix,
             os.path.expanduser("~")}
    return sorted(p.rstrip("/") + "/" for p in found if p not in ("", "/") and len(p) > 4)


def offending_lines(text: str, machine: list[str]) -> list[str]:
    # A path counts only where it starts: "../../root/" is a relative path, not /root/.
    here = re.compile("|".join(rf"(?<![\w.:/-]){re.escape(m)}" for m in machine) or "(?!)")
    return [line.strip() for line in text.splitlines()
            if MACHINE_ROOTS.search(line) or here.search(line)]


def test_the_rule_catches_a_hard_coded_virtualenv_and_spares_pod_paths() -> None:
    # Inside the checkout: caught wherever the checkout lives (CI clones into /tmp/<name>).
    assert offending_lines(f'CLI = "{REPO}/.venv/bin/whisperfleet"', this_machine())
    assert offending_lines("p = '/home/alice/src/x.wav'", [])
    assert offending_lines(f"cd {sys.prefix}/bin", this_machine())
    for fine in ("mountPath: /home/whisperfleet", "/dev/termination-log", "file:///data/in/",
                 "PATH=/usr/bin:/bin", "file:///data/out/../../root/", "s3://bucket/x"):
        assert not offending_lines(fine, this_machine()), fine


def test_no_tracked_file_holds_an_absolute_path_of_this_machine() -> None:
    machine = this_machine()
    problems = []
    for path in tracked_files():
        if path == Path(__file__).resolve():  # the rule's own examples
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):  # audio and other binary fixtures
            continue
        problems += [f"{path.relative_to(REPO)}: {line}"
                     for line in offending_lines(text, machine)]
    assert problems == [], "absolute machine paths (use sys.executable, shutil.which or " \
                           "paths relative to the repository):\n" + "\n".join(problems)
