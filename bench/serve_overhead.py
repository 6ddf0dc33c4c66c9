"""What HTTP adds to one question at a time: `qualam-rt serve` under several OpenMP settings
against Engine.answer in-process, each server in its own process on loopback, one blocking
keep-alive client (the lightest a client can be), timed in interleaved rounds.

Every round times, per setting, `--requests` POST /answer of SQuAD dev questions (median
round trip) and the same questions through Engine.answer in this process; the overhead is the
per-round ratio minus 1, its median over rounds reported. The servers wait idle (OpenMP
workers asleep) while another is timed. A bad request's round trip (POST {}) shows the cost
of HTTP and JSON alone.

    python bench/serve_overhead.py --settings OMP_WAIT_POLICY=passive,GOMP_SPINCOUNT=0 default GOMP_SPINCOUNT=20000
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402
from serve_load import DEV, free_port  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import squad  # noqa: E402


class Client:
    """Blocking keep-alive HTTP/1.1 POSTs of JSON on one socket."""

    def __init__(self, port: int):
        for _ in range(300):
            try:
                self.sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def post(self, body: dict) -> bytes:
        payload = json.dumps(body).encode()
        self.sock.sendall(b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        length = 0
        while (line := self.file.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return self.file.read(length)


def median_ms(fn, items) -> float:
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["OMP_WAIT_POLICY=passive,GOMP_SPINCOUNT=0", "default"],
                    help="server environments: KEY=VALUE,... or 'default' (the server's own choice)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="serve_overhead")
    args = ap.parse_args()
    examples = squad.load_examples(DEV)[:50]
    bodies = [{"question": examples[i % 50].question, "context": examples[i % 50].context} for i in range(args.requests)]
    engine = qualam_rt.Engine(threads=args.threads)
    servers, clients = [], {}
    try:
        for s in args.settings:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            env |= dict(kv.split("=", 1) for kv in s.split(",")) if s != "default" else {}
            port = free_port()
            servers.append(subprocess.Popen([sys.executable, "-m", "qualam_rt.cli", "serve", "--port", str(port),
                                             "--threads", str(args.threads)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
            clients[s] = Client(port)
        for s, c in clients.items():  # warm-up
            for b in bodies[:20]:
                c.post(b)
        for b in bodies[:20]:
            engine.answer(b["question"], b["context"])
        ratios = {s: [] for s in args.settings}
        bad = {s: [] for s in args.settings}
        local = []
        for r in range(args.rounds):
            order = args.settings if r % 2 == 0 else args.settings[::-1]
            inproc = median_ms(lambda b: engine.answer(b["question"], b["context"]), bodies)
            local.append(inproc)
            for s in order:
                http = median_ms(clients[s].post, bodies)
                bad[s].append(median_ms(clients[s].post, [{}] * 100))
                ratios[s].append(http / inproc)
                print(f"round {r} {s}: {http:.3f} ms over {inproc:.3f} in-process ({http / inproc - 1:+.1%})", flush=True)
    finally:
        for p in servers:
            p.terminate()
            p.wait()
    rows = [{"setting": s, "overhead": statistics.median(ratios[s]) - 1, "overhead_range": [min(ratios[s]) - 1, max(ratios[s]) - 1],
             "bad_request_ms": statistics.median(bad[s]), "in_process_ms": statistics.median(local)} for s in args.settings]
    md = [f"`qualam-rt serve --threads {args.threads}` per setting, one blocking keep-alive client on loopback, {args.requests} "
          f"SQuAD dev questions per setting and round, {args.rounds} interleaved rounds; Engine.answer in-process timed in each "
          f"round (median {statistics.median(local):.3f} ms).", "",
          "| server environment | HTTP adds (median of rounds) | range | bad request round trip (ms) |", "|---|---|---|---|"]
    md += [f"| {r['setting']} | {r['overhead']:+.1%} | {r['overhead_range'][0]:+.1%} to {r['overhead_range'][1]:+.1%} | "
           f"{r['bad_request_ms']:.3f} |" for r in rows]
    write_results(args.name, header(args.threads), rows, "\n".join(md))


if __name__ == "__main__":
    main()
