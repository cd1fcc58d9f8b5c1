"""The baseline of operator_reaction.py: the least a kopf operator does for a new object.

One handler, on create, writes a status (phase Pending) and nothing else: what kopf, the
API server and this machine cost per TranscriptionJob before any operator logic. Run by
operator_reaction.py as `kopf run --standalone --all-namespaces minimal_operator.py`, with
the same service account as whisperfleet's operator.
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.create("whisperfleet.io", "v1alpha1", "transcriptionjobs")
async def created(patch: kopf.Patch, **_: Any) -> None:
    patch.status["phase"] = "Pending"
