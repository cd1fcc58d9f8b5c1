"""Which watch events are worth a reconcile: one filter for Jobs and pods alike.

A busy job's pods and Jobs send a stream of status updates; most change nothing the
TranscriptionJob's status is made of. Each object's `signature` (what that status is made
of: for a Job its counts and conditions, for a pod whether and why it is stuck) is kept
per object, and an event reconciles only when the signature changed. A signature is stored
only after a reconcile that did not raise, so one that another error stopped is retried by
the object's next event instead of being forgotten.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from whisperfleet_operator.objects import Obj


class ChangeFilter:
    """The last signature reconciled, per object (by uid). `None` is "gone" (DELETED), and
    for pods also "nothing to say" (a pod that is not stuck is not kept)."""

    def __init__(self) -> None:
        self._seen: dict[str, Hashable] = {}
        self._lock = threading.Lock()

    def changed(self, key: str, signature: Hashable | None, *, always_if_gone: bool) -> bool:
        """Whether an event with `signature` needs a reconcile. `always_if_gone`: a DELETED
        (signature None) always does (a Job deleted by hand must not leave the status
        Running forever)."""
        if signature is None and always_if_gone:
            return True
        with self._lock:
            return self._seen.get(key) != signature

    def reconciled(self, key: str, signature: Hashable | None) -> None:
        """The reconcile for `signature` went through: remember it (None forgets)."""
        with self._lock:
            if signature is None:
                self._seen.pop(key, None)
            else:
                self._seen[key] = signature


def job_signature(job: Obj) -> Hashable:
    """What of a planner or worker Job the status is made from: events reconcile only when
    it changes, not on every `ready`/`terminating`/uncounted-pod update the Job controller
    makes while pods come and go."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    conds = tuple(sorted((str(c.get("type")), str(c.get("status")), str(c.get("reason")))
                         for c in status.get("conditions") or []))
    return (spec.get("parallelism"), spec.get("suspend"), conds, status.get("active"),
            status.get("succeeded"), status.get("failed"), status.get("completedIndexes"),
            status.get("failedIndexes"))

