"""Training throughput on this CPU: milliseconds per example of a fine-tune step and of a LAT
(drop-and-restore) step, the code before the gathered sub-models ("masked", reproduced here)
against the current one ("gathered"), fp32 and bf16 autocast, all measured in the same run,
in interleaved rounds, on a real SQuAD length mix (384-token windows, stride 128, of held-out
training articles, batched by similar length as training batches them; synthetic lengths if
SQuAD is absent).

The masked step (the training code of 2026-12-05): the full model and every sub-model run
every token with explicit attention; sub-models mask the dropped tokens; each sub-model
draws its lengths per sequence; each pass has its own autocast region and backward pass.
Both steps call today's `Layer.attend` (since 2026-12-06 its scores and softmax take two passes
over [B, h, L, L] instead of four), so the masked column is the old step's structure, not its
exact time.
The gathered step (training/train.py lat_step): sub-models drop rows physically, one length
draw per batch, long windows take torch's fused attention where no probabilities are needed,
one autocast region and one backward pass.

    python bench/train_throughput.py --threads 2 --batches 4 --rounds 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402

SQUAD_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad" / "train-v1.1.json"


def masked_forward(model, batch, keeps=None):
    """The forward of the code before: every layer in the masked form, explicit attention."""
    import training.model as tm
    saved, tm.FUSED_ATTENTION_FROM = tm.FUSED_ATTENTION_FROM, 1 << 30
    try:
        x = model.embed(batch["input_ids"], batch["token_type_ids"])
        active = batch["attention_mask"].bool()
        for i, layer in enumerate(model.layers):
            x, active, _ = layer(x, active, None if keeps is None else keeps[i])
        logits = model.qa(x).float()
        return logits[..., 0], logits[..., 1]
    finally:
        tm.FUSED_ATTENTION_FROM = saved


def masked_lat_step(model, batch, cfg, gen, autocast):
    """The LAT step before: per-sequence length draws, a backward pass per model."""
    import torch
    from training.train import distill_loss, span_loss
    parts = cfg.num_sandwich + 2
    with autocast():
        start, end = masked_forward(model, batch)
        loss = span_loss(start, end, batch) / parts
    loss.backward()
    t_start, t_end = start.detach(), end.detach()
    n = batch["attention_mask"].sum(1)
    for k in range(cfg.num_sandwich + 1):
        lengths, prev = [], n
        for _ in range(model.config.layers):
            low = torch.ceil((1 - cfg.length_drop_ratio_bound) * prev.double()).long().clamp(min=1)
            cur = low if k == 0 else low + (torch.rand(prev.shape, generator=gen) * (prev - low + 1).double()).long().clamp(max=(prev - low))
            lengths.append(cur)
            prev = cur
        with autocast():
            s, e = masked_forward(model, batch, lengths)
            sub = distill_loss(s, e, t_start, t_end, batch["attention_mask"]) / parts
        sub.backward()


def length_mix_batches(count: int, batch: int, seed: int = 0):
    """`count` training-style batches (similar lengths, padded to the longest) of real windows."""
    import torch
    try:
        from training.data import Features, split_articles
        from training.model import load_qrt
        from tokenizers import Tokenizer
        _, held = split_articles(SQUAD_TRAIN, 20)
        tok = Tokenizer.from_str(load_qrt(Path(__file__).resolve().parents[1] / "qualam_rt" / "models" / "default.qrt")[1])
        feats = Features(tok, held[:1500])
        order = feats.batches(batch, shuffle=True, rng=np.random.default_rng(seed))
        picked = [order[i] for i in np.random.default_rng(seed).choice(len(order), count, replace=False)]
        return [feats.collate(ix) for ix in picked], "SQuAD held-out windows"
    except (OSError, ImportError, FileNotFoundError) as e:
        print("no SQuAD here, synthetic lengths:", e)
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            L = int(rng.integers(120, 385))
            out.append({"input_ids": torch.randint(1000, 30000, (batch, L)), "token_type_ids": torch.zeros(batch, L, dtype=torch.long),
                        "attention_mask": torch.ones(batch, L, dtype=torch.bool), "start": torch.zeros(batch, dtype=torch.long),
                        "end": torch.zeros(batch, dtype=torch.long)})
        return out, "synthetic lengths 120-384"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=4, help="batches of the length mix timed per case and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default="train_throughput")
    args = ap.parse_args()
    import torch
    from training.model import BertConfig, BertQA
    from training.train import TrainConfig, lat_step, native_bf16, span_loss
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = BertQA(BertConfig()).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the step's own cost; no weights change
    batches, source = length_mix_batches(args.batches, args.batch)
    cfg = TrainConfig(step="lat")
    gen = torch.Generator().manual_seed(0)

    def case(step, code, bf16):
        def autocast():
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

        def run(batch):
            if step == "lat":
                (masked_lat_step if code == "masked" else lat_step)(model, batch, cfg, gen, autocast)
            else:
                with autocast():
                    fwd = masked_forward(model, batch) if code == "masked" else model(
                        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
                    loss = span_loss(*fwd, batch)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    cases = [(s, c, b) for s in ("finetune", "lat") for b in (False, True) for c in ("masked", "gathered")]
    runs = {k: case(*k) for k in cases}
    examples = sum(len(b["start"]) for b in batches)
    for k in cases:  # warm-up
        runs[k](batches[0])
    times = {k: [] for k in cases}
    for r in range(args.rounds):
        for k in cases:
            t = time.perf_counter()
            for b in batches:
                runs[k](b)
            times[k].append((time.perf_counter() - t) / examples)
            print(k, f"{1e3 * times[k][-1]:.1f} ms/example", flush=True)
    rows = []
    for s in ("finetune", "lat"):
        for b in (False, True):
            old, new = (statistics.median(times[s, c, b]) for c in ("masked", "gathered"))
            rows.append({"step": s, "precision": "bf16 autocast" if b else "fp32", "masked_ms_per_example": 1e3 * old,
                         "gathered_ms_per_example": 1e3 * new, "speedup": old / new})
    ft = {r["precision"]: r["gathered_ms_per_example"] for r in rows if r["step"] == "finetune"}
    for r in rows:
        if r["step"] == "lat":
            r["lat_over_finetune"] = r["gathered_ms_per_example"] / ft[r["precision"]]
    mean_len = float(np.mean([b["attention_mask"].sum(1).float().mean().item() for b in batches]))
    md = [f"MiniLM-L6-H384, {args.batches} batches of {args.batch} ({source}; mean {mean_len:.0f} real tokens, padded to "
          f"each batch's longest), {args.threads} threads, median over {args.rounds} interleaved rounds. CPU native bf16: "
          f"{native_bf16()}.", "",
          "| step | precision | masked (before) ms/example | gathered (now) ms/example | speedup | LAT / fine-tune (now) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['step']} | {r['precision']} | {r['masked_ms_per_example']:.0f} | {r['gathered_ms_per_example']:.0f} | "
           f"{r['speedup']:.2f}x | {r.get('lat_over_finetune', float('nan')):.2f} |" for r in rows]
    write_results(args.name, header(args.threads) | {"source": source}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
