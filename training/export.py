"""Step e) `export`: a trained (and calibrated) BertQA -> one .qrt file for the runtime.

Weights become int8 per output channel (exactly QLinear.weight_int8), every calibrated
linear carries its input (scale, zero point), the word embeddings are stored as int8 rows
(or fp32 with --no-compact), and the metadata holds the architecture, the tokenizer, the
length-configuration frontier, the default configuration and the provenance.

    python -m training.export runs/quantize/model.pt out.qrt --frontier runs/search/frontier.json
    python -m training.export model.qrt new.qrt --default-config 1,1,1,0.8,0.6,0.2   # metadata only
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from qualam_rt.engine import ATTENTION_PATHS
from qualam_rt.model_file import read_model, write_model
from qualam_rt.reference import quantize_weight
from training.model import BertQA


def engine_tensors_of(model: BertQA, compact_embeddings: bool = True) -> dict[str, np.ndarray]:
    """The model's tensors in the runtime's names and layouts."""
    def f32(t):
        return t.detach().float().cpu().numpy().astype(np.float32)

    t = {"embeddings.position": f32(model.position.weight), "embeddings.token_type": f32(model.token_type.weight),
         "embeddings.ln.weight": f32(model.emb_ln.weight), "embeddings.ln.bias": f32(model.emb_ln.bias),
         "qa.weight": f32(model.qa.weight), "qa.bias": f32(model.qa.bias)}
    word = f32(model.word.weight)
    if compact_embeddings:
        t["embeddings.word"], t["embeddings.word.scale"] = quantize_weight(word)  # symmetric int8 per row
    else:
        t["embeddings.word"] = word
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}."
        for name in ("qkv", "out", "ffn1", "ffn2"):
            lin = getattr(layer, name)
            q, scale = lin.weight_int8()
            t[p + name + ".weight"] = q.numpy()
            t[p + name + ".scale"] = scale.numpy().astype(np.float32)
            t[p + name + ".bias"] = f32(lin.bias)
            if float(lin.input_quant[0]) > 0:
                t[p + name + ".input_quant"] = f32(lin.input_quant)
        for ln in ("ln1", "ln2"):
            t[p + ln + ".weight"] = f32(getattr(layer, ln).weight)
            t[p + ln + ".bias"] = f32(getattr(layer, ln).bias)
    return t


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    return r.stdout.strip() or "unknown"


def normalized_config(config):
    """None, keep ratios as a list of floats, or {"tokens": list of ints} (token budgets)."""
    if config is None:
        return None
    if isinstance(config, dict):
        (kind, values), = config.items()
        if kind == "tokens":
            return {"tokens": [int(b) for b in values]}
        config = values
    return [float(r) for r in config]


def export_qrt(model: BertQA, tokenizer_json: str, path: str | Path, frontier: list | None = None,
               default_config=None, quantization: dict | None = None, provenance: dict | None = None,
               compact_embeddings: bool = True, attention: str | None = None) -> Path:
    calibrated = [float(lin.input_quant[0]) > 0 for _, lin in model.linears()]
    quant = {"weights": "int8 symmetric per output channel",
             "activations": "uint8 static per tensor" if all(calibrated) else "uint8 per row at run time",
             "embeddings": "int8 per row" if compact_embeddings else "fp32"} | (quantization or {})
    meta = {"architecture": model.config.to_dict(), "tokenizer": tokenizer_json, "frontier": frontier or [],
            "attention": attention or "int16",
            "default_config": normalized_config(default_config),
            "quantization": quant,
            "provenance": {"exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "commit": git_commit()} | (provenance or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_model(path, engine_tensors_of(model, compact_embeddings), meta)
    return path


def reexport_qrt(source: str | Path, path: str | Path, frontier: list | None = None, default_config=None,
                 provenance: dict | None = None) -> Path:
    """A .qrt file with the tensors of `source` bit for bit and its metadata, but for the frontier,
    default configuration and provenance fields given: a model whose FP32 checkpoint is gone can
    still get a new default configuration. The provenance records the change."""
    meta, tensors = read_model(source)
    if frontier is not None:
        meta["frontier"] = frontier
    if default_config is not None:
        meta["default_config"] = normalized_config(default_config)
    meta["provenance"] = dict(meta.get("provenance") or {}) | (provenance or {}) | {
        "reexported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reexport_commit": git_commit()}
    write_model(path, {k: np.asarray(v) for k, v in tensors.items()}, meta)
    return Path(path)


def main(argv=None) -> None:
    from training.train import load_model
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model.pt of a training step, or a .qrt file (its tensors kept; only the "
                                   "frontier, default configuration and provenance given change)")
    ap.add_argument("out", help="the .qrt file to write")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: beside the model)")
    ap.add_argument("--frontier", help="frontier.json of the search step")
    ap.add_argument("--default-config", help="comma-separated keep ratios, or tokens:b1,b2,... token budgets "
                                             "(default: the frontier's choice)")
    ap.add_argument("--no-compact", action="store_true", help="fp32 word embeddings")
    ap.add_argument("--attention", choices=ATTENTION_PATHS, default="int16", help="the engine's default attention path")
    ap.add_argument("--provenance", default="{}", help="JSON object of extra provenance fields (data, base checkpoint)")
    args = ap.parse_args(argv)
    frontier, default = [], None
    if args.frontier:
        blob = json.loads(Path(args.frontier).read_text())
        frontier, default = blob["frontier"], blob.get("default_config")
    if args.default_config:
        kind, _, values = args.default_config.rpartition(":")
        default = ({"tokens": [int(x) for x in values.split(",")]} if kind == "tokens"
                   else [float(x) for x in values.split(",")])
    if args.model.endswith(".qrt"):
        path = reexport_qrt(args.model, args.out, frontier if args.frontier else None, default, json.loads(args.provenance))
        print(f"wrote {path}: the tensors of {args.model}, new metadata")
        return
    model = load_model(args.model)
    tok = Path(args.tokenizer or Path(args.model).parent / "tokenizer.json").read_text()
    blob = torch.load(args.model, map_location="cpu", weights_only=False)
    path = export_qrt(model, tok, args.out, frontier, default, blob.get("quantization"),
                      {"model": str(args.model), "train_config": blob.get("train_config")} | json.loads(args.provenance),
                      not args.no_compact,
                      args.attention)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
