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


# The CPU features that decide the kernel path (a model name alone, "AMD EPYC" say, is the
# same for CPUs with and without AVX-512).
PATH_FLAGS = ("avx2", "avx512_vnni", "avx512_bf16", "amx_int8")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU that timed a report: its model name, family and model numbers, and which of
    PATH_FLAGS it has, e.g. "AMD EPYC (family 25, model 17; avx2 avx512_vnni avx512_bf16)"."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" not in fields:
        return name
    flags = set(fields.get("flags", "").split())
    features = " ".join(f for f in PATH_FLAGS if f in flags) or "no avx2"
    return f"{name} (family {fields['cpu family']}, model {fields.get('model', '?')}; {features})"
