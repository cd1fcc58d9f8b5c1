"""metav1.Condition bookkeeping shared by the status code (pure)."""

from __future__ import annotations

import re
from typing import Any

Obj = dict[str, Any]
MAX_MESSAGE = 32768  # the CRD's bound on a condition message


def condition_status(status: Obj | None, type_: str) -> str | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def _reason(text: str, default: str) -> str:
    """A metav1.Condition reason (CamelCase-ish: letters, digits, _ , :) from any text."""
    cleaned = re.sub(r"[^A-Za-z0-9_,:]", "", text)
    cleaned = re.sub(r"^[^A-Za-z]+|[,:]+$", "", cleaned)
    return cleaned[:1024] or default


def set_condition(
    conditions: list[Obj], type_: str, status: bool, reason: str, message: str,
    generation: int, now: str,
) -> list[Obj]:
    """metav1.Condition upsert: lastTransitionTime only moves when the status flips."""
    value = "True" if status else "False"
    reason = _reason(reason, type_)
    message = clip(message, MAX_MESSAGE)
    out: list[Obj] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(cond)
            continue
        found = True
        changed = cond.get("status") != value
        out.append({
            "type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": now if changed else cond.get("lastTransitionTime", now),
            "observedGeneration": generation,
        })
    if not found:
        out.append({
            "type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": now, "observedGeneration": generation,
        })
    return out


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
