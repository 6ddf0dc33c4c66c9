"""Encoder (or one GEMM's) latency of two builds of qualam_rt, timed in alternation.

A code change to the kernels can only be judged against the code before it on the same
machine at the same time: this host's speed drifts by tens of percent within minutes, and
swings of +-15% last seconds. Build each version into its own folder; this script keeps one
worker process per build, set up and warmed up once, and lets them run in turn, a few calls
each (the other one waits, idle), flipping the order every round. It reports the per-round
ratio B / A and its median. Run A against itself first to see the noise floor. With --gap-ms,
each turn starts after that much idle time: on a 2-core AMD EPYC Zen 4 without it, the build
running second in a round was up to 1.8x slower at n=128 batch 1, in whichever order (the
other's OpenMP threads spinning, presumably); --gap-ms 200 removed that pattern.

    git worktree add /tmp/qrt_base <commit>
    pip install --no-deps --no-build-isolation --target /tmp/qrt_a /tmp/qrt_base
    pip install --no-deps --no-build-isolation --target /tmp/qrt_b .
    python bench/compare_builds.py /tmp/qrt_a /tmp/qrt_b --batch 32 --rounds 20

Each worker runs `python -S` with the build folder first on its path: an editable install of
qualam_rt in site-packages hooks imports before sys.path, and -S keeps that hook out.
Random MiniLM-L6-H384 weights, n = 384 tokens per sequence (or --length), full length (or with
--paper the paper's configuration (315,251,242,159,142,33)/384), static activation quantization (or with
--per-row every GEMM input quantized per row at run time, as in the shipped model). With
`--gemm M K N EPILOGUE` the workload is one fused GEMM instead (u8 [M, K] x s8 [N, K]^T,
epilogue bias, gelu, gelu_u8 (requantized output), residual or int32), timed in ms per call,
each call allocating its output (as a user's call does) or, with --out, writing into one
preallocated 64-byte aligned array (the kernel alone).

    python bench/compare_builds.py /tmp/qrt_a /tmp/qrt_b --gemm 4096 384 1536 gelu
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

WORKER = "--worker"


def worker(batch: int, length: int, repeats: int, threads: int, attention: str, paper: bool, per_row: bool, out: bool,
           gemm: list[str]) -> None:
    """Sets the workload up, warms it up and prints the path of the module it runs; then for
    every line read from stdin prints the median ms (per sequence, or per GEMM call) of
    `repeats` calls, until stdin closes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np

    import qualam_rt
    from common import PAPER, aligned_empty, random_minilm_encoder, time_call
    from qualam_rt import _C
    from qualam_rt import synthetic as syn

    qualam_rt.set_num_threads(threads)
    if gemm:
        M, K, N, epilogue = int(gemm[0]), int(gemm[1]), int(gemm[2]), gemm[3]
        rng = np.random.default_rng(0)
        W = _C.PackedWeight(rng.integers(-127, 128, (N, K), dtype=np.int8), np.full(N, 0.01, np.float32))
        A = rng.integers(0, 256, (M, K), dtype=np.uint8)
        bias, residual = rng.standard_normal(N).astype(np.float32), rng.standard_normal((M, N)).astype(np.float32)
        kw = {"int32": {"out_dtype": "int32"}, "bias": {"bias": bias}, "gelu": {"bias": bias, "gelu": True},
              "residual": {"bias": bias, "residual": residual},
              "gelu_u8": {"bias": bias, "gelu": True, "out_dtype": "uint8", "out_scale": 0.05, "out_zp": 40}}[epilogue]
        if out:
            kw["out"] = aligned_empty((M, N), {"int32": np.int32, "gelu_u8": np.uint8}.get(epilogue, np.float32))
        call, per = (lambda: _C.gemm(A, 0.02, 7, W, **kw)), 1
    else:
        enc, cfg = random_minilm_encoder(static=not per_row)
        ids, types, offsets = syn.random_batch(cfg, [length] * batch, seed=1)
        ratios = PAPER if paper else None
        call, per = (lambda: enc.forward(ids, types, offsets, ratios, attention=attention)), batch
    for _ in range(2):  # warm-up
        call()
    print(_C.__file__, flush=True)
    for _ in sys.stdin:
        print(1e3 * time_call(call, warmup=0, repeats=repeats)["median"] / per, flush=True)


class Build:
    """A worker process running one build's workload on request; idle (blocked on its stdin)
    while the other build runs."""

    def __init__(self, folder: str, args):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder, sysconfig.get_paths()["purelib"]]))
        self.proc = subprocess.Popen([sys.executable, "-S", __file__, WORKER, str(args.batch), str(args.length),
                                      str(args.repeats), str(args.threads), args.attention, str(int(args.paper)),
                                      str(int(args.per_row)), str(int(args.out)), *args.gemm], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        module = self.proc.stdout.readline().strip()
        if not module or not Path(module).resolve().is_relative_to(Path(folder).resolve()):
            raise SystemExit(f"{folder}: imported {module or 'nothing'} instead; is the folder a built package?")

    def time(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="folder with build A (the baseline)")
    ap.add_argument("b", help="folder with build B")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=384, help="tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per build per round (their median counts)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", choices=("fp32", "int16", "int8", "bf16"), default="int16")
    ap.add_argument("--paper", action="store_true", help="the paper's length configuration instead of full length")
    ap.add_argument("--per-row", action="store_true",
                    help="activations quantized per row at run time (the shipped model) instead of static calibration")
    ap.add_argument("--gemm", nargs=4, default=[], metavar=("M", "K", "N", "EPILOGUE"),
                    help="time one GEMM instead of the encoder; EPILOGUE: bias, gelu, gelu_u8, residual or int32")
    ap.add_argument("--out", action="store_true", help="with --gemm: into one preallocated output array")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="idle time before each turn (lets the other build's OpenMP threads stop spinning)")
    ap.add_argument("--labels", nargs=2, default=None, metavar=("A_LABEL", "B_LABEL"),
                    help="what each build is (e.g. the commits they were built from), for the results file")
    ap.add_argument("--name", default=None, help="write bench/results/<name>.{md,json}")
    args = ap.parse_args()

    builds = {"a": Build(args.a, args), "b": Build(args.b, args)}
    rows = []
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        ms = {}
        for label in order:
            time.sleep(args.gap_ms / 1e3)
            ms[label] = builds[label].time()
        rows.append({"round": r, "a_ms": ms["a"], "b_ms": ms["b"], "ratio": ms["b"] / ms["a"]})
        print(f"round {r}: A {ms['a']:.2f}  B {ms['b']:.2f} ms  B/A {rows[-1]['ratio']:.3f}", flush=True)
    for b in builds.values():
        b.close()
    ratios = sorted(x["ratio"] for x in rows)
    med = statistics.median(ratios)
    print(f"median B/A {med:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}, {sum(x < 1 for x in ratios)}/{len(ratios)} rounds B faster)")
    if args.name:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import header, write_results
        what = (f"GEMM ms per call, M={args.gemm[0]} K={args.gemm[1]} N={args.gemm[2]}, epilogue {args.gemm[3]}, "
                f"{'into one preallocated output' if args.out else 'a fresh output per call'}"
                if args.gemm else f"Encoder ms per sequence, n={args.length}, batch {args.batch}, "
                f"{'paper configuration' if args.paper else 'full length'}, {args.attention} attention, "
                f"{'per-row' if args.per_row else 'static'} activation quantization")
        a_name, b_name = args.labels or (args.a, args.b)
        md = [f"{what}, random weights; A = `{a_name}`, B = `{b_name}`; one warm worker process per build, the two "
              f"alternating ({args.repeats} calls per turn, their median), order flipped each round.", "",
              "| round | A ms | B ms | B / A |", "|---|---|---|---|"]
        md += [f"| {x['round']} | {x['a_ms']:.2f} | {x['b_ms']:.2f} | {x['ratio']:.3f} |" for x in rows]
        md += ["", f"Median B / A: **{med:.3f}** (range {ratios[0]:.3f}-{ratios[-1]:.3f})."]
        write_results(args.name, header(args.threads) | {"a": a_name, "b": b_name, "median_ratio": med}, rows, "\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7] == "1",
               sys.argv[8] == "1", sys.argv[9] == "1", sys.argv[10:])
    else:
        main()
