"""Training throughput on this CPU: milliseconds per example of a fine-tune step and of a LAT
(drop-and-restore) step, the training code of an earlier commit ("before") against this tree's
("now"), fp32 and bf16 autocast, all in one run.

Each code runs in its own worker process (both import a package named `training`), on the
same windows: a real SQuAD length mix (384-token windows, stride 128, of held-out training
articles, batched by similar length as training batches them; synthetic lengths if SQuAD is
absent), each code padding a batch as it does. The workers take turns case by case, in
alternating order, and every case first runs once over all batches, so each code has built
the kernels (oneDNN's, per matmul shape) its steady state reuses. A step is the forward and
backward pass and an AdamW update (each code's own: fused since the commit after 318b6ad); LAT is each code's default (two random sub-models plus the
smallest, length-drop bound 0.2, in-place distillation). "LAT, recipe" is the step the shipped
model's cycles train with (RECIPE: a frozen teacher, the paper's two budgets and the 0.74 late
drop as fixed sub-models, one random budget drawn against 384 tokens): this tree only, with the
sub-models starting from the full model's outputs of the layers before their first drop
(training.train.SHARE_LAYERS) and without.

The default "before", 039641a, is the training code that issue 17 measured: every sub-model
computes every token and masks the dropped ones, explicit attention, a backward pass per model.

    python bench/train_throughput.py --threads 2 --batches 6 --rounds 3 --exact-widths
    python bench/train_throughput.py --threads 2 --batches 3 --rounds 3 --name train_throughput_shared_layers
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SQUAD_TRAIN = ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"
STEPS = ("finetune", "lat", "lat_recipe")
STEP_NAMES = {"finetune": "finetune", "lat": "LAT", "lat_recipe": "LAT, recipe"}
RECIPE = dict(teacher="init", num_sandwich=1, length_sampling="padded", max_seq_len=384,
              sandwich_configs="tokens:315,251,242,159,142,33;tokens:269,253,252,202,104,34;"
                               "1,1,0.9609375,0.9010416666666666,0.24739583333333334,0.057291666666666664")


def length_mix_batches(count: int, batch: int, seed: int = 0):
    """`count` training-style batches of real windows (similar lengths; index lists of the
    current code's bucketing), each as this tree collates it."""
    import torch
    try:
        from tokenizers import Tokenizer
        from training.data import Features, split_articles
        from training.model import load_qrt
        _, held = split_articles(SQUAD_TRAIN, 20)
        tok = Tokenizer.from_str(load_qrt(ROOT / "qualam_rt" / "models" / "default.qrt")[1])
        feats = Features(tok, held[:1500])
        order = feats.batches(batch, shuffle=True, rng=np.random.default_rng(seed))
        picked = [order[i] for i in np.random.default_rng(seed).choice(len(order), count, replace=False)]
        return [feats.collate(ix) for ix in picked], "SQuAD held-out windows"
    except (OSError, ImportError, FileNotFoundError) as e:
        print("no SQuAD here, synthetic lengths:", e)
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            L = int(rng.integers(120, 385))
            n = torch.from_numpy(rng.integers(L // 2, L + 1, batch))
            n[0] = L
            out.append({"input_ids": torch.randint(1000, 30000, (batch, L)), "token_type_ids": torch.zeros(batch, L, dtype=torch.long),
                        "attention_mask": torch.arange(L)[None] < n[:, None], "start": torch.zeros(batch, dtype=torch.long),
                        "end": torch.zeros(batch, dtype=torch.long)})
        return out, "synthetic lengths 120-384"


def trimmed(batch: dict) -> dict:
    """The batch padded only to its longest window (how the code before collated)."""
    L = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :L] if v.dim() == 2 else v for k, v in batch.items()}


def extract_tree(rev: str, into: Path) -> Path:
    """The `training` package of commit rev, under into/."""
    data = subprocess.run(["git", "archive", rev, "training"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def worker(code_dir: str, batches_file: str, threads: int, row_multiple: int, share_layers: bool) -> None:
    """Runs steps on request: reads `step bf16` lines, answers seconds per example as JSON."""
    import importlib.machinery

    import qualam_rt.featurize
    import qualam_rt.squad
    import torch

    class CodeFinder:
        """Finds `training` in code_dir, ahead of an editable install's redirect to this tree."""
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "training" or name.startswith("training."):
                return importlib.machinery.PathFinder.find_spec(name, [code_dir] if name == "training" else path)
            return None
    sys.meta_path.insert(0, CodeFinder)
    # The code before read these window constants from qualam_rt.squad (now qualam_rt.featurize).
    for name in ("MAX_SEQ_LEN", "DOC_STRIDE", "MAX_QUERY_LEN"):
        if not hasattr(qualam_rt.squad, name):
            setattr(qualam_rt.squad, name, getattr(qualam_rt.featurize, name))
    import training.model
    import training.train
    from training.model import BertConfig, BertQA
    from training.train import TrainConfig, lat_step, span_loss
    assert Path(training.__file__).resolve().parent.parent == Path(code_dir).resolve()
    if row_multiple:
        training.model.ROW_MULTIPLE = row_multiple
    if hasattr(training.train, "SHARE_LAYERS"):
        training.train.SHARE_LAYERS = share_layers
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertQA(BertConfig()).train()
    cfg = TrainConfig(step="lat", lr=1e-6)
    recipe, teacher = None, None
    if "sandwich_configs" in {f.name for f in dataclasses.fields(TrainConfig)}:
        recipe = TrainConfig(step="lat", lr=1e-6, **RECIPE)
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    # The code's own optimizer; the code before made an unfused AdamW inside train().
    make = getattr(training.train, "make_optimizer", None)
    opt = make(model, cfg) if make else torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    batches = torch.load(batches_file)
    gen = torch.Generator().manual_seed(0)
    examples = sum(len(b["start"]) for b in batches)
    for line in sys.stdin:
        step, bf16 = line.split()

        def autocast():
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 == "True")
        t = time.perf_counter()
        for batch in batches:
            if step == "lat":
                lat_step(model, batch, cfg, gen, autocast)
            elif step == "lat_recipe":
                lat_step(model, batch, recipe, gen, autocast, teacher)
            else:
                with autocast():
                    s, e = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
                    loss = span_loss(s, e, batch)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(json.dumps((time.perf_counter() - t) / examples), flush=True)


class Worker:
    def __init__(self, code_dir: Path, batches_file: Path, threads: int, steps, row_multiple: int = 0,
                 share_layers: bool = True):
        self.steps = steps
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(code_dir), "--batches-file",
                                      str(batches_file), "--threads", str(threads), "--row-multiple", str(row_multiple)]
                                     + ([] if share_layers else ["--no-share-layers"]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def run(self, step: str, bf16: bool) -> float:
        self.proc.stdin.write(f"{step} {bf16}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=6, help="batches of the length mix timed per case and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="039641a", help="commit whose training code is 'before'")
    ap.add_argument("--exact-widths", action="store_true",
                    help="also time this tree with bf16 gathered widths not rounded (ROW_MULTIPLE 1)")
    ap.add_argument("--precisions", default="auto",
                    help="fp32,bf16 | fp32 | bf16; auto: bf16 autocast only where the CPU has native bf16")
    ap.add_argument("--name", default="train_throughput")
    ap.add_argument("--no-share-layers", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--row-multiple", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batches-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batches_file, args.threads, args.row_multiple, not args.no_share_layers)
    import torch
    from training.train import native_bf16
    args.before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True, capture_output=True,
                                 text=True).stdout.strip()  # a name like HEAD is recorded as the commit it was
    precisions = {"auto": [False, True] if native_bf16() else [False], "fp32": [False], "bf16": [True],
                  "fp32,bf16": [False, True]}[args.precisions]
    cases = [(step, bf16) for step in STEPS for bf16 in precisions]
    batches, source = length_mix_batches(args.batches, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(batches, tmp / "now.pt")
        torch.save([trimmed(b) for b in batches], tmp / "before.pt")
        workers = {"before": Worker(extract_tree(args.before, tmp / "before"), tmp / "before.pt", args.threads,
                                    ("finetune", "lat")),
                   "now": Worker(ROOT, tmp / "now.pt", args.threads, STEPS),
                   "now, layers not shared": Worker(ROOT, tmp / "now.pt", args.threads, ("lat", "lat_recipe"),
                                                    share_layers=False)}
        if args.exact_widths:
            workers["now, exact widths"] = Worker(ROOT, tmp / "now.pt", args.threads, ("finetune", "lat"), row_multiple=1)
        try:
            for case in cases:  # warm-up: every batch once
                for w in workers.values():
                    if case[0] in w.steps:
                        w.run(*case)
            times = {(code, case): [] for code in workers for case in cases}
            for r in range(args.rounds):
                for case in cases:
                    for code in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
                        if case[0] in workers[code].steps:
                            times[code, case].append(workers[code].run(*case))
                            print(code, case, f"{1e3 * times[code, case][-1]:.1f} ms/example", flush=True)
        finally:
            for w in workers.values():
                w.close()

    def ms(code, case):
        return 1e3 * statistics.median(times[code, case]) if times.get((code, case)) else None
    rows = []
    exact = "now, exact widths" in workers
    for step, bf16 in cases:
        old, new, unshared = ms("before", (step, bf16)), ms("now", (step, bf16)), ms("now, layers not shared", (step, bf16))
        rows.append({"step": step, "precision": "bf16 autocast" if bf16 else "fp32", "before_ms_per_example": old,
                     "now_ms_per_example": new, "speedup": old / new if old else None,
                     "layers_not_shared_ms_per_example": unshared, "sharing_speedup": unshared / new if unshared else None})
        if exact and step != "lat_recipe":
            rows[-1]["exact_widths_ms_per_example"] = ms("now, exact widths", (step, bf16))
    for r in rows:
        ft = next(f for f in rows if f["step"] == "finetune" and f["precision"] == r["precision"])
        for code in ("before", "now"):
            r[f"{code}_lat_over_finetune"] = r[f"{code}_ms_per_example"] / ft[f"{code}_ms_per_example"] if r[
                f"{code}_ms_per_example"] else None
    real = [int(n) for b in batches for n in b["attention_mask"].sum(1)]

    def f(v, fmt):
        return "" if v is None else format(v, fmt)
    md = [f"MiniLM-L6-H384, {args.batches} batches of {args.batch} ({source}; mean {np.mean(real):.0f} real tokens), "
          f"{args.threads} threads, median over {args.rounds} rounds (the codes alternating). Before: the training "
          f"code of {args.before}. CPU native bf16: {native_bf16()}.", "",
          "| step | precision | before ms/example | now ms/example | speedup | LAT / fine-tune before | now | "
          "now, layers not shared | sharing speedup |", "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {STEP_NAMES[r['step']]} | {r['precision']} | {f(r['before_ms_per_example'], '.1f')} | "
           f"{r['now_ms_per_example']:.1f} | {f(r['speedup'], '.2f')}{'x' if r['speedup'] else ''} | "
           f"{f(r['before_lat_over_finetune'], '.2f')} | {r['now_lat_over_finetune']:.2f} | "
           f"{f(r['layers_not_shared_ms_per_example'], '.1f')} | "
           f"{f(r['sharing_speedup'], '.2f')}{'x' if r['sharing_speedup'] else ''} |" for r in rows]
    if exact:
        md += ["", "This tree with bf16 gathered widths exact (ROW_MULTIPLE 1) against rounded to "
               "16 rows (fp32 widths are exact in both):", "", "| step | precision | exact ms/example | rounded | "
               "exact / rounded |", "|---|---|---|---|---|"]
        md += [f"| {r['step']} | {r['precision']} | {r['exact_widths_ms_per_example']:.1f} | {r['now_ms_per_example']:.1f} | "
               f"{r['exact_widths_ms_per_example'] / r['now_ms_per_example']:.2f} |" for r in rows if r['step'] != "lat_recipe"]
    write_results(args.name, header(args.threads) | {"source": source, "before": args.before}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
