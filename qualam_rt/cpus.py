"""How many kernel threads a process should start with. OpenMP counts the CPUs the process may
run on, but not a cgroup's CPU quota (`docker run --cpus=2` on a 64-core host, systemd's
`CPUQuota=200%`): 64 threads on 2 CPUs' worth of time get throttled in turn, and every
parallel region waits for the slowest. So the default is the quota's whole CPUs, unless
OMP_NUM_THREADS says otherwise."""
from __future__ import annotations

import os
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota(d: Path, v1: bool) -> int | None:
    """Whole CPUs of the quota set on cgroup directory d (at least 1), or None without one."""
    if v1:
        fields = [_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")]
    else:
        fields = (_read(d / "cpu.max") or "").split()
    try:
        quota, period = (int(x) for x in fields)
    except (ValueError, TypeError):  # "max", missing or malformed: no quota we can read
        return None
    return max(1, quota // period) if quota > 0 and period > 0 else None


def _own_cgroups(proc_self_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup paths from /proc/self/cgroup: (v2, v1 cpu controller's)."""
    v2 = v1 = ""
    for line in (_read(proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _dirs_up(base: Path, rel: str) -> list[Path]:
    """base/rel and each of its parents down to base itself."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if ".." in parts:
        parts = []
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup", proc_self_cgroup: str | Path = "/proc/self/cgroup") -> int | None:
    """Whole CPUs of the tightest CPU quota over this process (at least 1), or None without one:
    cgroup v2 `cpu.max` ("max 100000" or "200000 100000"), v1 `cpu.cfs_quota_us` (-1: none)
    over `cpu.cfs_period_us`, on the process's own cgroup (from /proc/self/cgroup: a systemd
    service's CPUQuota) and every cgroup above it up to the hierarchy's root (where a
    container sees its own cgroup), since a parent's quota bounds its children."""
    root = Path(root)
    v2, v1 = _own_cgroups(Path(proc_self_cgroup))
    quotas = [_quota(d, v1=False) for d in _dirs_up(root, v2)]
    for v1_root in (root / "cpu", root / "cpu,cpuacct"):
        quotas += [_quota(d, v1=True) for d in _dirs_up(v1_root, v1)]
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def default_thread_count(openmp_threads: int, environ=os.environ, quota: int | None = None) -> int:
    """OpenMP's count, at most the cgroup quota's CPUs; OMP_NUM_THREADS, where set, decides."""
    if "OMP_NUM_THREADS" in environ or quota is None:
        return openmp_threads
    return min(openmp_threads, quota)
