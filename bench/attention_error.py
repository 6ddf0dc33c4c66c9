"""Logit error of the int16 and INT8 attention arithmetic against fp32 attention, on the numpy
float reference (no activation quantization, whose rounding would turn any perturbation into
whole quantization steps): what each attention path itself costs a model.

    python bench/attention_error.py --model qualam_rt/models/default.qrt --windows 12

Windows of questions from the held-out training articles (never trained on).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import reference as ref  # noqa: E402
from qualam_rt import squad  # noqa: E402
from qualam_rt.engine import default_model_path  # noqa: E402
from qualam_rt.model_file import engine_tensors, read_model  # noqa: E402

SQUAD_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "train-v1.1.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--held-out-articles", type=int, default=20)
    ap.add_argument("--name", default="attention_error")
    args = ap.parse_args()
    meta, tensors = read_model(args.model)
    tensors = engine_tensors(tensors)
    held = squad.load_examples(SQUAD_TRAIN, slice(-args.held_out_articles, None))[:args.windows]
    windows = qualam_rt.Engine(args.model).windows([(e.question, e.context) for e in held])[:args.windows]

    def logits(attention):
        r = ref.ReferenceEncoder(meta["architecture"], tensors, "fp32", attention=attention)
        return [r.sequence(w.input_ids, w.token_type_ids)[0] for w in windows]

    want = logits("fp32")
    scale = max(float(np.abs(x).max()) for x in want)
    rows = []
    for attention in ("int16", "int8"):
        err = [float(np.abs(g - w).max()) for g, w in zip(logits(attention), want)]
        rows.append({"attention": attention, "max_abs_error": max(err), "mean_window_max_abs_error": float(np.mean(err)),
                     "logit_scale": scale})
        print(rows[-1], flush=True)
    md = [f"`{args.model}`, {len(windows)} windows of held-out training questions; largest |logit| with fp32 "
          f"attention {scale:.2f}. Error = |logits - logits with fp32 attention|, per window its maximum.", "",
          "| attention | max error | mean of the per-window max |", "|---|---|---|"]
    md += [f"| {r['attention']} | {r['max_abs_error']:.4f} | {r['mean_window_max_abs_error']:.4f} |" for r in rows]
    write_results(args.name, header(1), rows, "\n".join(md))


if __name__ == "__main__":
    main()
