"""Step g) `pipeline`: finetune -> lat -> search -> quantize -> export from one config file.

Each step writes into <out>/<step>/ and is skipped when its result is already there, so an
interrupted pipeline resumes where it stopped (a training step also resumes mid-way from
its checkpoint). The config file is JSON with one object per step; unspecified fields take
the step's defaults, and the paths between steps are filled in:

    {"out": "runs/minilm", "finetune": {"max_examples": 20000, "epochs": 1},
     "lat": {"epochs": 1}, "search": {"iterations": 5}, "quantize": {}, "export": {"file": "model.qrt"}}

    python -m training.pipeline --config pipeline.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from training.export import export_qrt
from training.quantize import QuantizeConfig, quantize
from training.search import SearchConfig, search
from training.train import TrainConfig, load_model, train

STEPS = ("finetune", "lat", "search", "quantize", "export")


def _make(cls, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**values)


def check_same_config(out: Path, config: dict) -> None:
    """A pipeline folder belongs to one config: its finished steps are reused only by a rerun of
    that config (recorded in <out>/pipeline_config.json); another config is refused."""
    record = out / "pipeline_config.json"
    if record.exists():
        stored = json.loads(record.read_text())
        if stored != json.loads(json.dumps(config)):
            changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise SystemExit(f"{out} holds a pipeline run with another config (differs in: {', '.join(changed)}); "
                             f"use another out folder or remove it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(config, indent=1))


def run(config: dict, steps=STEPS) -> Path:
    out = Path(config.get("out", "runs/pipeline"))
    check_same_config(out, config)
    common = {k: config[k] for k in ("squad_train", "held_out_articles") if k in config}
    ft, lat, se, qu = (out / s for s in ("finetune", "lat", "search", "quantize"))
    if "finetune" in steps and not (ft / "model.pt").exists():
        train(_make(TrainConfig, common | {"step": "finetune", "out": str(ft)} | config.get("finetune", {})))
    if "lat" in steps and not (lat / "model.pt").exists():
        train(_make(TrainConfig, common | {"step": "lat", "init": str(ft / "model.pt"), "tokenizer": str(ft / "tokenizer.json"),
                                           "out": str(lat)} | config.get("lat", {})))
    if "search" in steps and not (se / "frontier.json").exists():
        search(_make(SearchConfig, common | {"model": str(lat / "model.pt"), "out": str(se)} | config.get("search", {})))
    if "quantize" in steps and not (qu / "model.pt").exists():
        quantize(_make(QuantizeConfig, common | {"model": str(lat / "model.pt"), "out": str(qu)} | config.get("quantize", {})))
    target = out / config.get("export", {}).get("file", "model.qrt")
    if "export" in steps and not target.exists():
        import torch
        frontier = json.loads((se / "frontier.json").read_text())
        blob = torch.load(qu / "model.pt", map_location="cpu", weights_only=False)
        export_qrt(load_model(qu / "model.pt"), (qu / "tokenizer.json").read_text(), target, frontier["frontier"],
                   frontier["default_config"], blob.get("quantization"),
                   {"pipeline_config": config, "base_checkpoint": config.get("finetune", {}).get("init", "minilm")},
                   config.get("export", {}).get("compact_embeddings", True), config.get("export", {}).get("attention"))
    return target


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    args = ap.parse_args(argv)
    path = run(json.loads(Path(args.config).read_text()), args.steps.split(","))
    print(f"model: {path}")


if __name__ == "__main__":
    main()
