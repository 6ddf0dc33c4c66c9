"""Step f) `distill`: MiniLMv2 multi-head self-attention relation distillation.

A task-agnostic student learns the self-attention *relations* of one teacher layer: for
each of queries, keys and values (Q-Q, K-K, V-V), the vectors of a layer are split into
`relation_heads` heads (independent of either model's attention heads, so teacher and
student hidden sizes may differ) and the relation is softmax(A A^T / sqrt(d_head)) over the
sequence. The loss is the KL divergence from the teacher's relations (of `teacher_layer`;
MiniLMv2 uses an upper-middle layer of large teachers) to the student's last layer's,
averaged over the three types, heads and real query rows. Text: SQuAD contexts.

    python -m training.distill --teacher path/to/bert --out runs/distill --student-layers 6 --student-hidden 384
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from qualam_rt import squad
from training.data import load_tokenizer
from training.model import BertConfig, BertQA
from training.train import DEFAULT_SQUAD_TRAIN, initial_model, save_model


@dataclass
class DistillConfig:
    teacher: str = "minilm"          # as TrainConfig.init
    tokenizer: str = ""              # default: the teacher's
    out: str = "runs/distill"
    squad_train: str = DEFAULT_SQUAD_TRAIN
    student_layers: int = 4
    student_hidden: int = 256
    student_heads: int = 8
    student_intermediate: int = 1024
    teacher_layer: int = -1          # 0-based; -1 = last
    relation_heads: int = 16
    max_seq_len: int = 128
    batch_size: int = 16
    steps: int = 1000
    lr: float = 5e-4
    seed: int = 0
    threads: int = 0


def layer_qkv(model: BertQA, ids, types, mask, layer: int) -> tuple[torch.Tensor, ...]:
    """Q, K, V ([B, L, H] each) computed by `layer` of the full (no-drop) model."""
    L = ids.shape[1]
    x = model.emb_ln(model.word(ids) + model.position(torch.arange(L))[None] + model.token_type(types))
    for i, blk in enumerate(model.layers):
        if i == layer:
            return blk.qkv(x).chunk(3, dim=-1)
        x, _, _ = blk(x, mask, None)
    raise IndexError(f"layer {layer} out of range")


def relations(x: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax of scaled dot products between positions, per relation head: [B, R, L, L]."""
    B, L, H = x.shape
    if H % heads:
        raise ValueError(f"hidden size {H} is not divisible by {heads} relation heads")
    d = H // heads
    v = x.view(B, L, heads, d).transpose(1, 2)
    scores = v @ v.transpose(-1, -2) / math.sqrt(d)
    return F.log_softmax(scores.float().masked_fill(~mask[:, None, None, :], -1e4), dim=-1)


def relation_loss(teacher_qkv, student_qkv, heads: int, mask: torch.Tensor) -> torch.Tensor:
    rows = mask[:, None, :, None].float()
    total = 0.0
    for t, s in zip(teacher_qkv, student_qkv):
        lt, ls = relations(t, heads, mask), relations(s, heads, mask)
        kl = (lt.exp() * (lt - ls)).sum(-1, keepdim=True) * rows
        total = total + kl.sum() / (rows.sum() * heads)
    return total / 3


def text_batches(tokenizer, path: str, max_len: int, batch: int, rng: np.random.Generator):
    contexts = sorted({e.context for e in squad.load_examples(path)})
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len)
    while True:
        pick = [contexts[i] for i in rng.integers(0, len(contexts), batch)]
        enc = tokenizer.encode_batch(pick)
        L = max(len(e.ids) for e in enc)
        ids = torch.zeros(batch, L, dtype=torch.long)
        mask = torch.zeros(batch, L, dtype=torch.bool)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)] = torch.tensor(e.ids)
            mask[i, :len(e.ids)] = True
        yield ids, torch.zeros_like(ids), mask


def distill(cfg: DistillConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teacher = initial_model(cfg.teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    tc = teacher.config
    student = BertQA(BertConfig(cfg.student_hidden, cfg.student_heads, cfg.student_intermediate, cfg.student_layers,
                                tc.vocab_size, tc.max_position, tc.type_vocab_size, tc.layer_norm_eps))
    tok_path = cfg.tokenizer or (Path(cfg.teacher) / "tokenizer.json" if cfg.teacher not in ("minilm",) and not cfg.teacher.endswith(".pt")
                                 else None)
    if tok_path is None:
        from training.model import minilm_directory
        tok_path = minilm_directory() if cfg.teacher == "minilm" else Path(cfg.teacher).parent / "tokenizer.json"
    tokenizer = load_tokenizer(tok_path)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.01)
    t_layer = cfg.teacher_layer % tc.layers
    batches = text_batches(tokenizer, cfg.squad_train, cfg.max_seq_len, cfg.batch_size, np.random.default_rng(cfg.seed))
    log = []
    for step in tqdm(range(cfg.steps), desc="distill"):
        ids, types, mask = next(batches)
        with torch.no_grad():
            t_qkv = layer_qkv(teacher, ids, types, mask, t_layer)
        s_qkv = layer_qkv(student, ids, types, mask, cfg.student_layers - 1)
        loss = relation_loss(t_qkv, s_qkv, cfg.relation_heads, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append(float(loss.detach()))
    save_model(student, out / "model.pt", {"distill_config": asdict(cfg)})
    tokenizer.no_truncation()
    tokenizer.save(str(out / "tokenizer.json"))
    result = {"first_loss": log[0], "last_loss": float(np.mean(log[-max(1, len(log) // 10):])), "steps": cfg.steps}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> None:
    from training.train import config_from_args, config_parser
    args = config_parser(DistillConfig, __doc__).parse_args(argv)
    print(distill(config_from_args(DistillConfig, args)))


if __name__ == "__main__":
    main()
