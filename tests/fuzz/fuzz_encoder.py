"""Fuzzer: `_C.Encoder.forward` (public) on arbitrary ids, token types, offsets, keep ratios,
token budgets and attention paths: a ValueError/TypeError with a message, or finite logits of
the right shape; never a crash or an out-of-bounds access (run it under tools/sanitize.sh to
have the latter checked). See harness.py for how to run it."""
import sys
from pathlib import Path

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from qualam_rt import _C
from qualam_rt import synthetic as syn
from harness import CONFIG, fuzz  # noqa: E402

CFG = dict(CONFIG, vocab_size=50)
ENC = _C.Encoder(CFG, syn.random_tensors(CFG, seed=0))
ATTENTION = ["fp32", "int16", "int8", "bf16", "int4", ""]
COUNTS = {"inputs": 0, "forward ran": 0, "tokens": 0}  # printed every 1000 inputs: how much reached the kernels


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    COUNTS["inputs"] += 1
    if COUNTS["inputs"] % 1000 == 0:
        print("fuzz_encoder:", COUNTS, flush=True)
    total = fdp.ConsumeIntInRange(0, 300)
    valid = fdp.ConsumeProbability() < 0.7  # most inputs well-formed, so they reach the kernels
    lo, hi = (0, CFG["vocab_size"] - 1) if valid else (-5, CFG["vocab_size"] + 5)
    ids = np.array(fdp.ConsumeIntListInRange(total, lo, hi), dtype=np.int32)
    types = np.array(fdp.ConsumeIntListInRange(total, 0 if valid else -1, 1 if valid else 3), dtype=np.int32)
    if valid or fdp.ConsumeBool():
        cuts = sorted(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 6), 0, total))
        offsets = np.array([0] + cuts + [total], dtype=np.int64)
    else:
        offsets = np.array(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 6), -3, total + 3), dtype=np.int64)
    ratios = tokens = None
    kind = fdp.ConsumeIntInRange(0, 2)
    layers = CFG["layers"] if valid else fdp.ConsumeIntInRange(0, 3)
    if kind == 1:
        ratios = [fdp.ConsumeProbability() if valid else fdp.ConsumeRegularFloat() for _ in range(layers)]
        ratios = sorted(ratios, reverse=True) if valid else ratios
        ratios = [max(r, 1e-3) for r in ratios] if valid else ratios
    elif kind == 2:
        tokens = fdp.ConsumeIntListInRange(layers, 1 if valid else -2, 200)
        tokens = sorted(tokens, reverse=True) if valid else tokens
    attention = ATTENTION[fdp.ConsumeIntInRange(0, 3 if valid else len(ATTENTION) - 1)]
    try:
        out = ENC.forward(ids, types, offsets, ratios, keep_tokens=tokens, attention=attention,
                          return_kept=fdp.ConsumeBool())
    except (ValueError, TypeError):
        return
    COUNTS["forward ran"] += 1
    COUNTS["tokens"] += total
    assert out["logits"].shape == (total, 2)
    assert np.isfinite(out["logits"]).all()


if __name__ == "__main__":
    fuzz(TestOneInput)
