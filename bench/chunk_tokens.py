"""Time per window of one forward call over a batch, as the call's chunk size varies.

Encoder.forward runs a batch as chunks of whole sequences of at most `chunk_tokens` tokens
(csrc/encoder.cpp): the results are the same bits at every chunk size (tests/test_encoder.py),
only the time changes. Batches of 32 windows: n=384 at full length and with the paper's
token budgets, and real SQuAD windows (questions of the last 20 training articles, held out
from training); every chunk size timed interleaved in one run, ratio to one chunk per call.

    python bench/chunk_tokens.py --threads 2 --name chunk_tokens
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER_TOKENS, header, interleaved_ms_per_sample, synthetic_windows, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import featurize, squad  # noqa: E402

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "train-v1.1.json"
WHOLE = 10**9  # one chunk per call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a .qrt file (default: the bundled model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--chunks", type=int, nargs="+", default=[384, 768, 1536, 3072, 6144, WHOLE])
    ap.add_argument("--mix", type=int, default=256, help="held-out SQuAD windows in the length mix")
    ap.add_argument("--name", default="chunk_tokens")
    args = ap.parse_args()
    qualam_rt.set_num_threads(args.threads)
    engine = qualam_rt.Engine(args.model, threads=args.threads, length_config="full")
    vocab = engine.architecture["vocab_size"]
    held = squad.load_examples(TRAIN, slice(-20, None))
    mix = engine.windows([(e.question, e.context) for e in held[:args.mix]])[:args.mix]
    settings = [("n=384 full", synthetic_windows(384, 32, vocab), None),
                ("n=384 paper budgets", synthetic_windows(384, 32, vocab), PAPER_TOKENS),
                (f"SQuAD mix full ({len(mix)} windows, mean {np.mean([len(w.input_ids) for w in mix]):.0f})", mix, None)]

    def infer(chunk: int, tokens):
        def run(windows):
            ids, types, offsets = featurize.pack(windows)
            return engine._encoder.forward(ids, types, offsets, keep_tokens=tokens, attention=engine.attention,
                                           threads=args.threads, chunk_tokens=chunk)
        return run

    label = {c: "one chunk" if c == WHOLE else str(c) for c in args.chunks}
    rows = [{"chunk_tokens": label[c]} for c in args.chunks]
    for name, windows, tokens in settings:
        got = interleaved_ms_per_sample({c: (infer(c, tokens), False) for c in args.chunks}, windows, 32,
                                        {c: args.repeats for c in args.chunks})
        for row, c in zip(rows, args.chunks):
            row[name] = got[c]
        print(name, {label[c]: round(v, 3) for c, v in got.items()}, flush=True)
    cols = [name for name, _, _ in settings]
    whole = rows[-1] if args.chunks[-1] == WHOLE else rows[0]
    md = [f"Model `{engine.path.name}`, kernel path `{qualam_rt.isa()}`, attention `{engine.attention}`, batches of "
          f"32 windows. ms per window (median of {args.repeats} interleaved rounds); in brackets the ratio to "
          f"`{whole['chunk_tokens']}`.", "",
          "| chunk_tokens | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    md += [f"| {r['chunk_tokens']} | " + " | ".join(f"{r[c]:.3f} ({r[c] / whole[c]:.2f})" for c in cols) + " |"
           for r in rows]
    write_results(args.name, header(args.threads) | {"isa": qualam_rt.isa()}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
