"""One way to time a call, and the name of the CPU that timed it, for the CLI's bench, the
hardware-aware search and bench/."""
from __future__ import annotations

import platform
import statistics
import time


def time_call(fn, warmup: int = 3, repeats: int = 15, min_time: float = 0.0) -> dict:
    """Median and min wall time (seconds) of fn() over at least `repeats` runs (and at least
    `min_time` seconds) after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max(repeats, 1) or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median": statistics.median(times), "min": min(times), "runs": len(times)}


def cpu_model() -> str:
    """The CPU's model name (every timing report names it)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
