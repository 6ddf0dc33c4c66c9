"""Soak test: many Engine.answer calls of varied length from several threads, with the
process's resident memory (RSS) and open file descriptors sampled along the way. A leak
shows as RSS or descriptors that keep growing after warm-up.

Questions and contexts are SQuAD dev pairs, cut at random lengths (a few words up to whole
paragraphs, some repeated to several windows); every answer is checked to lie inside its
context. Writes bench/results/<name>.{md,json} and a plot of RSS and descriptors over calls.

    python bench/soak.py --calls 100000 --threads 4 --engine-threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import squad  # noqa: E402

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=4, help="calling threads")
    ap.add_argument("--engine-threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2000, help="calls before the baseline sample")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--name", default="soak")
    args = ap.parse_args()
    examples = squad.load_examples(DEV)
    rng = np.random.default_rng(0)
    pairs = []
    for i in rng.choice(len(examples), 2000, replace=False):
        e = examples[i]
        words = e.context.split()
        cut = int(rng.integers(3, len(words) + 1))
        context = " ".join(words[:cut]) * int(rng.choice([1, 1, 1, 3]))
        pairs.append((e.question, context))
    engine = qualam_rt.Engine(threads=args.engine_threads)
    counter = {"done": 0, "bad": 0}
    lock = threading.Lock()
    samples = []  # (calls done, seconds, rss MB, fds)
    every = max(1, args.calls // args.samples)
    t0 = time.perf_counter()

    def worker(k: int) -> None:
        i = k
        while True:
            with lock:
                if counter["done"] >= args.calls:
                    return
                counter["done"] += 1
                n = counter["done"]
                if n % every == 0 or n == args.warmup:
                    samples.append((n, time.perf_counter() - t0, rss_mb(), open_fds()))
            q, c = pairs[i % len(pairs)]
            r = engine.answer(q, c)
            if not (0 <= r["start"] <= r["end"] <= len(c) and c[r["start"]:r["end"]] == r["answer"]):
                with lock:
                    counter["bad"] += 1
            i += args.threads

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples.append((counter["done"], time.perf_counter() - t0, rss_mb(), open_fds()))
    samples.sort()
    base = next(s for s in samples if s[0] >= args.warmup)
    last = samples[-1]
    growth = last[2] - base[2]
    rows = [{"calls": n, "seconds": t, "rss_mb": r, "fds": f} for n, t, r, f in samples]
    plot(rows, Path(__file__).parent / "results" / f"{args.name}.png")
    md = [f"{counter['done']} `Engine.answer` calls (bundled model, {args.engine_threads} kernel threads) from "
          f"{args.threads} calling threads on SQuAD dev questions with contexts cut to random lengths "
          f"({len(pairs)} pairs cycled), {last[1]:.0f} s. Answers outside their context: {counter['bad']}.", "",
          "| | calls | RSS (MB) | open fds |", "|---|---|---|---|",
          f"| after warm-up | {base[0]} | {base[2]:.1f} | {base[3]} |",
          f"| end | {last[0]} | {last[2]:.1f} | {last[3]} |",
          f"| growth | | {growth:+.1f} | {last[3] - base[3]:+d} |", "", f"![soak]({args.name}.png)"]
    write_results(args.name, header(args.engine_threads) | {"calling_threads": args.threads, "bad_answers": counter["bad"],
                                                           "rss_growth_mb": growth, "fd_growth": last[3] - base[3]},
                  rows, "\n".join(md))
    print("\n".join(md))


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, a = plt.subplots(figsize=(6, 3.5))
    calls = [r["calls"] for r in rows]
    a.plot(calls, [r["rss_mb"] for r in rows], "-", c="C0")
    a.set_xlabel("answer() calls")
    a.set_ylabel("RSS (MB)", color="C0")
    b = a.twinx()
    b.plot(calls, [r["fds"] for r in rows], "--", c="C1")
    b.set_ylabel("open file descriptors", color="C1")
    a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
