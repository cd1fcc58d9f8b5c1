"""Removing a finished job's state folder, `<output>/.whisperfleet/<job-uid>/`, when the
TranscriptionJob's TTL ends.

The operator never holds storage credentials, so it runs this in a short cleanup Job with
the user's storage environment (`whisperfleet forget-state`). Only keys under that one
prefix go: the transcripts beside it, other jobs' state folders and a namesake such as
`<job-uid>-old/` are never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil

from whisperfleet_runner.contract import WorkOrder
from whisperfleet_runner.storage.errors import wrap_error
from whisperfleet_runner.storage.fs import filesystem, is_local
from whisperfleet_runner.storage.keys import local_path

log = logging.getLogger(__name__)

# A Kubernetes uid: never empty, never a path of its own (no /, no ..).
_UID = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9]*$")


def state_prefix(order: WorkOrder) -> str:
    """The job's state folder with its trailing /; ValueError for a uid that is no uid."""
    if not _UID.match(order.job_uid):
        raise ValueError(f"job uid {order.job_uid!r} is not a Kubernetes uid")
    return f"{order.state_uri}/"


def forget_state(order: WorkOrder) -> int:
    """Delete every object (or file) under the job's state folder; the number removed.
    A folder that is gone already is fine (a repeated cleanup removes 0)."""
    prefix = state_prefix(order)
    if is_local(prefix):
        root = local_path(prefix)
        if not os.path.isdir(root):
            return 0
        count = sum(len(files) for _, _, files in os.walk(root))
        shutil.rmtree(root)  # removes symlinks themselves, never what they point to
        return count
    fs, root = filesystem(prefix)
    root = root.rstrip("/") + "/"
    try:
        # fsspec lists the folder's own marker, if any, as `root` without the slash: only
        # keys strictly under it go.
        names = [name for name in fs.find(root.rstrip("/")) if name.startswith(root)]
        if names:
            fs.rm(names)
    except FileNotFoundError:
        return 0
    except Exception as exc:
        raise wrap_error(prefix, exc) from exc
    log.info("removed %d objects under %s", len(names), prefix)
    return len(names)
