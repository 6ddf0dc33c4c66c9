"""Latency of several qualam_rt models or configurations, timed interleaved in one run, so a
choice between them (e.g. which GEMM inputs to quantize per row) rests on same-run ratios.

    python bench/models_speed.py runs/a.qrt:full runs/b.qrt:full runs/b.qrt@fp32 --name models_speed

Specs as in held_out.py: MODEL.qrt[:full|:r1,...][@fp32|@int16|@int8]. Settings: n=384 at
batch 1 and 32, n=128 at batch 1, and windows of SQuAD dev questions (packed batches of 32).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import engine_from_spec, header, interleaved_ms_per_sample, synthetic_windows, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import squad  # noqa: E402

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "dev-v1.1.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mix", type=int, default=256, help="SQuAD dev windows in the length mix")
    ap.add_argument("--name", default="models_speed")
    args = ap.parse_args()
    qualam_rt.set_num_threads(args.threads)
    engines = {spec: engine_from_spec(spec, args.threads) for spec in args.models}
    first = next(iter(engines.values()))
    vocab = first.architecture["vocab_size"]
    dev = squad.load_examples(DEV)[:args.mix]
    mix = first.windows([(e.question, e.context) for e in dev])[:args.mix]
    settings = [("n=384 bs=1", synthetic_windows(384, 1, vocab), 1), ("n=384 bs=32", synthetic_windows(384, 32, vocab), 32),
                ("n=128 bs=1", synthetic_windows(128, 1, vocab), 1),
                (f"SQuAD dev mix ({len(mix)} windows, mean {np.mean([len(w.input_ids) for w in mix]):.0f})", mix, 32)]
    rows = [{"model": spec} for spec in engines]
    for name, windows, batch in settings:
        reps = {spec: args.repeats * (5 if len(windows) == 1 else 1) for spec in engines}
        got = interleaved_ms_per_sample({spec: (e.logits, False) for spec, e in engines.items()}, windows, batch, reps)
        for row in rows:
            row[name] = got[row["model"]]
        print(name, {k: round(v, 2) for k, v in got.items()}, flush=True)
    cols = [name for name, _, _ in settings]
    base = rows[0]
    md = [f"Kernel path `{qualam_rt.isa()}`. ms per window (median, all models interleaved round by round); "
          "in brackets the ratio to the first row.", "",
          "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    md += [f"| `{r['model']}` | " + " | ".join(f"{r[c]:.2f} ({r[c] / base[c]:.2f})" for c in cols) + " |" for r in rows]
    write_results(args.name, header(args.threads) | {"isa": qualam_rt.isa()}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
