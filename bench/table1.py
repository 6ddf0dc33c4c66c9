"""The paper's Table 1 on this machine: what each step of the recipe buys.

Rows (each optional, given by the models passed):
  MiniLM FP32            --finetuned runs/ft/model.pt          (PyTorch, no dropping)
  MiniLM INT8            --finetuned-qrt ft.qrt                (qualam_rt, no dropping)
  LA-MiniLM FP32         --lat runs/lat/model.pt               (PyTorch; full and at --config)
  QuaLA-MiniLM INT8      --qrt model.qrt                       (qualam_rt; full and at --config)
Columns: size (MB), tokens per layer at n=384, SQuAD v1.1 dev EM/F1, latency per sample at
batch 32 n=384 and on the dev length mix (batches of 32), encoder MACs counted both ways (at
n=384 as the paper counts them, padding included, and on the real tokens of the dev windows,
each as a share of the full length's), and the speedup against BERT-base FP32 (PyTorch,
random weights) measured in the same run. --config (repeatable) takes keep ratios r1,...,r6,
token budgets tokens:b1,...,b6 (the paper's form) or default (the .qrt file's default
configuration, also what is used when no --config is given).

    python bench/table1.py --finetuned runs/ft/model.pt --lat runs/lat/model.pt --qrt model.qrt --threads 2
"""
from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, ms_per_sample, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import decode, featurize, squad  # noqa: E402
from qualam_rt.cost import bert_base_macs, encoder_macs  # noqa: E402
from qualam_rt.reference import layer_lengths  # noqa: E402

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "dev-v1.1.json"


def torch_logits_fn(model, config):
    from training.data import torch_infer
    return torch_infer(model, config if config is None or isinstance(config, dict) else list(config))


def evaluate(infer, examples, windows, batch=32):
    return squad.evaluate(examples, decode.predict(examples, windows, infer, batch, progress="dev"))


def state_mb(model) -> float:
    import torch
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finetuned")
    ap.add_argument("--finetuned-qrt")
    ap.add_argument("--lat")
    ap.add_argument("--qrt")
    ap.add_argument("--config", action="append", default=[],
                    help="r1,...,r6 keep ratios | tokens:b1,...,b6 budgets | default (repeatable; default: the .qrt default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mix", type=int, default=256, help="dev windows timed for the length mix")
    ap.add_argument("--eval-examples", type=int, default=0, help="0 = all 10,570 dev questions")
    ap.add_argument("--name", default="table1")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import transformers
    torch.set_num_threads(args.threads)
    qualam_rt.set_num_threads(args.threads)
    from training.train import load_model

    examples = squad.load_examples(DEV)
    if args.eval_examples:
        examples = examples[:args.eval_examples]
    any_qrt = args.qrt or args.finetuned_qrt
    engine = qualam_rt.Engine(any_qrt, threads=args.threads) if any_qrt else None
    if engine is None:
        raise SystemExit("need --qrt or --finetuned-qrt (its tokenizer makes the windows)")
    windows = engine.windows([(e.question, e.context) for e in examples])
    mix = windows[:: max(1, len(windows) // args.mix)][:args.mix]
    n384 = [featurize.Window(0, np.random.default_rng(i).integers(1000, 30000, 384).astype(np.int32),
                         np.zeros(384, np.int32), np.full((384, 2), -1)) for i in range(32)]
    from qualam_rt.cli import parse_length_config
    configs = [parse_length_config(c) for c in args.config or (["default"] if args.qrt else [])]
    configs = [qualam_rt.Engine(args.qrt).length_config if c == "default" else c for c in configs]
    configs = [c for c in configs if c is not None]  # a default of full length is the full row
    arch = engine.architecture
    full_real_macs = sum(encoder_macs(arch, len(w.input_ids)) for w in windows)

    rows = []

    def add(model_name, size_mb, ratios, infer, precision):
        print(f"{model_name} {precision} {ratios}", flush=True)
        row = {"model": model_name, "precision": precision, "size_mb": size_mb,
               "tokens_per_layer_at_384": layer_lengths(384, ratios) if ratios else [384] * arch["layers"],
               "macs_at_384": encoder_macs(arch, 384, ratios), "config": ratios,
               "padded_384_macs_share": encoder_macs(arch, 384, ratios) / encoder_macs(arch, 384),
               "real_macs_share": sum(encoder_macs(arch, len(w.input_ids), ratios) for w in windows) / full_real_macs}
        row.update(evaluate(infer, examples, windows))
        row["ms_bs32_n384"] = ms_per_sample(infer, n384, 32, args.repeats)
        row["ms_dev_mix"] = ms_per_sample(infer, mix, 32, args.repeats)
        rows.append(row)
        print(row, flush=True)

    if args.finetuned:
        m = load_model(args.finetuned).eval()
        add("MiniLM (fine-tuned)", state_mb(m), None, torch_logits_fn(m, None), "FP32")
    if args.finetuned_qrt:
        e = qualam_rt.Engine(args.finetuned_qrt, threads=args.threads, length_config="full")
        add("MiniLM (fine-tuned)", Path(args.finetuned_qrt).stat().st_size / 1e6, None, e.logits, "INT8")
    if args.lat:
        m = load_model(args.lat).eval()
        for config in [None] + configs:
            add("LA-MiniLM", state_mb(m), config, torch_logits_fn(m, config), "FP32")
    if args.qrt:
        size = Path(args.qrt).stat().st_size / 1e6
        for config in [None] + configs:
            e = qualam_rt.Engine(args.qrt, threads=args.threads, length_config="full" if config is None else config)
            add("QuaLA-MiniLM", size, config, e.logits, "INT8")
    base = transformers.BertForQuestionAnswering(transformers.BertConfig()).eval()

    def base_infer(ws):
        ids = torch.from_numpy(np.stack([w.input_ids.astype(np.int64) for w in ws]))
        with torch.inference_mode():
            base(input_ids=ids)
    base_bs32 = ms_per_sample(base_infer, n384, 32, 1)
    for r in rows:
        r["speedup_vs_bert_base_bs32_n384"] = base_bs32 / r["ms_bs32_n384"]
        r["macs_vs_bert_base_at_384"] = r["macs_at_384"] / bert_base_macs(384)
    md = [f"SQuAD v1.1 dev ({len(examples)} questions); latency per sample with {args.threads} threads; "
          f"BERT-base FP32 (PyTorch, random weights) at bs32 n384: {base_bs32:.0f} ms per sample.", "",
          "| model | precision | size (MB) | tokens per layer at n=384 | EM | F1 | ms/sample bs32 n384 | ms/sample dev mix | "
          "MACs at n=384 (vs BERT-base) | MACs vs full: padded 384 / real tokens | speedup vs BERT-base |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['precision']} | {r['size_mb']:.1f} | {tuple(r['tokens_per_layer_at_384'])} | "
                  f"{r['exact_match']:.2f} | {r['f1']:.2f} | {r['ms_bs32_n384']:.1f} | {r['ms_dev_mix']:.1f} | "
                  f"{r['macs_at_384'] / 1e9:.2f} G ({r['macs_vs_bert_base_at_384']:.3f}) | "
                  f"{r['padded_384_macs_share']:.2f} / {r['real_macs_share']:.2f} | "
                  f"{r['speedup_vs_bert_base_bs32_n384']:.1f}x |")
    write_results(args.name, header(args.threads) | {"bert_base_ms_bs32_n384": base_bs32}, rows, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
