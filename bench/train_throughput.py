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
    python bench/train_throughput.py --threads 2 --batches 4 --rounds 3 --torch-compile --name train_throughput_compile

Every run also counts each step's matrix-product MACs and measures torch's matmul speed on this
CPU: a step's time at that speed is the least its arithmetic allows, and "before / at peak" the
most speedup over the code before that a step doing the same arithmetic can reach here.
With --torch-compile, this tree's fine-tune and LAT steps through torch.compile
(TrainConfig.torch_compile) are timed too, and their compile time.
"""
from __future__ import annotations

import argparse
import contextlib
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
from common import header, time_call, write_results  # noqa: E402

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


def matmul_macs_counter():
    """A FlopCounterMode counting the step's matrix products (linears, bmm, torch's fused CPU
    attention forward and backward, which torch's counter does not know) in MACs x 2."""
    import torch
    from torch.utils import flop_counter
    aten = torch.ops.aten
    return flop_counter.FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu.default: flop_counter.sdpa_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward.default: flop_counter.sdpa_backward_flop})


def matmul_peak(bf16: bool, rows: int, repeats: int = 9) -> float:
    """torch's matmul speed (MACs per second) at the encoder's FFN shape, [rows, 384] x [384, 1536]:
    what a step made of matrix products at most reaches."""
    import torch
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(rows, 384).to(dtype), torch.randn(384, 1536).to(dtype)
    return rows * 384 * 1536 / time_call(lambda: a @ b, warmup=3, repeats=repeats)["median"]


def worker(code_dir: str, batches_file: str, threads: int, row_multiple: int, share_layers: bool,
           torch_compile: bool = False) -> None:
    """Runs steps on request: reads `step bf16 count` lines, answers seconds per example (and, when
    count is 1, the matrix-product MACs per example of that pass) as JSON; `peak bf16` lines get
    matmul_peak's MACs per second."""
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
    step_model = training.train.compiled(model) if torch_compile else model
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
    rows = int(np.mean([b["attention_mask"].shape[0] * b["attention_mask"].shape[1] for b in batches]))
    for line in sys.stdin:
        step, bf16, *count = line.split()
        if step == "peak":
            print(json.dumps(matmul_peak(bf16 == "True", rows)), flush=True)
            continue

        def autocast():
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 == "True")
        counter = matmul_macs_counter() if count == ["1"] else contextlib.nullcontext()
        t = time.perf_counter()
        with counter:
            for batch in batches:
                if step == "lat":
                    lat_step(step_model, batch, cfg, gen, autocast)
                elif step == "lat_recipe":
                    lat_step(step_model, batch, recipe, gen, autocast, teacher)
                else:
                    with autocast():
                        s, e = step_model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
                        loss = span_loss(s, e, batch)
                    loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        seconds = (time.perf_counter() - t) / examples
        macs = counter.get_total_flops() / 2 / examples if count == ["1"] else None
        print(json.dumps([seconds, macs]), flush=True)


class Worker:
    def __init__(self, code_dir: Path, batches_file: Path, threads: int, steps, row_multiple: int = 0,
                 share_layers: bool = True, torch_compile: bool = False):
        self.steps = steps
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(code_dir), "--batches-file",
                                      str(batches_file), "--threads", str(threads), "--row-multiple", str(row_multiple)]
                                     + ([] if share_layers else ["--no-share-layers"])
                                     + (["--torch-compile"] if torch_compile else []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"worker died (exit {self.proc.wait()})")
        return json.loads(answer)

    def run(self, step: str, bf16: bool, count: bool = False) -> tuple[float, float | None]:
        """(seconds per example, matrix-product MACs per example if count)."""
        return tuple(self.ask(f"{step} {bf16} {int(count)}"))

    def peak(self, bf16: bool) -> float:
        return self.ask(f"peak {bf16} 0")

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
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time this tree's fine-tune and LAT steps through torch.compile (TrainConfig.torch_compile)")
    ap.add_argument("--precisions", default="auto",
                    help="fp32,bf16 | fp32 | bf16; auto: bf16 autocast only where the CPU has native bf16")
    ap.add_argument("--name", default="train_throughput")
    ap.add_argument("--no-share-layers", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--row-multiple", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batches-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batches_file, args.threads, args.row_multiple, not args.no_share_layers,
                      args.torch_compile)
    import torch
    from training.train import native_bf16
    args.before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True, capture_output=True,
                                 text=True).stdout.strip()  # a name like HEAD is recorded as the commit it was
    precisions = {"auto": [False, True] if native_bf16() else [False], "fp32": [False], "bf16": [True],
                  "fp32,bf16": [False, True]}[args.precisions]
    cases = [(step, bf16) for step in STEPS for bf16 in precisions]
    batches, source = length_mix_batches(args.batches, args.batch)
    compiled = "now, torch.compile"
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
        if args.torch_compile:
            workers[compiled] = Worker(ROOT, tmp / "now.pt", args.threads, ("finetune", "lat"), torch_compile=True)
        try:
            # Warm-up: every batch once, counting the matrix products (the compiled code's are
            # its eager code's; its warm-up is mostly compiling, timed as such).
            macs, warmup_s = {}, {}
            for case in cases:
                for code, w in workers.items():
                    if case[0] in w.steps:
                        seconds, macs[code, case] = w.run(*case, count=code != compiled)
                        warmup_s[code, case] = seconds * sum(len(b["start"]) for b in batches)
            times = {(code, case): [] for code in workers for case in cases}
            peaks = {bf16: [] for bf16 in precisions}
            for r in range(args.rounds):
                for case in cases:
                    for code in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
                        if case[0] in workers[code].steps:
                            times[code, case].append(workers[code].run(*case)[0])
                            print(code, case, f"{1e3 * times[code, case][-1]:.1f} ms/example", flush=True)
                for bf16 in precisions:
                    peaks[bf16].append(workers["now"].peak(bf16))
        finally:
            for w in workers.values():
                w.close()

    def ms(code, case):
        return 1e3 * statistics.median(times[code, case]) if times.get((code, case)) else None
    rows = []
    exact = "now, exact widths" in workers
    for step, bf16 in cases:
        case = (step, bf16)
        old, new, unshared = ms("before", case), ms("now", case), ms("now, layers not shared", case)
        peak = statistics.median(peaks[bf16])
        rows.append({"step": step, "precision": "bf16 autocast" if bf16 else "fp32", "before_ms_per_example": old,
                     "now_ms_per_example": new, "speedup": old / new if old else None,
                     "layers_not_shared_ms_per_example": unshared, "sharing_speedup": unshared / new if unshared else None,
                     "before_macs_per_example": macs.get(("before", case)), "now_macs_per_example": macs[("now", case)],
                     "matmul_peak_macs_per_s": peak,
                     # The step done at torch's matmul peak: the least time its arithmetic allows.
                     "now_at_peak_ms_per_example": 1e3 * macs[("now", case)] / peak})
        if exact and step != "lat_recipe":
            rows[-1]["exact_widths_ms_per_example"] = ms("now, exact widths", case)
        if compiled in workers and step in workers[compiled].steps:
            rows[-1]["compiled_ms_per_example"] = ms(compiled, case)
            rows[-1]["compiled_warmup_s"] = warmup_s[compiled, case]
            rows[-1]["eager_warmup_s"] = warmup_s["now", case]
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
    md += ["", "The arithmetic: matrix-product MACs per example of a step (linears, attention's products, "
           "forward and backward; torch's FlopCounterMode over the warm-up pass), and the time the step "
           "would take if all of it ran at torch's own matmul speed on this CPU (measured each round at the "
           f"FFN shape, [{args.batch} x mean padded length, 384] x [384, 1536]); before / that is the most "
           "speedup over the code before that any code doing this step's arithmetic can reach.", "",
           "| step | precision | before GMAC/example | now GMAC/example | matmul peak GMAC/s | now GMAC/s | "
           "now at peak ms/example | now / at peak | before / at peak |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        at_peak = r["now_at_peak_ms_per_example"]
        md.append(f"| {STEP_NAMES[r['step']]} | {r['precision']} | {f(r['before_macs_per_example'] and r['before_macs_per_example'] / 1e9, '.2f')} | "
                  f"{r['now_macs_per_example'] / 1e9:.2f} | {r['matmul_peak_macs_per_s'] / 1e9:.0f} | "
                  f"{r['now_macs_per_example'] / r['now_ms_per_example'] / 1e6:.0f} | {at_peak:.1f} | "
                  f"{r['now_ms_per_example'] / at_peak:.2f} | "
                  f"{f(r['before_ms_per_example'] and r['before_ms_per_example'] / at_peak, '.2f')} |")
    if exact:
        md += ["", "This tree with bf16 gathered widths exact (ROW_MULTIPLE 1) against rounded to "
               "16 rows (fp32 widths are exact in both):", "", "| step | precision | exact ms/example | rounded | "
               "exact / rounded |", "|---|---|---|---|---|"]
        md += [f"| {r['step']} | {r['precision']} | {r['exact_widths_ms_per_example']:.1f} | {r['now_ms_per_example']:.1f} | "
               f"{r['exact_widths_ms_per_example'] / r['now_ms_per_example']:.2f} |" for r in rows if r['step'] != "lat_recipe"]
    if compiled in workers:
        md += ["", "This tree's steps through torch.compile (`TrainConfig.torch_compile`: dynamic shapes, "
               "inductor) against eager; warm-up: the first pass over the batches (compiling, for the "
               "compiled code):", "", "| step | precision | eager ms/example | compiled | compile speedup | "
               "eager warm-up s | compiled warm-up s |", "|---|---|---|---|---|---|---|"]
        md += [f"| {STEP_NAMES[r['step']]} | {r['precision']} | {r['now_ms_per_example']:.1f} | "
               f"{r['compiled_ms_per_example']:.1f} | {r['now_ms_per_example'] / r['compiled_ms_per_example']:.2f}x | "
               f"{r['eager_warmup_s']:.0f} | {r['compiled_warmup_s']:.0f} |" for r in rows if "compiled_ms_per_example" in r]
    write_results(args.name, header(args.threads) | {"source": source, "before": args.before}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
