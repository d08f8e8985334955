"""CPU time and resident memory of processes, read from /proc.

The runner samples before and after each h2load run; CPU seconds over OK calls is the
server's CPU per call, the cost that RPC/s alone hides when the load generator shares
the cores. Linux only, like the machines this runs on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Stat:
    pid: int
    comm: str
    ppid: int
    cpu_ticks: int  # utime + stime of the process itself (children's are not in it)


def _read_stat(pid: int) -> _Stat | None:
    """One /proc/<pid>/stat, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may itself hold spaces or ')': split at the last one.
    open_paren, close_paren = text.index("("), text.rindex(")")
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return _Stat(
        pid=pid,
        comm=text[open_paren + 1 : close_paren],
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
    )


def _all_stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def _tree(root: int, stats: dict[int, _Stat], *, skip_comm: str | None = None) -> set[int]:
    """root and its live descendants, leaving out subtrees whose command is skip_comm."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    pending = [root] if root in stats else []
    while pending:
        pid = pending.pop()
        if skip_comm is not None and pid != root and stats[pid].comm == skip_comm:
            continue
        found.add(pid)
        pending.extend(children.get(pid, []))
    return found


def server_pids(root: int) -> set[int]:
    """The server process and any workers it forked, without a PostgreSQL it may have started.

    PostgreSQL is measured apart (postgres_pids) so the server's own cost per call stays visible.
    """
    return _tree(root, _all_stats(), skip_comm="postgres")


def postgres_pids(pgdata: Path | None) -> set[int]:
    """The PostgreSQL processes that serve the run.

    With a data directory (the embedded PostgreSQL) it is that postmaster and its
    children; otherwise every local process named ``postgres``, which is right for a
    database on this machine and empty for a remote one.
    """
    stats = _all_stats()
    postmaster = postmaster_pid(pgdata) if pgdata is not None else None
    if postmaster is not None and postmaster in stats:
        return _tree(postmaster, stats)
    return {pid for pid, stat in stats.items() if stat.comm == "postgres"}


def postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster of a data directory, from the first line of its postmaster.pid."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def cpu_ticks(pids: set[int]) -> dict[int, int]:
    """CPU ticks (utime + stime) per live pid, to be diffed with cpu_seconds_between."""
    sample: dict[int, int] = {}
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None:
            sample[pid] = stat.cpu_ticks
    return sample


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds spent between two samples; a pid first seen in after counts from zero.

    A process that exited in between loses what it spent since before: the runner only
    measures long-lived processes (the server, the postmaster and its pooled backends).
    """
    ticks = sum(value - before.get(pid, 0) for pid, value in after.items())
    return ticks / _TICKS_PER_SECOND


def _status_kib(pid: int, field: str) -> int | None:
    """One ``<field>: N kB`` line of /proc/<pid>/status, or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes(pids: set[int]) -> int:
    """VmRSS of the given processes added up (pages they share count once per process)."""
    return sum((_status_kib(pid, "VmRSS") or 0) * 1024 for pid in pids)


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM of one process: the most resident memory it has had since it started."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM from the current RSS (Linux ≥ 4.0), so a later peak excludes setup.

    Seeding hashes passwords with argon2, whose memory would otherwise be the peak.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
