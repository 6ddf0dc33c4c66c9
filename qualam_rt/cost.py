"""Analytic multiply-accumulates of the encoder, for length configurations and for the
comparison with BERT-base that the paper reports."""
from __future__ import annotations

from qualam_rt.reference import layer_lengths

BERT_BASE = dict(hidden=768, heads=12, intermediate=3072, layers=12)


def encoder_macs(config: dict, n: int, keep_ratios=None) -> int:
    """MACs of one length-n sequence: per layer, QKV on its input tokens, QK^T and PV over
    them, then O-projection and FFN on the kept tokens; plus the QA head on all n."""
    H, I = config["hidden"], config["intermediate"]
    lengths = layer_lengths(n, keep_ratios, config.get("min_keep", 2)) if keep_ratios is not None else [n] * config["layers"]
    macs, prev = 0, n
    for kept in lengths:
        macs += prev * H * 3 * H + 2 * prev * prev * H + kept * H * H + 2 * kept * H * I
        prev = kept
    return macs + n * H * 2


def bert_base_macs(n: int) -> int:
    return encoder_macs(BERT_BASE, n)
