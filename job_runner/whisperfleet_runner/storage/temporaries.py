"""The hidden temporary files a local output is written through, and the removal of those a
killed run left behind.

`publish` writes `<folder>/.<name>.tmp-<12 hex digits>`, then renames it into place; an
exception removes it, but a SIGKILL (the OOM killer, a node going away) leaves it. Listings
never take such a file for an output, and nothing else would ever remove it, so the next
run that lists the output removes the ones that are surely left over:

- ours by name: the exact pattern `publish` uses, for an output format whisperfleet writes
  (`.talk.json.tmp-0123456789ab`), never another name (a user's `.notes.tmp-backup`);
- dead by age: untouched for STALE_SECONDS. A live run renames its temporary file moments
  after its last write, so one that old belongs to a run that is gone; another run writing
  to the same folder right now (a shard of a job sharing it) keeps its own;
- a regular file (not a link, not a folder).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable

from whisperfleet_runner.contract import FORMATS

log = logging.getLogger(__name__)

STALE_SECONDS = 600.0
_FORMATS = "|".join(map(re.escape, FORMATS))
_OURS = re.compile(rf"^\..+\.({_FORMATS})\.tmp-[0-9a-f]{{12}}$")


def temporary_path(path: str) -> str:
    """Where `path` is written before it is renamed into place."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{secrets.token_hex(6)}")


def left_over(name: str) -> bool:
    """Whether `name` is one of our output's temporary files (by name only)."""
    return _OURS.match(name) is not None


def remove_stale(folder: str, names: Iterable[str], now: float | None = None) -> list[str]:
    """Remove, from `names` in `folder`, our temporary files untouched for STALE_SECONDS;
    returns the names removed. A file that cannot be removed is left, with a warning."""
    now = time.time() if now is None else now
    removed = []
    for name in names:
        if not left_over(name):
            continue
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < STALE_SECONDS:
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        except OSError as exc:
            log.warning("could not remove %s, left by a run that was stopped: %s", path, exc)
            continue
        removed.append(name)
    if removed:
        log.info("removed %d temporary file(s) left in %s by a run that was stopped",
                 len(removed), folder)
    return removed
