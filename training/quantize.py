"""Step d) `quantize`: static post-training calibration of every GEMM input.

Weights: int8 symmetric per output channel (QLinear.weight_int8). Activations: one uint8
(scale, zero point) per linear input, from the values the input takes on calibration
batches of held-out training articles, run under several length configurations (the
deployed model drops tokens, which shifts the statistics). Ranges from:
  minmax      the observed minimum and maximum;
  percentile  the 0.01% and 99.99% quantiles (outliers clipped);
  entropy     the clipping, among candidate tail fractions, whose 256-level quantized
              histogram has the smallest KL divergence to the observed 2048-bin histogram.
Each method is evaluated (F1 of the INT8 engine on other held-out questions) next to FP32,
and the best one is kept. `dynamic_inputs` leaves chosen inputs to per-row quantization at
run time (for MiniLM the FFN1 input, a LayerNorm output with outliers, costs 2.4 F1 static).

    python -m training.quantize --model runs/lat/model.pt --out runs/quantize
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qualam_rt import decode, Engine, squad
from training.data import Features, evaluate_model, load_tokenizer, split_articles
from training.export import export_qrt
from training.model import BertQA
from training.train import DEFAULT_SQUAD_TRAIN, load_model, save_model

METHODS = ("minmax", "percentile", "entropy")


@dataclass
class QuantizeConfig:
    model: str = "runs/lat/model.pt"
    out: str = "runs/quantize"
    squad_train: str = DEFAULT_SQUAD_TRAIN
    held_out_articles: int = 20
    calib_examples: int = 128
    eval_examples: int = 500
    batch_size: int = 16
    configs: str = "full,0.9:0.8:0.7:0.6:0.5:0.4,0.8:0.6:0.5:0.4:0.3:0.2"  # calibration length configs
    methods: str = "minmax,percentile,entropy"
    dynamic_inputs: str = ""          # linears (e.g. "ffn1") whose input stays per-row at run time
    seed: int = 0
    threads: int = 0


class InputSampler:
    """Per linear: exact min/max and a bounded random sample of its input values."""

    def __init__(self, per_call: int = 20000, seed: int = 0):
        self.lo, self.hi, self.samples = {}, {}, {}
        self.per_call, self.rng = per_call, np.random.default_rng(seed)

    def __call__(self, name: str, x: torch.Tensor, mask: torch.Tensor | None = None):
        v = x.detach().float()
        if mask is not None:  # padded positions are not model inputs
            v = v[mask]
        v = v.reshape(-1).numpy()
        if v.size == 0:
            return
        self.lo[name] = min(self.lo.get(name, 0.0), float(v.min()))
        self.hi[name] = max(self.hi.get(name, 0.0), float(v.max()))
        pick = v if v.size <= self.per_call else v[self.rng.integers(0, v.size, self.per_call)]
        self.samples.setdefault(name, []).append(pick)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / max(q.sum(), 1e-30)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))


def entropy_range(values: np.ndarray, lo: float, hi: float, bins: int = 2048) -> tuple[float, float]:
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    best, best_range = np.inf, (lo, hi)
    cum = np.cumsum(hist) / hist.sum()
    for tail_lo in (0.0, 1e-5, 1e-4, 1e-3, 1e-2):
        for tail_hi in (0.0, 1e-5, 1e-4, 1e-3, 1e-2):
            a = int(np.searchsorted(cum, tail_lo))
            b = int(np.searchsorted(cum, 1 - tail_hi)) + 1
            b = min(max(b, a + 256), bins)
            p = hist[a:b].astype(np.float64).copy()
            p[0] += hist[:a].sum()  # clipped mass lands on the edges
            p[-1] += hist[b:].sum()
            # quantize p to 256 levels: merge bins, spread each level's mass evenly over its non-empty bins
            q = np.zeros_like(p)
            for chunk in np.array_split(np.arange(len(p)), 256):
                nz = p[chunk] > 0
                if nz.any():
                    q[chunk[nz]] = p[chunk].sum() / nz.sum()
            kl = _kl(p, q)
            if kl < best:
                best, best_range = kl, (edges[a], edges[b])
    return float(best_range[0]), float(best_range[1])


def input_range(sampler: InputSampler, name: str, method: str) -> tuple[float, float]:
    lo, hi = sampler.lo[name], sampler.hi[name]
    if method == "minmax":
        return lo, hi
    values = np.concatenate(sampler.samples[name])
    if method == "percentile":
        return min(float(np.percentile(values, 0.01)), 0.0), max(float(np.percentile(values, 99.99)), 0.0)
    if method == "entropy":
        a, b = entropy_range(values, lo, hi)
        return min(a, 0.0), max(b, 0.0)
    raise ValueError(f"unknown calibration method {method!r}; choose from {METHODS}")


def scale_zero_point(lo: float, hi: float) -> tuple[float, float]:
    """Asymmetric uint8 parameters of a range that contains 0."""
    scale = max(hi - lo, 1e-8) / 255.0
    return scale, float(np.clip(np.rint(-lo / scale), 0, 255))


@torch.no_grad()
def collect(model: BertQA, feats: Features, configs: list, batch_size: int, seed: int = 0) -> InputSampler:
    """Runs calibration batches under each length configuration, sampling every linear input."""
    sampler = InputSampler(seed=seed)
    model.eval()
    mask_holder = {}

    def observe(lin, x):
        sampler(lin.qname, x, mask_holder.get("mask"))

    for name, lin in model.linears():
        lin.qname, lin.observer = name, observe
    try:
        for cfg in configs:
            for index in tqdm(feats.batches(batch_size, shuffle=False), desc=f"calibrate {cfg or 'full'}", leave=False):
                b = feats.collate(index)
                mask_holder["mask"] = b["attention_mask"]
                # the masked form: every linear sees [B, L] rows, which the padding mask selects
                model(b["input_ids"], b["token_type_ids"], b["attention_mask"], cfg, dropping="mask")
    finally:
        for _, lin in model.linears():
            lin.observer = None
    return sampler


def apply_calibration(model: BertQA, sampler: InputSampler, method: str, dynamic: tuple = ()) -> None:
    """Static (scale, zero point) for every linear input, except the linears named in
    `dynamic` (by their last name part, e.g. "ffn1"), which the engine quantizes per row."""
    for name, lin in model.linears():
        if name.split(".")[-1] in dynamic:
            lin.input_quant.zero_()
        else:
            lin.input_quant.copy_(torch.tensor(scale_zero_point(*input_range(sampler, name, method))))


def activations_description(model: BertQA, method: str, dynamic: tuple) -> str:
    kinds = {name.split(".")[-1] for name, _ in model.linears()}
    if kinds <= set(dynamic):
        return "uint8 per row at run time (every GEMM input)"
    return f"uint8 static per tensor ({method})" + (f", per row for {','.join(dynamic)}" if dynamic else "")


def engine_f1(model: BertQA, tokenizer_json: str, feats: Features, ratios=None) -> float:
    """F1 of the INT8 engine running this model (exported to a temporary .qrt)."""
    with tempfile.TemporaryDirectory() as d:
        path = export_qrt(model, tokenizer_json, Path(d) / "m.qrt")
        engine = Engine(path, length_config="full" if ratios is None else tuple(ratios))
        return engine_f1_of(engine, feats)


def engine_f1_of(engine: Engine, feats: Features, batch_size: int = 32) -> float:
    return squad.evaluate(feats.examples, decode.predict(feats.examples, feats.windows, engine.logits, batch_size))["f1"]


def parse_configs(s: str) -> list:
    return [None if c == "full" else [float(x) for x in c.split(":")] for c in s.split(",") if c]


def quantize(cfg: QuantizeConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = load_model(cfg.model)
    tok_path = Path(cfg.model).parent / "tokenizer.json"
    tokenizer, tokenizer_json = load_tokenizer(tok_path), tok_path.read_text()
    _, held = split_articles(cfg.squad_train, cfg.held_out_articles)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(held))
    calib = Features(tokenizer, [held[i] for i in order[:cfg.calib_examples]])
    evals = Features(tokenizer, [held[i] for i in order[cfg.calib_examples:cfg.calib_examples + cfg.eval_examples]])
    configs = [c if c is None else c[:model.config.layers] for c in parse_configs(cfg.configs)]

    report = {"fp32_f1": evaluate_model(model, evals, desc="fp32")["f1"], "methods": {}}
    report["int8_dynamic_f1"] = engine_f1(model, tokenizer_json, evals)
    print(f"FP32 F1 {report['fp32_f1']:.2f}; INT8 per-row dynamic {report['int8_dynamic_f1']:.2f}")
    sampler = collect(model, calib, configs, cfg.batch_size, cfg.seed)
    dynamic = tuple(x for x in cfg.dynamic_inputs.split(",") if x)
    for method in cfg.methods.split(","):
        apply_calibration(model, sampler, method, dynamic)
        f1 = engine_f1(model, tokenizer_json, evals)
        report["methods"][method] = f1
        print(f"INT8 static {method}: F1 {f1:.2f}")
    best = max(report["methods"], key=report["methods"].get)
    apply_calibration(model, sampler, best, dynamic)
    report["chosen"] = best
    report["config"] = asdict(cfg)
    save_model(model, out / "model.pt", {"quantization": {"activations": activations_description(model, best, dynamic),
                                                          "calibration": {"examples": cfg.calib_examples, "configs": cfg.configs}}})
    (out / "tokenizer.json").write_text(tokenizer_json)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv=None) -> None:
    from training.train import config_from_args, config_parser
    args = config_parser(QuantizeConfig, __doc__).parse_args(argv)
    quantize(config_from_args(QuantizeConfig, args))


if __name__ == "__main__":
    main()
