"""F1/EM of .qrt models on held-out *training* questions (the last 20 training articles, never
trained on): how a model and its default configuration are chosen without touching dev.

    python bench/held_out.py qualam_rt/models/default.qrt runs/qualam-lat2.qrt:full --examples 1500

A model may carry ":full" or ":r1,...,r6" to override its default length configuration and
"@fp32", "@int16" or "@int8" to override its attention path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import engine_from_spec, header, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import decode, squad  # noqa: E402

SQUAD_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "train-v1.1.json"


def config_text(config) -> str:
    if config is None:
        return "full"
    if isinstance(config, dict):
        return "tokens " + str(tuple(config["tokens"]))
    return str(tuple(round(x, 3) for x in config))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="MODEL.qrt[:full|:r1,...][@attention]")
    ap.add_argument("--examples", type=int, default=1500)
    ap.add_argument("--held-out-articles", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="held_out")
    args = ap.parse_args()
    held = squad.load_examples(SQUAD_TRAIN, slice(-args.held_out_articles, None))[:args.examples]
    rows = []
    for spec in args.models:
        engine = engine_from_spec(spec, args.threads)
        windows = engine.windows([(e.question, e.context) for e in held])
        row = {"model": str(engine.path), "length_config": engine.length_config, "attention": engine.attention,
               **squad.evaluate(held, decode.predict(held, windows, engine.logits, 32))}
        rows.append(row)
        print(row, flush=True)
    md = [f"The first {len(held)} questions of the last {args.held_out_articles} SQuAD v1.1 training articles; "
          f"kernel path `{qualam_rt.isa()}`.", "",
          "| model | length config | attention | EM | F1 |", "|---|---|---|---|---|"]
    md += [f"| `{r['model']}` | {config_text(r['length_config'])} | "
           f"{r['attention']} | {r['exact_match']:.2f} | {r['f1']:.2f} |" for r in rows]
    write_results(args.name, header(args.threads) | {"isa": qualam_rt.isa()}, rows, "\n".join(md))


if __name__ == "__main__":
    main()
