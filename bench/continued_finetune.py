"""Held-out F1 of the shipped model after a short continued fine-tune on the span labels: does
more training with labels help a converged model, at which learning rate and precision?

Each setting trains a fresh copy of the model for --steps batches of 16 windows (384/128) of
training questions (AdamW, no weight decay, 10 warm-up steps, then a constant rate) and scores
the held-out probe questions, in bf16 autocast and fp32.

    python bench/continued_finetune.py --settings bf16:1e-5 fp32:1e-5 bf16:2e-6 --steps 150
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402
from training.data import Features, evaluate_model, split_articles  # noqa: E402
from training.model import load_qrt  # noqa: E402
from training.train import DEFAULT_SQUAD_TRAIN, span_loss  # noqa: E402


def probe_f1(model, probe: Features) -> dict:
    out = {}
    for precision in ("bf16", "fp32"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out[precision] = round(evaluate_model(model, probe, desc="probe")["f1"], 2)
    return out


def continued(model_path: str, train: list, probe: Features, tok, precision: str, lr: float, steps: int) -> dict:
    model, _ = load_qrt(model_path)
    rng = np.random.default_rng(0)
    feats = Features(tok, [train[i] for i in rng.choice(len(train), steps * 16, replace=False)], 384, 128, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    t0 = time.time()
    for i, idx in enumerate(feats.batches(16, shuffle=True, rng=np.random.default_rng(0))[:steps]):
        b = feats.collate(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            s, e = model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
            loss = span_loss(s, e, b)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (i + 1) / 10)
        opt.step()
        opt.zero_grad()
    return {"precision": precision, "lr": lr, "steps": steps, "train_s": round(time.time() - t0)} | {
        f"probe_f1_{k}": v for k, v in probe_f1(model, probe).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qualam_rt/models/default.qrt")
    ap.add_argument("--settings", nargs="+", default=["bf16:1e-5", "fp32:1e-5", "bf16:2e-6"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--probe-examples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="continued_finetune")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, held = split_articles(DEFAULT_SQUAD_TRAIN, 20)
    _, tok_json = load_qrt(args.model)
    tok = Tokenizer.from_str(tok_json)
    probe = Features(tok, held[:args.probe_examples], 384, 128, 64)
    rows = [{"precision": "-", "lr": 0.0, "steps": 0, "train_s": 0} | {
        f"probe_f1_{k}": v for k, v in probe_f1(load_qrt(args.model)[0], probe).items()}]
    for setting in args.settings:
        precision, lr = setting.split(":")
        rows.append(continued(args.model, train, probe, tok, precision, float(lr), args.steps))
        print(rows[-1])
    table = ["| precision | lr | steps | probe F1 (bf16 eval) | probe F1 (fp32 eval) |", "|---|---|---|---|---|"]
    table += [f"| {r['precision']} | {r['lr']:g} | {r['steps']} | {r['probe_f1_bf16']} | {r['probe_f1_fp32']} |" for r in rows]
    text = (f"Model `{args.model}`; {args.probe_examples} held-out probe questions (the last 20 training "
            f"articles); batches of 16 windows 384/128 of other training questions.\n\n" + "\n".join(table))
    write_results(args.name, header(args.threads), rows, text)


if __name__ == "__main__":
    main()
