"""The CPUs this process may really use: the affinity mask, capped by a cgroup CPU quota."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may actually use: its affinity mask, capped by a cgroup CPU quota.

    `os.cpu_count()` is the host's count; in a container limited to 2 CPUs on a 64-core
    node, 64 compute threads would thrash. Kubernetes CPU limits become a CFS quota
    (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); a fractional quota
    rounds up, since a thread that may run half the time still needs a core to run on.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CFS quota in CPUs (e.g. 1.5), or None when unlimited or unknown."""
    v2 = cgroup_root / "cpu.max"
    try:
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError):
        pass
    for folder in (cgroup_root / "cpu,cpuacct", cgroup_root / "cpu", cgroup_root):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None
