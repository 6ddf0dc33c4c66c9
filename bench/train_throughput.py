"""Training throughput on this CPU: examples per second of a fine-tune step and of a LAT
(drop-and-restore) step, fp32 against bf16 autocast, on MiniLM-L6-H384 at a fixed window
length and batch size, measured in the same run.

    python bench/train_throughput.py --threads 2 --seq-len 256 --batch 16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, time_call, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch
    from training.model import BertConfig, BertQA
    from training.train import TrainConfig, lat_step, span_loss
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = BertQA(BertConfig()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    B, L = args.batch, args.seq_len
    batch = {"input_ids": torch.randint(1000, 30000, (B, L)), "token_type_ids": torch.zeros(B, L, dtype=torch.long),
             "attention_mask": torch.ones(B, L, dtype=torch.bool), "start": torch.randint(0, L, (B,)),
             "end": torch.randint(0, L, (B,))}
    cfg = TrainConfig(step="lat")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for step in ("finetune", "lat"):
        for bf16 in (False, True):
            def autocast():
                return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

            def one():
                if step == "lat":
                    lat_step(model, batch, cfg, gen, autocast)
                else:
                    with autocast():
                        s, e = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
                        loss = span_loss(s, e, batch)
                    loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            t = time_call(one, warmup=1, repeats=args.repeats)
            row = {"step": step, "precision": "bf16 autocast" if bf16 else "fp32", "examples_per_s": B / t["median"],
                   "ms_per_example": 1e3 * t["median"] / B}
            rows.append(row)
            print(row, flush=True)
    md = [f"MiniLM-L6-H384, batch {B}, {L} tokens per window, {args.threads} threads.", "",
          "| step | precision | examples/s | ms per example |", "|---|---|---|---|"]
    md += [f"| {r['step']} | {r['precision']} | {r['examples_per_s']:.2f} | {r['ms_per_example']:.0f} |" for r in rows]
    write_results("train_throughput", header(args.threads), rows, "\n".join(md))


if __name__ == "__main__":
    main()
