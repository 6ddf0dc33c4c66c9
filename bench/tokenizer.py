"""The native WordPiece tokenizer against `tokenizers` on real SQuAD pairs: the share of pairs
it handles (the rest fall back to `tokenizers`), that its windows are identical, and the time
per pair of each (same run, same pairs, 384-token windows with stride 128).

    python bench/tokenizer.py --every 10
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import featurize, squad  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--every", type=int, default=10, help="take every N-th question")
    args = ap.parse_args()
    engine = qualam_rt.Engine(args.model)
    tok, native = engine._tokenizer, engine._native_tokenizer
    rows = []
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        pairs = [(e.question, e.context) for e in squad.load_examples(DATA / name)[::args.every]]
        t = time.perf_counter()
        fast = [native(q, c, 384, 128, 64) for q, c in pairs]
        native_s = time.perf_counter() - t
        t = time.perf_counter()
        slow = [featurize._tokenizers_windows(tok, [p], 384, 128, 64)[0] for p in pairs]
        tokenizers_s = time.perf_counter() - t
        handled = [i for i, f in enumerate(fast) if f is not None]
        mismatched = sum(1 for i in handled if len(fast[i]) != len(slow[i]) or not all(
            np.array_equal(a, b) for fw, sw in zip(fast[i], slow[i]) for a, b in zip(fw, sw)))
        rows.append({"data": name, "pairs": len(pairs), "native_share": len(handled) / len(pairs),
                     "mismatched_windows": mismatched, "native_ms_per_pair": 1e3 * native_s / len(pairs),
                     "tokenizers_ms_per_pair": 1e3 * tokenizers_s / len(pairs),
                     "speedup": tokenizers_s / native_s})
        print(rows[-1])
    md = (f"Every {args.every}th SQuAD v1.1 question with its context, 384-token windows, stride 128. Native time "
          "includes the pairs it declines (it stops at the first character off its table).\n\n"
          "| data | pairs | native share | pairs whose windows differ | native ms/pair | tokenizers ms/pair | speedup |\n"
          "|---|---|---|---|---|---|---|\n")
    for r in rows:
        md += (f"| {r['data']} | {r['pairs']} | {r['native_share']:.1%} | {r['mismatched_windows']} | "
               f"{r['native_ms_per_pair']:.3f} | {r['tokenizers_ms_per_pair']:.3f} | {r['speedup']:.1f}x |\n")
    write_results("tokenizer", header(1), rows, md)


if __name__ == "__main__":
    main()
