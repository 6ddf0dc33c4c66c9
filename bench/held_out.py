"""F1/EM of .qrt models on held-out *training* questions (the last 20 training articles, never
trained on): how a model and its default configuration are chosen without touching dev.

    python bench/held_out.py qualam_rt/models/default.qrt runs/qualam-lat2.qrt:full --examples 1500

A model may carry ":full" or ":r1,...,r6" to override its default length configuration and
"@fp32", "@int16" or "@int8" to override its attention path. A training checkpoint
("runs/X/model.pt[:config]", its tokenizer.json beside it) runs as the FP32 PyTorch model
(full length unless a configuration is given). Each row also gives the
configuration's encoder MACs on the real tokens of those questions' windows as a share of full
length's; `--macs-only` gives only that (seconds, no model run). Every row after the first gives
its F1 against the first row's on the same questions, with that paired difference's standard error
(`--pairs`: each second row against the row before it, e.g. two models at one configuration).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import engine_from_spec, header, paired_difference, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import decode, featurize, squad  # noqa: E402
from qualam_rt.cost import encoder_macs  # noqa: E402
from qualam_rt.reference import layer_lengths  # noqa: E402

SQUAD_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "train-v1.1.json"


def config_text(config) -> str:
    if config is None:
        return "full"
    if isinstance(config, dict):
        return "tokens " + str(tuple(config["tokens"]))
    return str(tuple(round(x, 3) for x in config))


class TorchCheckpoint:
    """A training checkpoint in an Engine's place: the FP32 PyTorch model, its tokenizer's
    windows, the engine's configuration syntax."""
    attention = "fp32 (PyTorch)"

    def __init__(self, spec: str, threads: int):
        import torch
        from table1 import torch_logits_fn

        from qualam_rt.cli import parse_length_config
        from training.data import load_tokenizer
        from training.train import load_model
        torch.set_num_threads(threads)
        path, _, cfg = spec.partition(":")
        config = parse_length_config(cfg or "full")
        if config == "default":
            raise SystemExit(f"{spec}: a checkpoint has no default configuration; give one, or :full")
        self.path, self.length_config = Path(path), None if config == "full" else config
        model = load_model(self.path).eval()
        self.architecture = model.config.to_dict()
        self._tokenizer = load_tokenizer(self.path.parent)
        self.logits = torch_logits_fn(model, self.length_config)

    def windows(self, pairs):
        return featurize.make_windows(self._tokenizer, pairs)


def model_from_spec(spec: str, threads: int):
    return TorchCheckpoint(spec, threads) if spec.partition(":")[0].endswith(".pt") else engine_from_spec(spec, threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="MODEL.qrt[:full|:r1,...][@attention] or CHECKPOINT.pt[:full|:r1,...]")
    ap.add_argument("--examples", type=int, default=1500)
    ap.add_argument("--held-out-articles", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--macs-only", action="store_true", help="only the real-token MACs shares, no F1")
    ap.add_argument("--pairs", action="store_true",
                    help="models come in pairs (A:config B:config ...): each second row against the row before")
    ap.add_argument("--name", default="held_out")
    args = ap.parse_args()
    if args.pairs and len(args.models) % 2:
        ap.error(f"--pairs takes an even number of models, not {len(args.models)}")
    held = squad.load_examples(SQUAD_TRAIN, slice(-args.held_out_articles, None))[:args.examples]
    rows, question_f1 = [], []
    key = "f1_vs_pair" if args.pairs else "f1_vs_first"
    for spec in args.models:
        engine = model_from_spec(spec, args.threads)
        windows = engine.windows([(e.question, e.context) for e in held])
        lengths = [len(w.input_ids) for w in windows]
        share = (sum(encoder_macs(engine.architecture, n, engine.length_config) for n in lengths)
                 / sum(encoder_macs(engine.architecture, n) for n in lengths))
        # windows that lose tokens before layer 4 (the paper's budgets: those longer than 242 tokens)
        early = (sum(layer_lengths(n, engine.length_config)[2] < n for n in lengths) / len(lengths)
                 if engine.length_config is not None else 0.0)
        row = {"model": str(engine.path), "length_config": engine.length_config, "attention": engine.attention,
               "real_macs_share": share, "windows_dropped_early": early}
        if not args.macs_only:
            em, f1 = squad.question_scores(held, decode.predict(held, windows, engine.logits, 32))
            row |= squad.summarize(em, f1)
            # the same questions as the first row (or, with --pairs, the row before an odd one):
            # a paired difference and its standard error
            base = len(rows) - len(rows) % 2 if args.pairs else 0
            if base < len(rows):
                row[key], row[key + "_se"] = paired_difference(f1, question_f1[base])
            question_f1.append(f1)
        rows.append(row)
        print(row, flush=True)
    md = [f"The first {len(held)} questions of the last {args.held_out_articles} SQuAD v1.1 training articles; "
          f"kernel path `{qualam_rt.isa()}`.", "",
          f"| model | length config | attention | real-token MACs vs full | windows losing tokens in layers 1-3 | EM | F1 | F1 vs {'the row before' if args.pairs else 'first row'} (± standard error) |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| `{r['model']}` | {config_text(r['length_config'])} | {r['attention']} | {r['real_macs_share']:.3f} | {r['windows_dropped_early']:.3f} | "
           + (f"{r['exact_match']:.2f} | {r['f1']:.2f} | " if "f1" in r else "- | - | ")
           + (f"{r[key]:+.2f} ± {r[key + '_se']:.2f} |" if key in r else "|") for r in rows]
    write_results(args.name, header(args.threads) | {"isa": qualam_rt.isa()}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
