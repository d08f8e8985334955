"""How many CPUs this process may use: the default number of serving processes (WORKERS).

``os.cpu_count()`` counts the machine's CPUs. In a container the CPU limit is a cgroup quota (``cpu.max``:
``200000 100000`` is two CPUs) and the usable set may be narrowed by affinity; a process per machine CPU
on a node of 64 with a limit of 2 would only contend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpu_count(cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """The CPUs of this process's affinity, lowered to its cgroup v2 quota (rounded up) when one is set."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    count = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):
        return count  # no cgroup v2 limit to read (cgroup v1, or not Linux)
    if quota == "max":
        return count
    return max(1, min(count, math.ceil(int(quota) / int(period))))
