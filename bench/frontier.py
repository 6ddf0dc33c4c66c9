"""F1 against MACs along a model's searched frontier, FP32 and INT8 (the paper's Figure 2).

Every frontier configuration stored in the .qrt file is evaluated on SQuAD v1.1 dev with the
FP32 PyTorch model (the drop-and-restore checkpoint the file was exported from) and with the
INT8 engine; MACs are the encoder's on the same dev windows, as a fraction of BERT-base's. Each
row gives INT8 - FP32 on the same questions with that paired difference's standard error;
`--no-frontier` evaluates only full length and the `--config` configurations (to afford more
questions).

    python bench/frontier.py --qrt model.qrt --checkpoint runs/lat/model.pt --eval-examples 1000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, header, paired_difference, write_results  # noqa: E402
from held_out import config_text  # noqa: E402
from table1 import DEV, torch_logits_fn  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import decode, squad  # noqa: E402
from qualam_rt.cost import bert_base_macs, encoder_macs  # noqa: E402


def question_f1(infer, examples, windows) -> list[float]:
    return squad.question_scores(examples, decode.predict(examples, windows, infer, 32, progress="dev"))[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qrt", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--eval-examples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points", type=int, default=0, help="frontier configurations evaluated, evenly spaced (0 = all)")
    ap.add_argument("--no-frontier", action="store_true", help="only full length and the --config configurations")
    ap.add_argument("--config", action="append", default=[],
                    help="another configuration to evaluate: r1,...,r6, tokens:b1,...,b6 or default (repeatable)")
    ap.add_argument("--name", default="frontier")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from training.train import load_model
    engine = qualam_rt.Engine(args.qrt, threads=args.threads)
    model = load_model(args.checkpoint).eval()
    examples = squad.load_examples(DEV)[:args.eval_examples]
    windows = engine.windows([(e.question, e.context) for e in examples])
    base = sum(bert_base_macs(len(w.input_ids)) for w in windows)
    full = sum(encoder_macs(engine.architecture, len(w.input_ids)) for w in windows)
    front = [{"tokens": tuple(p["tokens"])} if "tokens" in p else tuple(p["ratios"]) for p in engine.frontier]
    if args.no_frontier:
        front = []
    if args.points and len(front) > args.points:
        front = [front[i] for i in sorted(set(np.linspace(0, len(front) - 1, args.points).round().astype(int)))]
    from qualam_rt.cli import parse_length_config
    def resolve(text):  # "default": the file's own default configuration, as a frontier point is given
        c = parse_length_config(text)
        if c == "full":
            return None
        if c == "default":
            c = engine.info()["default_config"]
            return {"tokens": tuple(c["tokens"])} if isinstance(c, dict) else tuple(c)
        return c
    configs = [None] + front + [resolve(c) for c in args.config]
    rows = []
    for ratios in configs:
        macs = sum(encoder_macs(engine.architecture, len(w.input_ids), ratios) for w in windows) / base
        e8 = qualam_rt.Engine(args.qrt, threads=args.threads, length_config="full" if ratios is None else ratios)
        f1_int8 = question_f1(e8.logits, examples, windows)
        f1_fp32 = question_f1(torch_logits_fn(model, ratios), examples, windows)
        diff, se = paired_difference(f1_int8, f1_fp32)
        row = {"config": ratios, "macs_vs_bert_base": macs, "real_macs_vs_full": macs * base / full,
               "f1_int8": float(100.0 * np.mean(f1_int8)), "f1_fp32": float(100.0 * np.mean(f1_fp32)),
               "int8_minus_fp32": diff, "int8_minus_fp32_se": se}
        rows.append(row)
        print(row, flush=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows.sort(key=lambda r: r["macs_vs_bert_base"])
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["macs_vs_bert_base"] for r in rows]
    ax.plot(x, [r["f1_fp32"] for r in rows], "o-", label="LA-MiniLM FP32 (PyTorch)")
    ax.plot(x, [r["f1_int8"] for r in rows], "s--", label="QuaLA-MiniLM INT8 (qualam_rt)")
    ax.set_xlabel("encoder MACs / BERT-base MACs (same dev windows)")
    ax.set_ylabel(f"F1 (first {len(examples)} SQuAD v1.1 dev questions)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=130)
    md = [f"First {len(examples)} SQuAD v1.1 dev questions; MACs on their windows' real tokens.", "",
          "| configuration | MACs vs BERT-base | MACs vs full length | F1 FP32 | F1 INT8 | INT8 - FP32 (± standard error) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {config_text(r['config'])} | {r['macs_vs_bert_base']:.3f} | {r['real_macs_vs_full']:.3f} | "
           f"{r['f1_fp32']:.2f} | {r['f1_int8']:.2f} | {r['int8_minus_fp32']:+.2f} ± {r['int8_minus_fp32_se']:.2f} |"
           for r in rows]
    write_results(args.name, header(args.threads), rows, "\n".join(md))


if __name__ == "__main__":
    main()
