"""Plain numpy definitions of what the native kernels compute.

The tests check every ISA path of the extension against these functions; they are written
for clarity, not speed.
"""
from __future__ import annotations

import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    return _erf(np.asarray(x, dtype=np.float64)).astype(np.float64)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, erf form (BERT's)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """Asymmetric uint8: clamp(round_half_even(x / scale) + zp, 0, 255)."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zp
    return np.clip(q, 0, 255).astype(np.uint8)


def per_row_params(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of each row, from its range extended to contain 0."""
    x = np.asarray(x, np.float32)
    lo = np.minimum(x.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(x.max(axis=1), 0).astype(np.float32)
    scale = ((hi - lo) / np.float32(255)).astype(np.float32)
    scale[~(scale > 0)] = 1.0
    zp = np.clip(np.rint(-lo / scale), 0, 255).astype(np.int32)
    return scale, zp


def quantize_per_row(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale, zp = per_row_params(x)
    q = np.rint(np.asarray(x, np.float32) / scale[:, None]) + zp[:, None]
    return np.clip(q, 0, 255).astype(np.uint8), scale, zp


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (rows of [N, K]); values in [-127, 127]."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def gemm_s32(a: np.ndarray, a_zp, w: np.ndarray) -> np.ndarray:
    """Exact int32 result: sum_k (A[m, k] - zp[m]) * W[n, k]."""
    zp = np.asarray(a_zp, np.int64).reshape(-1, 1) if np.ndim(a_zp) else np.int64(a_zp)
    return ((a.astype(np.int64) - zp) @ w.astype(np.int64).T).astype(np.int32)


def gemm(a, a_scale, a_zp, w, w_scale, bias=None, gelu_=False, residual=None,
         out_dtype="float32", out_scale=1.0, out_zp=0) -> np.ndarray:
    """u8 x s8 GEMM with the fused epilogue of csrc/types.h (GemmArgs), in float64."""
    acc = gemm_s32(a, a_zp, w).astype(np.float64)
    sa = np.asarray(a_scale, np.float64).reshape(-1, 1) if np.ndim(a_scale) else float(a_scale)
    v = acc * sa * np.asarray(w_scale, np.float64)[None, :]
    if bias is not None:
        v = v + bias
    if gelu_:
        v = gelu(v)
    if residual is not None:
        v = v + residual
    if out_dtype == "uint8":
        return np.clip(np.rint(v / out_scale) + out_zp, 0, 255).astype(np.uint8)
    return v.astype(np.float32)


def layernorm(x, gamma, beta, eps=1e-12, residual=None) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if residual is not None:
        x = x + residual
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * gamma + beta).astype(np.float32)


# ---- the encoder ---------------------------------------------------------------------

def layer_lengths(n: int, keep_ratios, min_keep: int = 2) -> list[int]:
    """Tokens kept by each layer of a length-n sequence: l_i = min(l_{i-1}, max(min_keep, ceil(r_i n))).
    keep_ratios may also be {"ratios": [...]} or token budgets {"tokens": [...]}, the paper's
    form: l_i = min(l_{i-1}, max(min_keep, b_i))."""
    if isinstance(keep_ratios, dict):
        (kind, values), = keep_ratios.items()
        if kind == "tokens":
            out, prev = [], n
            for b in values:
                prev = min(prev, max(min_keep, int(b)))
                out.append(prev)
            return out
        keep_ratios = values
    out, prev = [], n
    for r in keep_ratios:
        want = math.ceil(float(np.float32(r)) * n - 1e-6)
        prev = min(prev, max(min_keep, want))
        out.append(prev)
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def top_k_positions(significance: np.ndarray, k: int) -> np.ndarray:
    """The k most significant positions (ties: lower position first), in position order."""
    order = np.lexsort((np.arange(len(significance)), -significance))
    return np.sort(order[:k])


def int8_attention_head(q, k, v):
    """One head with INT8 products: Q as uint8 (per-row scale, zero point), K as int8 (per-head
    scale), softmax in float, probabilities as uint8 (per-row scale: the row's largest / 255),
    V as int8 (per-channel scales). Returns the float probabilities (for significance) and
    the context."""
    q8, qs, qz = quantize_per_row(q)
    kmax = float(np.abs(k).max())
    ks = np.float32(kmax / 127.0) if kmax > 0 else np.float32(1.0)
    k8 = np.clip(np.rint(np.asarray(k, np.float32) * (np.float32(1) / ks)), -127, 127)
    scores = (q8.astype(np.float64) - qz[:, None]) @ k8.T * (qs[:, None].astype(np.float64) / math.sqrt(q.shape[1]))
    probs = softmax(scores * float(ks))
    vmax = np.abs(v).max(axis=0)
    vs = np.where(vmax > 0, vmax / 127.0, 1.0).astype(np.float32)
    v8 = np.clip(np.rint(np.asarray(v, np.float32) * (np.float32(1) / vs)), -127, 127)
    p32 = probs.astype(np.float32)
    ps = np.where(p32.max(axis=1) > 0, p32.max(axis=1) / np.float32(255), 1).astype(np.float32)
    p8 = np.clip(np.rint(p32 * (np.float32(1) / ps[:, None])), 0, 255)
    return probs, (p8 @ v8) * ps[:, None] * vs


def qk_bound(d: int) -> int:
    """The largest B with d * B^2 <= 2^31 - 1 (at most 32767): int16 Q and K of this range
    keep a d-long int32 dot product from overflowing."""
    b = int(math.isqrt((2**31 - 1) // d))
    while b * b * d > 2**31 - 1:
        b -= 1
    return min(b, 32767)


def to_int16(x: np.ndarray, inv_scale) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, np.float32) * np.asarray(inv_scale, np.float32)), -32767, 32767)


def int16_attention_head(q, k, v):
    """One head with int16 products and exact integer sums: Q per row and K per key scaled to
    +-qk_bound(d); softmax in float; the probabilities as round(p * 32767) and V per channel
    to +-32767. Returns the float probabilities (for significance) and the context."""
    q, k, v = (np.asarray(x, np.float32) for x in (q, k, v))
    bound = np.float32(qk_bound(q.shape[1]))

    def rows16(x):
        m = np.abs(x).max(axis=1)
        s = np.where(m > 0, m / bound, 1).astype(np.float32)
        return to_int16(x, (np.float32(1) / s)[:, None]), s

    q16, qs = rows16(q)
    k16, ks = rows16(k)
    scores = (q16.astype(np.int64) @ k16.T.astype(np.int64)).astype(np.float32) * ks
    probs = softmax(scores.astype(np.float64) * (qs * np.float32(1 / math.sqrt(q.shape[1])))[:, None])
    vmax = np.abs(v).max(axis=0)
    v_inv = np.where(vmax > 0, np.float32(32767) / vmax, 1).astype(np.float32)
    v16 = to_int16(v, v_inv)
    p16 = to_int16(probs, 32767)
    ctx = (p16.astype(np.int64) @ v16.astype(np.int64)).astype(np.float64) / (v_inv.astype(np.float64) * 32767)
    return probs, ctx


def to_bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


# The cubic of the bf16 attention's 2^f on [0, 1) (csrc/cpu/exp2_cubic.h), c0 first.
EXP2_CUBIC = (0.9999251961708069, 0.6958335638046265, 0.22606715559959412, 0.07802452147006989)


def bf16_attention_head(q, k, v):
    """One head as the tile paths' bf16 attention computes it: Q, K and V rounded to bf16,
    products summed in float; e = 2^(t - M) with t = score * log2(e) / sqrt(d) and M an
    integer at or above the row's largest t, 2^f of f = t - floor(t) by the kernel's cubic;
    P V with e rounded to bf16, divided by the row's sum of e. The kernel's M is a bound found
    before the scores; any integer M gives the same result, as scaling by 2^-M commutes with
    rounding to bf16. The significance's probabilities are bf16(e) * bf16(1 / sum), as the
    kernel sums them (vdpbf16ps)."""
    q, k, v = (to_bf16(x).astype(np.float64) for x in (q, k, v))
    sl = np.float32(1.4426950408889634) / np.float32(math.sqrt(q.shape[1]))
    t = ((q @ k.T).astype(np.float32) * sl).astype(np.float64)
    whole = np.floor(t)
    f = t - whole
    c0, c1, c2, c3 = EXP2_CUBIC
    e = (((c3 * f + c2) * f + c1) * f + c0) * np.exp2(whole - np.ceil(t.max(axis=1, keepdims=True)))
    total = e.sum(axis=1, keepdims=True)
    e16 = to_bf16(e.astype(np.float32)).astype(np.float64)
    inv16 = to_bf16(np.float32(1) / total.astype(np.float32)).astype(np.float64)
    return e16 * inv16, (e16 @ v) / total


ATTENTION_HEADS = {"int16": int16_attention_head, "int8": int8_attention_head, "bf16": bf16_attention_head}


class ReferenceEncoder:
    """The forward pass of csrc/encoder.cpp, one sequence at a time, in numpy.

    mode "int8": every GEMM input quantized exactly as the native engine does (static
    `input_quant` or per-row), integer GEMM, float epilogue. mode "fp32": the same weights
    dequantized, no activation quantization. `observer(name, x)`, if given, sees every GEMM
    input in fp32 (used for calibration).
    """

    def __init__(self, config: dict, tensors: dict, mode: str = "int8", observer=None, attention: str = "fp32"):
        if mode not in ("int8", "fp32") or attention not in ("fp32", "int16", "int8", "bf16"):
            raise ValueError("mode must be 'int8' or 'fp32'; attention 'fp32', 'int16', 'int8' or 'bf16'")
        self.c, self.t, self.mode, self.observer, self.attention = config, tensors, mode, observer, attention

    def linear(self, x, name, gelu_=False):
        t = self.t
        w, ws, b = t[f"{name}.weight"], t[f"{name}.scale"], t[f"{name}.bias"]
        if self.observer is not None:
            self.observer(name, x)
        if self.mode == "fp32":
            v = np.asarray(x, np.float64) @ (w.astype(np.float64) * ws[:, None]).T + b
            return gelu(v) if gelu_ else v
        iq = t.get(f"{name}.input_quant")
        if iq is not None:
            scale, zp = float(iq[0]), int(iq[1])
            q = quantize(x, scale, zp)
        else:
            q, scale, zp = quantize_per_row(x)
        return gemm(q, scale, zp, w, ws, bias=b, gelu_=gelu_).astype(np.float64)

    def sequence(self, ids, types, keep_ratios=None):
        """Start/end logits [n, 2] of one sequence and the kept positions of every layer."""
        c, t = self.c, self.t
        n, H, heads = len(ids), c["hidden"], c["heads"]
        d, eps = H // heads, c.get("layer_norm_eps", 1e-12)
        x = t["embeddings.word"][ids] + t["embeddings.position"][:n] + t["embeddings.token_type"][types]
        x = layernorm(x, t["embeddings.ln.weight"], t["embeddings.ln.bias"], eps).astype(np.float64)
        full, pos, kept = x.copy(), np.arange(n), []
        lengths = layer_lengths(n, keep_ratios, c.get("min_keep", 2)) if keep_ratios is not None else [n] * c["layers"]
        for layer in range(c["layers"]):
            p = f"layers.{layer}."
            qkv = self.linear(x, p + "qkv")
            q, k, v = (qkv[:, i * H:(i + 1) * H].reshape(-1, heads, d).transpose(1, 0, 2) for i in range(3))
            if self.attention in ATTENTION_HEADS:
                probs, ctx = zip(*(ATTENTION_HEADS[self.attention](q[h], k[h], v[h]) for h in range(heads)))
                probs, ctx = np.stack(probs), np.stack(ctx).transpose(1, 0, 2).reshape(-1, H)
            else:
                probs = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d))  # [heads, rows, cols]
                ctx = (probs @ v).transpose(1, 0, 2).reshape(-1, H)
            keep = top_k_positions(probs.sum(axis=(0, 1)), min(lengths[layer], len(x)))
            h = layernorm(self.linear(ctx[keep], p + "out") + x[keep], t[p + "ln1.weight"], t[p + "ln1.bias"], eps)
            f = self.linear(h, p + "ffn1", gelu_=True)
            x = layernorm(self.linear(f, p + "ffn2") + h, t[p + "ln2.weight"], t[p + "ln2.bias"], eps).astype(np.float64)
            pos = pos[keep]
            full[pos] = x
            kept.append(pos.copy())
        logits = full @ t["qa.weight"].T.astype(np.float64) + t["qa.bias"]
        return logits.astype(np.float32), kept
