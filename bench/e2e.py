"""End-to-end comparison: qualam_rt against PyTorch, ONNX Runtime and OpenVINO on the same weights.

For one trained model (the .qrt file and the FP32 checkpoint it was exported from) or a
random-weight MiniLM-L6-H384, in one run and with one thread count:
  - latency per sample (median after warm-up; all systems timed round by round, interleaved,
    so that a slow spell of the machine falls on all of them) at n=384 batch 1 and 32, n=128 batch 1,
    and on the real length mix of SQuAD dev windows (qualam_rt packs them without padding;
    peers get length-sorted batches of 32 padded to their longest);
  - SQuAD v1.1 dev EM/F1 of every system that runs the trained weights.
Peers: PyTorch FP32 eager and dynamic INT8 (transformers' BertForQuestionAnswering), ONNX
Runtime FP32 after its transformer optimizer and dynamic INT8 (per channel), OpenVINO with
its default precision (latency hint) and INT8 through NNCF post-training quantization, and
BERT-base FP32 (random weights) as the paper's 1x reference. A peer whose package is missing
is skipped with a note (`pip install ".[bench]"`).

    python bench/e2e.py --qrt model.qrt --checkpoint runs/quantize/model.pt --threads 2
    python bench/e2e.py --random --threads 2          # speed only
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER, PAPER_LABEL, PAPER_TOKENS, RESULTS, header, interleaved_ms_per_sample, synthetic_windows, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import decode, squad  # noqa: E402

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "dev-v1.1.json"
# System names of the results rows that other scripts read (bench/amx_targets.py).
PAPER_CONFIG = f"paper config {PAPER_LABEL}/384"  # the paper's configuration as keep ratios
QUALAM_FULL = "qualam_rt INT8 full"
QUALAM_PAPER = f"qualam_rt INT8 {PAPER_CONFIG}"
OPENVINO_INT8 = "OpenVINO INT8 (NNCF PTQ)"


# ---- models -------------------------------------------------------------------------------

def hf_model_from(model):
    """transformers BertForQuestionAnswering holding the weights of a training BertQA."""
    import torch
    import transformers
    c = model.config
    cfg = transformers.BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden, num_hidden_layers=c.layers,
                                  num_attention_heads=c.heads, intermediate_size=c.intermediate,
                                  max_position_embeddings=c.max_position, type_vocab_size=c.type_vocab_size,
                                  layer_norm_eps=c.layer_norm_eps)
    hf = transformers.BertForQuestionAnswering(cfg).eval()
    s = model.state_dict()
    H = c.hidden
    new = {"bert.embeddings.word_embeddings.weight": s["word.weight"],
           "bert.embeddings.position_embeddings.weight": s["position.weight"],
           "bert.embeddings.token_type_embeddings.weight": s["token_type.weight"],
           "bert.embeddings.LayerNorm.weight": s["emb_ln.weight"], "bert.embeddings.LayerNorm.bias": s["emb_ln.bias"],
           "qa_outputs.weight": s["qa.weight"], "qa_outputs.bias": s["qa.bias"]}
    for i in range(c.layers):
        p, q = f"bert.encoder.layer.{i}.", f"layers.{i}."
        for part in ("weight", "bias"):
            for j, n in enumerate(("query", "key", "value")):
                new[p + f"attention.self.{n}.{part}"] = s[q + f"qkv.{part}"][j * H:(j + 1) * H]
            new[p + f"attention.output.dense.{part}"] = s[q + f"out.{part}"]
            new[p + f"attention.output.LayerNorm.{part}"] = s[q + f"ln1.{part}"]
            new[p + f"intermediate.dense.{part}"] = s[q + f"ffn1.{part}"]
            new[p + f"output.dense.{part}"] = s[q + f"ffn2.{part}"]
            new[p + f"output.LayerNorm.{part}"] = s[q + f"ln2.{part}"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    return hf


def padded(windows):
    L = max(len(w.input_ids) for w in windows)
    ids = np.zeros((len(windows), L), np.int64)
    types = np.zeros((len(windows), L), np.int64)
    mask = np.zeros((len(windows), L), np.int64)
    for i, w in enumerate(windows):
        n = len(w.input_ids)
        ids[i, :n], types[i, :n], mask[i, :n] = w.input_ids, w.token_type_ids, 1
    return ids, types, mask


class System:
    """name, infer(windows) -> list of [n, 2] logits, and whether it runs the trained weights."""

    def __init__(self, name, infer, trained=True, note=""):
        self.name, self.infer, self.trained, self.note = name, infer, trained, note


def qualam_systems(engine, frontier, other_attention=None):
    """The engine at full length and at each frontier point; with other_attention (an Engine
    of the same model on another attention path) also that one at full length."""
    out = [System(QUALAM_FULL, lambda ws: engine.logits(ws, "full"))]
    if other_attention is not None and other_attention.attention != engine.attention:
        out.append(System(f"qualam_rt INT8 full, {other_attention.attention} attention",
                          lambda ws: other_attention.logits(ws, "full")))
    for i, p in enumerate(frontier):
        r = tuple(p["ratios"])
        label = p.get("label") or (f"{'default, ' if p.get('default') else ''}frontier {i}: "
                                   f"{p['macs_vs_bert_base']:.3f} of BERT-base MACs")
        out.append(System(f"qualam_rt INT8 {label}", lambda ws, r=r: engine.logits(ws, r)))
    return out


def on_isa(isa, engine):
    """infer(windows) of the engine at full length with another kernel path active for the call."""
    def infer(ws):
        before = qualam_rt.isa()
        qualam_rt.set_isa(isa)
        try:
            return engine.logits(ws, "full")
        finally:
            qualam_rt.set_isa(before)
    return infer


def torch_runner(m):
    import torch

    def infer(ws):
        ids, types, mask = (torch.from_numpy(a) for a in padded(ws))
        with torch.inference_mode():
            o = m(input_ids=ids, token_type_ids=types, attention_mask=mask)
        s, e = o.start_logits.numpy(), o.end_logits.numpy()
        return [np.stack([s[i, :len(w.input_ids)], e[i, :len(w.input_ids)]], 1) for i, w in enumerate(ws)]
    return infer


def torch_systems(hf):
    import torch
    q = torch.ao.quantization.quantize_dynamic(hf, {torch.nn.Linear}, dtype=torch.qint8)
    return [System("PyTorch FP32 eager", torch_runner(hf)), System("PyTorch dynamic INT8", torch_runner(q))]


def export_onnx(hf, path):
    import torch
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(hf, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["start", "end"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                    "start": axes, "end": axes}, opset_version=17)


def ort_systems(onnx_path, config, threads, workdir):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    opt_path = workdir / "opt.onnx"
    optimizer.optimize_model(str(onnx_path), model_type="bert", num_heads=config["heads"],
                             hidden_size=config["hidden"]).save_model_to_file(str(opt_path))
    q_path = workdir / "opt_int8.onnx"
    import onnx
    quantize_dynamic(str(opt_path), str(q_path), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    def runner(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def infer(ws):
            ids, types, mask = padded(ws)
            s, e = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            return [np.stack([s[i, :len(w.input_ids)], e[i, :len(w.input_ids)]], 1) for i, w in enumerate(ws)]
        return infer

    return [System("ONNX Runtime FP32 (optimized)", runner(opt_path)),
            System("ONNX Runtime INT8 (dynamic, per channel)", runner(q_path))]


def openvino_systems(onnx_path, threads, calib_windows):
    import openvino as ov
    core = ov.Core()
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    model = core.read_model(str(onnx_path))

    def runner(m):
        compiled = core.compile_model(m, "CPU", cfg)

        def infer(ws):
            ids, types, mask = padded(ws)
            r = compiled({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            s, e = r[compiled.output(0)], r[compiled.output(1)]
            return [np.stack([s[i, :len(w.input_ids)], e[i, :len(w.input_ids)]], 1) for i, w in enumerate(ws)]
        return infer

    systems = [System("OpenVINO default precision", runner(model))]
    try:
        import nncf
        data = [dict(zip(("input_ids", "token_type_ids", "attention_mask"), padded([w]))) for w in calib_windows]
        qmodel = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                               subset_size=len(data))
        systems.append(System(OPENVINO_INT8, runner(qmodel)))
    except ImportError:
        print("nncf not installed: skipping OpenVINO INT8")
    return systems


def bert_base_system():
    import transformers
    base = transformers.BertForQuestionAnswering(transformers.BertConfig()).eval()
    return System("BERT-base FP32 (PyTorch, random weights)", torch_runner(base), trained=False)


# ---- measurements ------------------------------------------------------------------------

def accuracy(system, examples, windows, batch=32):
    return squad.evaluate(examples, decode.predict(examples, windows, system.infer, batch, progress=system.name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qrt", help="trained .qrt model")
    ap.add_argument("--checkpoint", help="the FP32 model.pt it was exported from")
    ap.add_argument("--random", action="store_true", help="random-weight MiniLM-L6-H384: speed only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mix", type=int, default=256, help="dev windows in the length mix")
    ap.add_argument("--eval-examples", type=int, default=0, help="dev questions for EM/F1 (0 = all 10,570)")
    ap.add_argument("--skip", default="", help="comma-separated system name prefixes to skip")
    ap.add_argument("--frontier-points", type=int, default=3, help="frontier configurations measured (evenly spaced)")
    ap.add_argument("--gap-s", type=float, default=0.05,
                    help="idle seconds before each timed pass, so no runtime's spinning threads slow the next")
    ap.add_argument("--name", default="e2e")
    ap.add_argument("--also-isa", default="avx512vnni",
                    help="also time the full-length engine on this kernel path ('' = none; skipped if unsupported)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    qualam_rt.set_num_threads(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    from training.model import BertConfig, BertQA
    from training.train import load_model

    workdir = Path(tempfile.mkdtemp())
    if args.random:
        from training.export import export_qrt
        from training.model import minilm_directory
        torch.manual_seed(0)
        model = BertQA(BertConfig()).eval()
        tok = (minilm_directory() / "tokenizer.json").read_text()
        qrt = export_qrt(model, tok, workdir / "random.qrt")
    else:
        model, qrt = load_model(args.checkpoint).eval(), Path(args.qrt)
        model.set_quantized(False)
    engine = qualam_rt.Engine(qrt, threads=args.threads, length_config="full")
    config = engine.architecture
    frontier = [dict(p) for p in engine.frontier]
    if len(frontier) > args.frontier_points:
        keep = np.linspace(0, len(frontier) - 1, args.frontier_points).round().astype(int)
        frontier = [frontier[i] for i in sorted(set(keep.tolist()))]
    default = engine.meta.get("default_config")
    for p in frontier:
        p["default"] = default is not None and list(p["ratios"]) == list(default)
    paper = {"ratios": PAPER, "label": PAPER_CONFIG}

    fp32_attention = qualam_rt.Engine(qrt, threads=args.threads, length_config="full", attention="fp32")
    systems = qualam_systems(engine, frontier or ([paper] if args.random else []), fp32_attention)
    if args.random:
        budgets = {"tokens": PAPER_TOKENS}
        systems.append(System(f"qualam_rt INT8 paper config as token budgets {PAPER_LABEL}",
                              lambda ws: engine.logits(ws, budgets)))
    if args.also_isa and args.also_isa != qualam_rt.isa() and args.also_isa in qualam_rt.supported_isas():
        systems.insert(1, System(f"qualam_rt INT8 full, {args.also_isa} path", on_isa(args.also_isa, engine)))
    hf = hf_model_from(model)
    notes = []
    systems += torch_systems(hf)
    dev_examples = squad.load_examples(DEV)
    dev_windows = engine.windows([(e.question, e.context) for e in dev_examples[:max(args.mix, 1)]])[:args.mix]
    try:
        onnx_path = workdir / "model.onnx"
        export_onnx(hf, onnx_path)
        try:
            systems += ort_systems(onnx_path, config, args.threads, workdir)
        except ImportError as e:
            notes.append(f"ONNX Runtime skipped: {e}")
        try:
            systems += openvino_systems(onnx_path, args.threads, dev_windows[:64])
        except ImportError as e:
            notes.append(f"OpenVINO skipped: {e}")
    except ImportError as e:
        notes.append(f"ONNX export unavailable, ORT/OpenVINO skipped: {e}")
    systems.append(bert_base_system())
    skip = [s for s in args.skip.split(",") if s]
    systems = [s for s in systems if not any(s.name.startswith(p) for p in skip)]
    for n in notes:
        print(n)

    settings = [("n=384 bs=1", synthetic_windows(384, 1, config["vocab_size"]), 1),
                ("n=384 bs=32", synthetic_windows(384, 32, config["vocab_size"]), 32),
                ("n=128 bs=1", synthetic_windows(128, 1, config["vocab_size"]), 1),
                (f"SQuAD dev mix ({len(dev_windows)} windows, mean {np.mean([len(w.input_ids) for w in dev_windows]):.0f})",
                 dev_windows, 32)]
    eval_ex = dev_examples[:args.eval_examples] if args.eval_examples else dev_examples
    eval_windows = engine.windows([(e.question, e.context) for e in eval_ex]) if not args.random else []
    # Timed setting by setting with all systems interleaved (common.interleaved_ms_per_sample):
    # this machine's speed drifts by tens of percent over minutes.
    latency = {s.name: {} for s in systems}
    for name, ws, batch in settings:
        # A batch-1 pass is one window: 5x the passes for a stable median at little cost.
        reps = {s.name: 5 * args.repeats if len(ws) == 1 else
                args.repeats if not s.name.startswith("BERT-base") else max(2, args.repeats // 2) for s in systems}
        got = interleaved_ms_per_sample({s.name: (s.infer, not s.name.startswith("qualam_rt")) for s in systems},
                                        ws, batch, reps, gap_s=args.gap_s)
        for s in systems:
            latency[s.name][name] = got[s.name]
        print(name, {k: round(v, 2) for k, v in got.items()}, flush=True)
    rows = []
    for s in systems:
        row = {"system": s.name} | latency[s.name]
        if not args.random and s.trained:
            row.update(accuracy(s, eval_ex, eval_windows))
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = next((r for r in rows if r["system"].startswith("BERT-base")), None)
    cols = [name for name, _, _ in settings]
    md = ["Latency in ms per sample (median of repeated runs after warm-up, all systems interleaved round by round); speedup = BERT-base FP32 latency / "
          "latency in the same setting. EM/F1 on " + (f"the first {len(eval_ex)} of " if args.eval_examples else "") +
          "SQuAD v1.1 dev (10,570 questions)." if not args.random else "Random weights: speed only.", ""]
    md += notes
    md += ["| system | " + " | ".join(cols) + " | speedup (n=384 bs=32) | EM | F1 |", "|---|" + "---|" * (len(cols) + 3)]
    for r in rows:
        sp = f"{base['n=384 bs=32'] / r['n=384 bs=32']:.1f}x" if base else "n/a (BERT-base skipped)"
        md.append(f"| {r['system']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) +
                  f" | {sp} | {r.get('exact_match', float('nan')):.2f} | {r.get('f1', float('nan')):.2f} |")
    versions = {p: md_version(p) for p in ("torch", "transformers", "onnxruntime", "openvino", "nncf", "numpy", "qualam_rt")}
    meta = header(args.threads) | {"versions": versions, "isa": qualam_rt.isa(), "model": str(qrt)}
    write_results(args.name, meta, rows, "\n".join(md) + "\n\nVersions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    plot(rows, RESULTS / f"{args.name}.png")


def md_version(p):
    try:
        return md.version(p)
    except md.PackageNotFoundError:
        return None


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key = next(k for k in rows[0] if k.startswith("SQuAD dev mix"))
    pts = [(r[key], r["f1"], r["system"]) for r in rows if "f1" in r]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for x, y, name in pts:
        ax.scatter(x, y, c="C0" if name.startswith("qualam_rt") else "C1")
        ax.annotate(name.replace("qualam_rt ", ""), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ms per sample, SQuAD dev length mix (log)")
    ax.set_ylabel("F1 (SQuAD v1.1 dev)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
