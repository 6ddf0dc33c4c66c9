"""Load test of `qualam-rt serve` on loopback: throughput and p50 / p99 latency at several
numbers of concurrent clients, on real SQuAD dev questions, next to Engine.answer called one
question at a time in-process (same model, same threads, same questions).

The server runs in its own process (uvicorn, the engine on --threads threads); the clients
are one asyncio process with httpx, each client sending its next question (its own random
order of the questions) as soon as its last answer arrives, for --seconds per level after a
warm-up. The answers are checked against
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


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on one asyncio connection: JSON POSTs with a
    Content-Length, nothing else. It costs ~0.15 ms less CPU per request than httpx on this
    machine, where the clients share the server's two cores."""

    def __init__(self, url: str):
        self.host, self.port = url.split("//", 1)[1].split(":")
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        payload = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
        return int(head[0].split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def level(url: str, questions: list, clients: int, seconds: float, kind: str = "httpx"):
    import httpx
    latencies, done, errors, dropped = [], 0, 0, 0
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        async def one_client(k: int):
            nonlocal done, errors, dropped
            raw = RawClient(url) if kind == "raw" else None
            # Each client asks in its own order: clients that walked the list in step (k, k + n,
            # ...) asked about the same article at the same time, and its long contexts then
            # landed in one batch together.
            order = np.random.default_rng(k).permutation(len(questions))
            i = 0
            while time.perf_counter() < stop:
                q, c = questions[order[i % len(questions)]]
                t = time.perf_counter()
                try:
                    if raw:
                        status, _ = await raw.post("/answer", {"question": q, "context": c})
                    else:
                        status = (await client.post(url + "/answer", json={"question": q, "context": c})).status_code
                except (httpx.TransportError, OSError, asyncio.IncompleteReadError):
                    # A connection closed under the client (counted; the next request opens another).
                    dropped += 1
                    if raw:
                        raw.close()
                        raw = RawClient(url)
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                    done += 1
                else:
                    errors += 1
                i += 1
            if raw:
                raw.close()
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"client": kind, "clients": clients, "requests": done, "errors": errors, "dropped": dropped,
            "throughput_qps": done / wall,
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
    ap.add_argument("--client", choices=["httpx", "raw", "both"], default="both",
                    help="load generator: httpx, a minimal keep-alive HTTP/1.1 client (raw), or each level with both")
    ap.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment of the server process (e.g. OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=2000: the server's own default)")
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
    server_env = dict(os.environ) | dict(kv.split("=", 1) for kv in args.server_env)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server_env)
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
        kinds = ["httpx", "raw"] if args.client == "both" else [args.client]
        for n in args.clients:
            for kind in kinds:
                rows.append(asyncio.run(level(url, questions, n, args.seconds, kind)))
                print(rows[-1], flush=True)
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=60)
    ones = {r["client"]: r for r in rows[1:] if r["clients"] == 1}
    for r in rows[1:]:
        one = ones.get(r["client"])
        r["throughput_over_one_client"] = r["throughput_qps"] / one["throughput_qps"] if one else None
        r["p99_over_p50"] = r["p99_ms"] / r["p50_ms"]
    http_overhead = {k: r["p50_ms"] / baseline["p50_ms"] - 1 for k, r in ones.items()}
    plot(rows[1:], baseline, Path(__file__).parent / "results" / f"{args.name}.png")
    md = [f"Model `{engine.path.name}`, {args.threads} threads, server `--max-batch-windows {args.max_batch_windows} "
          f"--max-wait-ms {args.max_wait_ms}` in its own process (environment: {' '.join(args.server_env) or 'inherited'}), clients on loopback (httpx, asyncio), "
          f"{len(questions)} SQuAD dev questions cycled, {args.seconds:.0f} s per level. Answers through HTTP that differ "
          f"from Engine.answer's on 64 questions: {mismatches}. At 1 client, HTTP adds "
          + ", ".join(f"{100 * v:.1f}% ({k} client)" for k, v in http_overhead.items())
          + " to the median time per question.", "",
          "`errors`: answers with a status other than 200; `dropped`: requests whose connection closed "
          "before an answer came (the client reconnects).", "",
          "| client | clients | requests | errors | dropped | throughput (q/s) | p50 (ms) | p99 (ms) | throughput / 1 client | p99 / p50 |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r.get('client', '-')} | {r['clients']} | {r['requests']} | {r['errors']} | {r.get('dropped', 0)} | "
                  f"{r['throughput_qps']:.1f} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r.get('throughput_over_one_client') or float('nan'):.2f} | "
                  f"{r.get('p99_over_p50', float('nan')):.2f} |")
    md += ["", f"![serve load]({args.name}.png)"]
    batch_lines = [line for line in metrics.splitlines() if line.startswith("qualam_batch_windows_")]
    write_results(args.name, header(args.threads) | {"mismatches": mismatches, "http_overhead_at_1": http_overhead,
                                                      "server_env": args.server_env,
                                                      "server_batch_metrics": batch_lines}, rows, "\n".join(md))


def plot(rows, baseline, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for kind in sorted({r["client"] for r in rows}):
        mine = [r for r in rows if r["client"] == kind]
        c = [r["clients"] for r in mine]
        a.plot(c, [r["throughput_qps"] for r in mine], "o-", label=f"qualam-rt serve ({kind} client)")
        b.plot(c, [r["p50_ms"] for r in mine], "o-", label=f"p50 ({kind})")
        b.plot(c, [r["p99_ms"] for r in mine], "s--", label=f"p99 ({kind})")
    a.axhline(baseline["throughput_qps"], ls="--", c="0.5", label="Engine.answer, one at a time")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrent clients")
    a.set_ylabel("questions / s")
    a.legend(fontsize=8)
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
