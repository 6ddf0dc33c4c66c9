"""Load test of `qualam-rt serve` on loopback: throughput and p50 / p99 latency at several
numbers of concurrent clients, on real SQuAD dev questions, next to Engine.answer called one
question at a time in-process (same model, same threads, same questions).

The server runs in its own process (uvicorn, the engine on --threads threads); the clients
are one asyncio process with httpx, each client sending its next question as soon as its
last answer arrives, for --seconds per level after a warm-up. The answers are checked against
Engine.answer's. Writes bench/results/<name>.{md,json} and a plot.

    python bench/serve_load.py --threads 2 --clients 1 4 16 32 64 --seconds 20
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import squad  # noqa: E402

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def level(url: str, questions: list, clients: int, seconds: float):
    import httpx
    latencies, done, errors = [], 0, 0
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        async def one_client(k: int):
            nonlocal done, errors
            i = k
            while time.perf_counter() < stop:
                q, c = questions[i % len(questions)]
                t = time.perf_counter()
                r = await client.post(url + "/answer", json={"question": q, "context": c})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                    done += 1
                else:
                    errors += 1
                i += clients
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"clients": clients, "requests": done, "errors": errors, "throughput_qps": done / wall,
            "p50_ms": 1e3 * float(np.percentile(latencies, 50)), "p99_ms": 1e3 * float(np.percentile(latencies, 99))}


async def check_answers(url: str, questions: list, engine) -> int:
    import httpx
    async with httpx.AsyncClient(timeout=120) as client:
        got = await asyncio.gather(*(client.post(url + "/answer", json={"question": q, "context": c}) for q, c in questions))
    return sum(r.json() != json.loads(json.dumps(engine.answer(q, c))) for r, (q, c) in zip(got, questions))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--questions", type=int, default=400)
    ap.add_argument("--max-batch-windows", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--name", default="serve_load")
    args = ap.parse_args()
    examples = squad.load_examples(DEV)[:args.questions]
    questions = [(e.question, e.context) for e in examples]
    engine = qualam_rt.Engine(args.model, threads=args.threads)

    # In-process baseline: one question at a time.
    for q, c in questions[:10]:
        engine.answer(q, c)
    times, t_end = [], time.perf_counter() + args.seconds
    i = 0
    while time.perf_counter() < t_end:
        q, c = questions[i % len(questions)]
        t = time.perf_counter()
        engine.answer(q, c)
        times.append(time.perf_counter() - t)
        i += 1
    baseline = {"clients": "in-process, one at a time", "requests": len(times), "throughput_qps": len(times) / sum(times),
                "p50_ms": 1e3 * float(np.percentile(times, 50)), "p99_ms": 1e3 * float(np.percentile(times, 99)), "errors": 0}
    print(baseline, flush=True)

    port = free_port()
    cmd = [sys.executable, "-m", "qualam_rt.cli", "serve", "--port", str(port), "--threads", str(args.threads),
           "--max-batch-windows", str(args.max_batch_windows), "--max-wait-ms", str(args.max_wait_ms)]
    if args.model:
        cmd += ["--model", args.model]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        mismatches = asyncio.run(check_answers(url, questions[:64], engine))
        asyncio.run(level(url, questions, 4, 2.0))  # warm-up
        rows = [baseline]
        for n in args.clients:
            rows.append(asyncio.run(level(url, questions, n, args.seconds)))
            print(rows[-1], flush=True)
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=60)
    one = next(r for r in rows if r["clients"] == 1) if 1 in args.clients else None
    for r in rows[1:]:
        r["throughput_over_one_client"] = r["throughput_qps"] / one["throughput_qps"] if one else None
        r["p99_over_p50"] = r["p99_ms"] / r["p50_ms"]
    http_overhead = one["p50_ms"] / baseline["p50_ms"] - 1 if one else None
    plot(rows[1:], baseline, Path(__file__).parent / "results" / f"{args.name}.png")
    md = [f"Model `{engine.path.name}`, {args.threads} threads, server `--max-batch-windows {args.max_batch_windows} "
          f"--max-wait-ms {args.max_wait_ms}` in its own process, clients on loopback (httpx, asyncio), "
          f"{len(questions)} SQuAD dev questions cycled, {args.seconds:.0f} s per level. Answers through HTTP that differ "
          f"from Engine.answer's on 64 questions: {mismatches}. At 1 client, HTTP adds "
          f"{100 * http_overhead:.1f}% to the median time per question." if http_overhead is not None else "", "",
          "| clients | requests | errors | throughput (q/s) | p50 (ms) | p99 (ms) | throughput / 1 client | p99 / p50 |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['throughput_qps']:.1f} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r.get('throughput_over_one_client') or float('nan'):.2f} | "
                  f"{r.get('p99_over_p50', float('nan')):.2f} |")
    md += ["", f"![serve load]({args.name}.png)"]
    batch_lines = [line for line in metrics.splitlines() if line.startswith("qualam_batch_windows_")]
    write_results(args.name, header(args.threads) | {"mismatches": mismatches, "http_overhead_at_1": http_overhead,
                                                      "server_batch_metrics": batch_lines}, rows, "\n".join(md))


def plot(rows, baseline, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    c = [r["clients"] for r in rows]
    a.plot(c, [r["throughput_qps"] for r in rows], "o-", label="qualam-rt serve")
    a.axhline(baseline["throughput_qps"], ls="--", c="0.5", label="Engine.answer, one at a time")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrent clients")
    a.set_ylabel("questions / s")
    a.legend(fontsize=8)
    b.plot(c, [r["p50_ms"] for r in rows], "o-", label="p50")
    b.plot(c, [r["p99_ms"] for r in rows], "s-", label="p99")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("concurrent clients")
    b.set_ylabel("latency (ms)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
