"""Shard outcomes folded into a TranscriptionJob's status, each exactly once.

A shard's counts come from its pod's termination message, and pods do not last (Job TTL,
garbage collection, a user's `kubectl delete pod`). So a shard is folded in when its outcome
becomes final and recorded in `status.foldedShards`; from then on its counts stay whatever
happens to its pod. Pure functions over the plain dicts the API returns.
"""

from __future__ import annotations

from whisperfleet_operator.conditions import clip as _clip
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.status import reports
from whisperfleet_runner.contract import (
    MAX_REPORTED_FAILURES,
    GpuIdentity,
    PlanReport,
    ShardReport,
)

MAX_FAILURES = MAX_REPORTED_FAILURES
MAX_WORKERS = 32  # status must stay small: one entry per finished shard pod, newest first
# CRD bounds on status strings and lists: a status the API server refuses is never stored.
MAX_URI, MAX_REASON, MAX_NAME, MAX_GPU_TEXT, MAX_GPUS = 4096, 1024, 253, 128, 16
MAX_INT32 = 2**31 - 1


def format_duration(seconds: float) -> str:
    """The two largest units of d/h/m/s: "45s", "12m30s", "3h05m", "2d04h"."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def parse_indexes(text: str | None) -> set[int]:
    """Kubernetes' index set notation, e.g. "1,3-5,7" -> {1, 3, 4, 5, 7}; junk is skipped."""
    result: set[int] = set()
    for part in (text or "").split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (hi.isdigit() or not hi):
            result.update(range(int(lo), int(hi or lo) + 1))
    return result


def _gpu_entry(gpu: GpuIdentity) -> Obj:
    """A GPU as the status shows it; the optional identities only when the runner knew them."""
    entry: Obj = {"uuid": _clip(gpu.uuid, MAX_GPU_TEXT), "name": _clip(gpu.name, MAX_GPU_TEXT),
                  "memoryMiB": max(0, gpu.memory_mib),
                  "deviceIndex": min(max(0, gpu.device_index), MAX_INT32)}
    for key, value in (("pciBusId", gpu.pci_bus_id), ("computeCapability",
                                                      gpu.compute_capability),
                       ("migProfile", gpu.mig_profile)):
        if value:
            entry[key] = _clip(value, MAX_GPU_TEXT)
    return entry


def _worker_entry(report: ShardReport, pod: Obj) -> Obj:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return {
        "pod": _clip(report.pod or str(meta.get("name") or ""), MAX_NAME),
        "node": _clip(report.node or str(spec.get("nodeName") or ""), MAX_NAME),
        "gpus": [_gpu_entry(g) for g in report.gpus[:MAX_GPUS]],
    }


def format_indexes(indexes: set[int]) -> str:
    """{0, 1, 2, 3, 5} -> "0-3,5": the Job status notation (completedIndexes)."""
    parts: list[str] = []
    ordered = sorted(indexes)
    start = None
    for i, index in enumerate(ordered):
        if start is None:
            start = index
        if i + 1 == len(ordered) or ordered[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ",".join(parts)


def fold(old: Obj, plan: PlanReport, pods: list[Obj], final: set[int]) -> Obj:
    """The counts, workers and failures of every shard whose outcome is final, each folded
    into the status exactly once (`foldedShards` records which): a count, once in, stays,
    whatever happens to the pods afterwards (deleted, garbage-collected)."""
    folded = parse_indexes(old.get("foldedShards"))
    files = {"succeeded": 0, "failed": 0, "skipped": 0, **(old.get("files") or {}),
             "total": plan.files}
    audio, gpu_seconds = float(old.get("audioSeconds") or 0), float(old.get("gpuSeconds") or 0)
    chosen, unreadable = reports.by_shard(pods)
    workers: list[Obj] = []
    failures: list[Obj] = list(old.get("failures") or [])
    for index in sorted(final - folded):
        if index in chosen:
            report, pod = chosen[index]
            for key in ("succeeded", "failed", "skipped"):
                files[key] += getattr(report, key)
            audio += report.audio_seconds
            gpu_seconds += report.wall_seconds * max(1, len(report.gpus))
            workers.append(_worker_entry(report, pod))
            if report.error_reason:
                failures.append({"uri": f"shard {index}", "reason":
                                 f"{report.error_reason}: {report.error_message}".strip()})
            failures += [{"uri": f.uri, "reason": f.reason} for f in report.failures]
        elif index in unreadable:
            failures.append({"uri": f"shard {index}",
                             "reason": reports.describe_failure(unreadable[index])})
        else:
            failures.append({"uri": f"shard {index}", "reason": (
                "its pod was removed before its report was read; the ledger holds the "
                "outcome of its files")})
        folded.add(index)
    by_pod: dict[str, Obj] = {}
    for entry in [*workers[::-1], *(old.get("workers") or [])]:  # newest first
        by_pod.setdefault(str(entry.get("pod")), entry)
    return {"files": files, "audioSeconds": round(audio, 2), "gpuSeconds": round(gpu_seconds, 2),
            "throughput": round(audio / gpu_seconds, 3) if gpu_seconds > 0 else 0.0,
            "workers": list(by_pod.values())[:MAX_WORKERS],
            "failures": [{"uri": _clip(str(f["uri"]), MAX_URI),
                          "reason": _clip(str(f["reason"]), MAX_REASON)}
                         for f in failures[:MAX_FAILURES]],
            "foldedShards": format_indexes(folded)}
