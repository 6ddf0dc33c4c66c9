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
