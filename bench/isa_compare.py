"""The encoder on each kernel path, timed in the same run: ms per sequence and the speed
ratio of each path to the first one, with a per-op breakdown.

The encoder is MiniLM-L6-H384 with random weights and every GEMM input quantized per row at
run time, as in the shipped model (speed does not depend on the weights' values). Cases:
n=384 at batch 1 and 32, n=128 at batch 1, and a SQuAD length mix (held-out training
windows, packed 32 per call), at full length and at the paper's configuration as keep ratios
(315,251,242,159,142,33)/384. Every round times every (case, path) pair once, paths
alternating, so a slow phase of the shared machine weighs on all of them alike; the ratio is
the median over rounds of the per-round ratio.

    python bench/isa_compare.py --threads 2 --paths avx512vnni amx
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER, header, random_minilm_encoder, write_results  # noqa: E402
from encoder_bench import squad_window_lengths  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import _C  # noqa: E402
from qualam_rt import synthetic as syn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", nargs="+", default=["avx512vnni", "amx"])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--mix", type=int, default=256)
    ap.add_argument("--attention", default="auto", choices=("auto", "fp32", "int16", "int8"),
                    help="auto: what Engine runs by default, bf16 on amx and int16 elsewhere")
    ap.add_argument("--name", default="isa_compare")
    args = ap.parse_args()
    qualam_rt.set_num_threads(args.threads)
    missing = [p for p in args.paths if p not in _C.supported_isas()]
    if missing:
        sys.exit(f"this CPU cannot run {missing} (amx: {_C.amx_status()}); supported: {_C.supported_isas()}")
    enc, cfg = random_minilm_encoder(static=False)
    mix = squad_window_lengths(args.mix)
    cases = []
    for name, lengths in (("n=384 bs=1", [384]), ("n=384 bs=32", [384] * 32), ("n=128 bs=1", [128]), ("SQuAD mix bs=32", None)):
        for cname, ratios in (("full", None), ("paper ratios", PAPER)):
            if lengths is None:
                batches = [syn.random_batch(cfg, mix[i:i + 32].tolist(), seed=i) for i in range(0, len(mix), 32)]
            else:
                batches = [syn.random_batch(cfg, lengths, seed=1)]
            cases.append((name, cname, ratios, batches, len(mix) if lengths is None else len(lengths)))

    def attention_of(path):
        return args.attention if args.attention != "auto" else "bf16" if path == "amx" else "int16"

    def run(ratios, batches):
        attention = attention_of(_C.isa())
        for i, t, o in batches:
            enc.forward(i, t, o, ratios, attention=attention)

    before = _C.isa()
    times = {(k, p): [] for k in range(len(cases)) for p in args.paths}
    try:
        for p in args.paths:
            _C.set_isa(p)
            for _, _, ratios, batches, _ in cases:
                run(ratios, batches)  # warm-up
        for _ in range(args.repeats):
            for k, (_, _, ratios, batches, n_seq) in enumerate(cases):
                calls = 1 if n_seq > 1 else 5
                for p in args.paths:
                    _C.set_isa(p)
                    start = time.perf_counter()
                    for _ in range(calls):
                        run(ratios, batches)
                    times[k, p].append((time.perf_counter() - start) / calls / n_seq)
        breakdown = {}
        for p in args.paths:
            _C.set_isa(p)
            i, t, o = cases[1][3][0]  # n=384 bs=32 full
            breakdown[p] = enc.forward(i, t, o, None, profile=True, attention=attention_of(p))["op_seconds"]
    finally:
        _C.set_isa(before)

    base = args.paths[0]
    rows = []
    for k, (name, cname, _, _, _) in enumerate(cases):
        row = {"setting": name, "config": cname}
        for p in args.paths:
            row[f"{p}_ms"] = 1e3 * statistics.median(times[k, p])
            row[f"{p}_speedup"] = statistics.median(b / x for b, x in zip(times[k, base], times[k, p]))
        rows.append(row)
        print(row, flush=True)
    attentions = {p: attention_of(p) for p in args.paths}
    meta = header(args.threads) | {"paths": args.paths, "attention": attentions, "repeats": args.repeats,
                                   "amx_status": _C.amx_status(), "breakdown_n384_bs32_seconds": breakdown}
    md = [f"Encoder (MiniLM-L6-H384, random weights, per-row INT8 GEMM inputs; attention "
          + ", ".join(f"{a} on `{p}`" for p, a in attentions.items()) + "), "
          f"ms per sequence (median of {args.repeats} rounds, paths alternating in each round); speedup = median "
          f"per-round ratio to `{base}`. SQuAD mix: {len(mix)} held-out training windows, mean {mix.mean():.0f} tokens.", "",
          "| setting | config | " + " | ".join(f"{p} ms | {p} speedup" for p in args.paths) + " |",
          "|---|---|" + "---|---|" * len(args.paths)]
    md += [f"| {r['setting']} | {r['config']} | " + " | ".join(f"{r[p + '_ms']:.2f} | {r[p + '_speedup']:.2f}x" for p in args.paths)
           + " |" for r in rows]
    md += ["", "Per-op seconds at n=384 bs=32, full length (one profiled call):", "",
           "| op | " + " | ".join(args.paths) + " |", "|---|" + "---|" * len(args.paths)]
    md += [f"| {op} | " + " | ".join(f"{breakdown[p][op] * 1e3:.1f} ms" for p in args.paths) + " |" for op in breakdown[base]]
    write_results(args.name, meta, rows, "\n".join(md))


if __name__ == "__main__":
    main()
