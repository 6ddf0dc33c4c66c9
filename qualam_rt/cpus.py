"""How many kernel threads a process should start with. OpenMP counts the CPUs the process may
run on, but not a container's CPU quota (`docker run --cpus=2` on a 64-core host): 64
threads on 2 CPUs' worth of time get throttled in turn, and every parallel region waits for
the slowest. So the default is the quota's whole CPUs, unless OMP_NUM_THREADS says otherwise."""
from __future__ import annotations

import os
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup") -> int | None:
    """Whole CPUs of this process's cgroup CPU quota (at least 1), or None without a quota.
    cgroup v2 `cpu.max` ("max 100000" or "200000 100000"), else v1 `cpu.cfs_quota_us` (-1: none)
    over `cpu.cfs_period_us`, at the root of the hierarchy: where a container sees its own
    cgroup (a quota on a cgroup deeper in the host's tree is not looked for)."""
    root = Path(root)
    fields = (_read(root / "cpu.max") or "").split()
    if len(fields) != 2:
        for v1 in (root / "cpu", root / "cpu,cpuacct"):
            quota, period = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                fields = [quota, period]
                break
    try:
        quota, period = (int(x) for x in fields)
    except ValueError:  # "max", missing or malformed: no quota we can read
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, quota // period)


def default_thread_count(openmp_threads: int, environ=os.environ, quota: int | None = None) -> int:
    """OpenMP's count, at most the cgroup quota's CPUs; OMP_NUM_THREADS, where set, decides."""
    if "OMP_NUM_THREADS" in environ or quota is None:
        return openmp_threads
    return min(openmp_threads, quota)
