"""Shared helpers for the benchmarks: timing, machine description, result files."""
from __future__ import annotations

import datetime
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import qualam_rt
from qualam_rt import featurize

RESULTS = Path(__file__).resolve().parent / "results"


# The paper's length configuration for n = 384: tokens kept after each of the six layers, as
# token budgets and as keep ratios, and how results tables name it.
PAPER_TOKENS = [315, 251, 242, 159, 142, 33]
PAPER = [x / 384 for x in PAPER_TOKENS]
PAPER_LABEL = "(" + ",".join(map(str, PAPER_TOKENS)) + ")"


from qualam_rt.timing import cpu_model, time_call  # noqa: E402,F401  (one timing helper and CPU name for bench/, the CLI and the search)


def batches_of(windows, batch: int, sort_by_length: bool) -> list:
    """Batches of `batch` windows; length-sorted if asked (what a padded runtime does best)."""
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids)) if sort_by_length else range(len(windows))
    ws = [windows[i] for i in order]
    return [ws[i:i + batch] for i in range(0, len(ws), batch)]


def ms_per_sample(infer, windows, batch: int, repeats: int, sort_by_length: bool = True) -> float:
    """Median ms per window of infer(batch of windows) over all windows; length-sorted batches
    by default."""
    batches = batches_of(windows, batch, sort_by_length)
    t = time_call(lambda: [infer(b) for b in batches], warmup=1, repeats=repeats)
    return 1e3 * t["median"] / len(windows)


def interleaved_ms_per_sample(systems: dict, windows, batch: int, repeats: dict, gap_s: float = 0.05,
                              seed: int = 0) -> dict:
    """Median ms per window of each system's infer(batch of windows), timed in rounds: every
    round runs one pass of each system, in a fresh random order, so a slow spell of a shared
    machine falls on all systems alike.
    Runtimes leave their worker threads spinning after a call (OpenMP's, OpenVINO's TBB, ONNX
    Runtime's pool), so a system timed right after another shared the cores with its spin: the
    machine idles `gap_s` seconds before each pass, and the system then runs one untimed batch
    to wake its own threads (the steady state that a serving loop sees). A rotated order did not
    help: rotation keeps each system's predecessor.
    systems: name -> (infer, sort_by_length); repeats: name -> number of timed passes (after
    one warm-up pass)."""
    batches = {name: batches_of(windows, batch, by_length) for name, (_, by_length) in systems.items()}
    times = {name: [] for name in systems}
    rng = random.Random(seed)
    for r in range(-1, max(repeats.values())):  # round -1: warm-up
        names = list(systems)
        rng.shuffle(names)
        for name in names:
            if r < repeats[name]:
                infer, bs = systems[name][0], batches[name]
                time.sleep(gap_s)
                infer(bs[0])
                t = time.perf_counter()
                for b in bs:
                    infer(b)
                if r >= 0:
                    times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(t) / len(windows) for name, t in times.items()}


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `align`-byte boundary
    (numpy's own allocations are 16-byte aligned; torch's and qualam_rt's outputs 64)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def paired_difference(a, b) -> tuple[float, float]:
    """Mean of a - b over the same questions, in F1 points, and its standard error: what tells a
    real difference between two systems from the noise of which questions happened to be asked."""
    d = 100.0 * (np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def header(threads: int) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "threads": threads,
        # The kernel path, when chosen by QUALAM_ISA, is part of the command that reproduces it;
        # arguments are shell-quoted (an empty one or one with spaces stays one argument).
        "command": shlex.join(([f"QUALAM_ISA={os.environ['QUALAM_ISA']}"] if "QUALAM_ISA" in os.environ else [])
                              + [Path(sys.executable).name] + sys.argv),
        "python": platform.python_version(),
        "commit": commit,
    }


def synthetic_windows(n: int, count: int, vocab: int, seed: int = 0) -> list:
    """count windows of n random token ids (no text behind them: for timing only)."""
    rng = np.random.default_rng(seed)
    return [featurize.Window(0, rng.integers(1000, vocab, n).astype(np.int32), np.zeros(n, np.int32), np.full((n, 2), -1))
            for _ in range(count)]


def random_minilm_encoder(static: bool = True):
    """(native Encoder, its config) with random MiniLM-L6-H384 weights and static activation
    quantization calibrated on two random 128-token sequences (or, with static=False, every
    GEMM input quantized per row at run time, as in the shipped model): speed does not depend
    on the weights' values."""
    from qualam_rt import _C
    from qualam_rt import synthetic as syn
    cfg = syn.MINILM_L6_H384
    tensors = syn.random_tensors(cfg, seed=0)
    if static:
        calib = [syn.random_batch(cfg, [128], seed=s) for s in range(2)]
        tensors = syn.calibrate_minmax(cfg, tensors, [(i, t) for i, t, _ in calib])
    return _C.Encoder(cfg, tensors), cfg


def engine_from_spec(spec: str, threads: int):
    """An Engine from "MODEL.qrt[:full|:r1,...|:tokens:b1,...][@fp32|@int16|@int8]": the model,
    optionally with another length configuration (keep ratios or token budgets) and attention
    path than its defaults."""
    from qualam_rt.cli import parse_length_config
    spec, _, attention = spec.partition("@")
    path, _, cfg = spec.partition(":")
    return qualam_rt.Engine(path, threads=threads, length_config=parse_length_config(cfg or None), attention=attention or None)


def write_results(name: str, meta: dict, rows: list[dict], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# {name}", "", f"- command: `{meta['command']}`", f"- cpu: {meta['cpu']}",
             f"- threads: {meta['threads']}", f"- date: {meta['date']}", f"- commit: {meta['commit']}", "",
             markdown]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
