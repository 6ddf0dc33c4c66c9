"""At which layer a length configuration drops the gold answer's start token, and what that costs:
held-out training windows that hold an answer, the FP32 PyTorch model (masked drop-and-restore,
the same math as the engine). A start token dropped at layer i keeps its layer-(i-1) state, so
the QA head rarely picks it; `answer_keep_loss` (training/train.py) trains against exactly this.

    python bench/answer_drops.py runs/ft_epoch/model.pt runs/lat_cycle15/model.pt --config tokens:315,251,242,159,142,33

A model is a training `model.pt` (tokenizer.json beside it) or a `.qrt` (its weights dequantized).
Per model and layer: how many windows lose the start token there, and the full model's and the
sub-model's start accuracy (argmax of the start logits) on those windows. Much less noisy than
held-out F1 for telling whether a run teaches the early layers to keep the answer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402
from held_out import SQUAD_TRAIN  # noqa: E402

from qualam_rt.cli import parse_length_config  # noqa: E402
from training.data import Features, load_tokenizer, split_articles  # noqa: E402
from training.model import keep_counts, load_qrt  # noqa: E402
from training.train import load_model  # noqa: E402


def load(path: str):
    """(model, tokenizer) of a model.pt or a .qrt."""
    from tokenizers import Tokenizer
    if path.endswith(".qrt"):
        model, tokenizer_json = load_qrt(path)
        return model.eval(), Tokenizer.from_str(tokenizer_json)
    return load_model(path).eval(), load_tokenizer(Path(path).parent)


@torch.inference_mode()
def start_drops(model, batch, config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: the layer (1-based; 0 = never) that drops the gold start token, and whether the
    sub-model's and the full model's start argmax is the gold start."""
    start = batch["start"]
    x = model.embed(batch["input_ids"], batch["token_type_ids"])
    active = batch["attention_mask"].clone()
    keeps = keep_counts(active.sum(1), config)
    dropped_at = torch.zeros_like(start)
    rows = torch.arange(len(start))
    for i, layer in enumerate(model.layers):
        x, kept, _ = layer(x, active, keeps[i])
        lost = active[rows, start] & ~kept[rows, start]
        dropped_at[lost] = i + 1
        active = kept
    sub = model.qa(x)[..., 0].masked_fill(~batch["attention_mask"], -1e4).argmax(-1)
    full = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])[0]
    full = full.masked_fill(~batch["attention_mask"], -1e4).argmax(-1)
    return dropped_at.numpy(), (sub == start).numpy(), (full == start).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model.pt (tokenizer.json beside it) or MODEL.qrt")
    ap.add_argument("--config", default="tokens:315,251,242,159,142,33", help="length configuration (CLI form)")
    ap.add_argument("--min-tokens", type=int, default=160, help="only windows longer than this (shorter ones "
                    "lose no tokens in the first four layers under the paper's budgets)")
    ap.add_argument("--held-out-articles", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="answer_drops")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = parse_length_config(args.config)
    if isinstance(config, str):
        raise SystemExit(f"--config must drop tokens (ratios or tokens:...), not {args.config!r}")
    _, held = split_articles(SQUAD_TRAIN, args.held_out_articles)
    rows, md = [], []
    for path in args.models:
        model, tokenizer = load(path)
        feats = Features(tokenizer, held)
        chosen = np.flatnonzero((feats.lengths > args.min_tokens) & (feats.labels[:, 0] > 0))
        parts = [start_drops(model, feats.collate(chosen[i:i + 32]), config) for i in range(0, len(chosen), 32)]
        layer, sub_ok, full_ok = (np.concatenate(p) for p in zip(*parts))
        for at in range(len(model.layers) + 1):
            here = layer == at
            rows.append({"model": path, "dropped_at": at, "windows": int(here.sum()),
                         "sub_start_acc": float(sub_ok[here].mean()) if here.any() else None,
                         "full_start_acc": float(full_ok[here].mean()) if here.any() else None})
        early = (layer >= 1) & (layer <= 3)
        rows.append({"model": path, "summary": True, "windows": len(chosen), "dropped_layers_1_3": int(early.sum()),
                     "start_acc_lost": float(full_ok.mean() - sub_ok.mean())})
        print(rows[-1], flush=True)
        md += [f"`{path}`: {len(chosen)} windows; the start token dropped in layers 1-3 in {int(early.sum())} "
               f"({early.mean():.1%}); start accuracy full {full_ok.mean():.3f}, sub-model {sub_ok.mean():.3f}.", "",
               "| start dropped at layer | windows | sub-model start accuracy | full model start accuracy |", "|---|---|---|---|"]
        md += [f"| {r['dropped_at'] or 'never'} | {r['windows']} | "
               + (f"{r['sub_start_acc']:.3f} | {r['full_start_acc']:.3f} |" if r["windows"] else "- | - |")
               for r in rows[-len(model.layers) - 2:-1]] + [""]
    intro = (f"Held-out windows (last {args.held_out_articles} SQuAD v1.1 training articles) longer than "
             f"{args.min_tokens} tokens that hold an answer; configuration `{args.config}`; FP32 PyTorch model.")
    write_results(args.name, header(args.threads), rows, intro + "\n\n" + "\n".join(md))


if __name__ == "__main__":
    main()
