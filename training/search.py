"""Step c) `search`: multi-objective evolutionary search of length configurations.

A gene is the per-layer token count at the reference length n=384, read as keep ratios
(gene / 384 of each window's own length; `--genes ratios`, the default) or as token budgets
(keep at most gene_i tokens: the paper's form, `--genes tokens`).
Fitness: F1 of the engine on held-out training articles (never the dev set). Cost: MACs of
the encoder on those same windows, as a fraction of BERT-base's MACs on them (the paper's
axis), or, hardware-aware, the engine's measured latency.

  population  the full model, the smallest sub-model (every layer keeps ceil(0.8 x previous)),
              late drops (every token through the first half of the layers, then each layer
              keeping 0.7, 0.5 or 0.3 of the one before: cheap in F1, and out of reach of the
              random genes' per-layer bound), the `seeds` (e.g. the configurations the model
              was trained on) and random monotone genes up to `population`;
  each round  30 mutations (every layer resampled with p=0.5 uniformly between its
              neighbours' lengths) and 30 crossovers (element-wise ceil-average) of parents
              drawn from the current Pareto frontier; genes costing less than the smallest
              sub-model are rejected; every evaluated gene is cached (resumable).
  confirmation (confirm_examples > 0) the frontier and every gene within confirm_slack F1 of it
              are scored again on more held-out questions, and the frontier and the default are
              built from those scores: on a few hundred questions the standard error of an F1
              difference is ~0.5, as large as the differences the default is chosen by.
Writes frontier.json (the configuration, F1, latency, and MACs counted both ways: on the real
tokens of the held-out windows, and at n=384 as the paper counts them; the default
configuration: the cheapest within default_f1_drop F1 of the full model) and frontier.png.
The cache records the model, data and settings it was made with: a rerun with others refuses
to reuse it.

    python -m training.search --model runs/lat/model.pt --out runs/search
"""
from __future__ import annotations

import json
import math
import random
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qualam_rt import Engine
from qualam_rt.cost import bert_base_macs, encoder_macs
from qualam_rt.timing import time_call
from training.data import Features, load_tokenizer, split_articles
from training.export import export_qrt
from training.quantize import engine_f1_of
from training.train import DEFAULT_SQUAD_TRAIN, load_model

N_REF = 384


@dataclass
class SearchConfig:
    model: str = "runs/lat/model.pt"
    out: str = "runs/search"
    squad_train: str = DEFAULT_SQUAD_TRAIN
    held_out_articles: int = 20
    eval_examples: int = 300
    population: int = 20
    mutations: int = 30
    crossovers: int = 30
    mutation_prob: float = 0.5
    iterations: int = 5
    length_drop_ratio_bound: float = 0.2
    cost: str = "macs"            # macs | latency
    genes: str = "ratios"         # ratios | tokens: how a gene's counts at n=384 apply to a window
    seeds: str = ""               # ";"-separated genes (comma-separated counts at n=384) in the first population
    default_f1_drop: float = 0.5  # the default configuration may lose at most this much F1
    confirm_examples: int = 0     # >0: score the near-frontier genes again on this many held-out questions
    confirm_slack: float = 0.5    # genes within this much F1 of the search's frontier are confirmed
    latency_repeats: int = 5
    seed: int = 0
    threads: int = 0


def smallest_gene(layers: int, bound: float) -> tuple[int, ...]:
    out, prev = [], N_REF
    for _ in range(layers):
        prev = math.ceil((1 - bound) * prev)
        out.append(prev)
    return tuple(out)


def random_gene(layers: int, bound: float, rng: random.Random) -> tuple[int, ...]:
    out, prev = [], N_REF
    for _ in range(layers):
        prev = rng.randint(math.ceil((1 - bound) * prev), prev)
        out.append(prev)
    return tuple(out)


def late_drop_genes(layers: int) -> list[tuple[int, ...]]:
    """Genes that keep every token through the first half of the layers, then drop
    geometrically. On the fourth cycle's model, dropping in the first layers is what cost F1: at
    0.74 of the MACs a late drop lost 0.9 held-out F1 where the trained (1, 0.95, 0.85, 0.7, 0.55,
    0.2) lost 3.9 (bench/README.md), and two rounds from random genes never got there."""
    genes = []
    for start in range(layers // 2, min(layers // 2 + 2, layers)):
        for keep in (0.7, 0.5, 0.3):
            gene, prev = [N_REF] * layers, N_REF
            for i in range(start, layers):
                prev = gene[i] = max(1, math.ceil(keep * prev))
            genes.append(tuple(gene))
    return genes


def parse_seeds(text: str, layers: int) -> list[tuple[int, ...]]:
    """"384,365,...;315,251,..." -> genes, each checked: `layers` counts in [1, 384], not increasing."""
    genes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        gene = tuple(int(x) for x in part.split(","))
        if len(gene) != layers or not all(1 <= g <= N_REF for g in gene) or any(b > a for a, b in zip(gene, gene[1:])):
            raise ValueError(f"a seed gene is {layers} non-increasing counts in [1, {N_REF}], not {part!r}")
        genes.append(gene)
    return genes


def mutate(gene, prob: float, rng: random.Random) -> tuple[int, ...]:
    g = list(gene)
    for i in range(len(g)):
        if rng.random() < prob:
            upper = N_REF if i == 0 else g[i - 1]
            lower = g[i + 1] if i + 1 < len(g) else 2
            g[i] = rng.randint(min(lower, upper), upper)
    return tuple(g)


def crossover(a, b) -> tuple[int, ...]:
    return tuple(math.ceil((x + y) / 2) for x, y in zip(a, b))


def pareto(points: dict) -> list:
    """Genes not dominated in (lower cost, higher F1), by increasing cost."""
    items = sorted(points.items(), key=lambda kv: (kv[1]["cost"], -kv[1]["f1"]))
    front, best = [], -np.inf
    for gene, p in items:
        if p["f1"] > best:
            front.append(gene)
            best = p["f1"]
    return front


class Evaluator:
    """F1 and cost of genes with the engine running the model (exported once)."""

    def __init__(self, cfg: SearchConfig):
        model = load_model(cfg.model)
        self.config = model.config.to_dict()
        tok_path = Path(cfg.model).parent / "tokenizer.json"
        _, held = split_articles(cfg.squad_train, cfg.held_out_articles)
        rng = np.random.default_rng(cfg.seed)
        held = [held[i] for i in rng.permutation(len(held))[:cfg.eval_examples]]
        self.feats = Features(load_tokenizer(tok_path), held)
        # The engine holds what it needs once built (the file's pages stay mapped after removal).
        with tempfile.TemporaryDirectory() as d:
            path = export_qrt(model, tok_path.read_text(), Path(d) / "search.qrt")
            self.engine = Engine(path, threads=cfg.threads or None, length_config="full")
        self.lengths = [len(w.input_ids) for w in self.feats.windows]
        self.base_macs = sum(bert_base_macs(n) for n in self.lengths)
        self.full_real_macs = sum(encoder_macs(self.config, n) for n in self.lengths)
        self.cfg = cfg

    def length_config(self, gene):
        """The engine's length configuration of a gene: keep ratios, or {"tokens": budgets}."""
        if self.cfg.genes == "tokens":
            return {"tokens": tuple(int(g) for g in gene)}
        return tuple(g / N_REF for g in gene)

    def latency_ms(self, gene, n: int = N_REF) -> float:
        """Median engine latency of one sequence of n tokens (capped by the model) at this gene."""
        from qualam_rt import featurize
        n = min(n, self.config["max_position"])
        token = min(1000, self.config["vocab_size"] - 1)
        w = [featurize.Window(0, np.full(n, token, np.int32), np.zeros(n, np.int32), np.full((n, 2), -1))]
        config = self.length_config(gene)
        return 1e3 * time_call(lambda: self.engine.logits(w, config), warmup=1, repeats=self.cfg.latency_repeats)["median"]

    def __call__(self, gene) -> dict:
        config = self.length_config(gene)
        self.engine.length_config = config
        f1 = engine_f1_of(self.engine, self.feats)
        real = sum(encoder_macs(self.config, n, config) for n in self.lengths)
        point = {("tokens" if isinstance(config, dict) else "ratios"): list(config["tokens"] if isinstance(config, dict) else config),
                 "lengths_at_384": list(gene), "f1": f1,
                 "macs_vs_bert_base": real / self.base_macs,  # real tokens of the held-out windows
                 "real_macs_share": real / self.full_real_macs,
                 "padded_384_macs_share": encoder_macs(self.config, N_REF, config) / encoder_macs(self.config, N_REF),
                 "macs": encoder_macs(self.config, N_REF, config)}
        macs_ratio = point["macs_vs_bert_base"]
        if self.cfg.cost == "latency":
            point["latency_ms"] = self.latency_ms(gene)
        point["cost"] = point["latency_ms"] if self.cfg.cost == "latency" else macs_ratio
        return point


def near_frontier(points: dict, slack: float) -> list:
    """Genes whose F1 is within `slack` of the best F1 at their cost or less (the frontier itself
    at slack 0), by increasing cost."""
    items = sorted(points.items(), key=lambda kv: (kv[1]["cost"], -kv[1]["f1"]))
    out, best = [], -np.inf
    for gene, p in items:
        if p["f1"] >= best - slack:
            out.append(gene)
        best = max(best, p["f1"])
    return out


class ScoreCache:
    """Scores of genes in a json file that records what they depend on (resumable; a file made
    with another model, data or settings is refused)."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity, self.points = path, identity, {}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("identity") != identity:
                changed = sorted(k for k in identity if (stored.get("identity") or {}).get(k) != identity[k])
                raise SystemExit(f"{path} holds scores of another search (differs in: {', '.join(changed)}); "
                                 f"use another --out or remove it")
            self.points = {tuple(json.loads(k)): v for k, v in stored["points"].items()}

    def score(self, genes, evaluate, desc: str) -> None:
        for g in tqdm([g for g in dict.fromkeys(genes) if g not in self.points], desc=desc, leave=False):
            self.points[g] = evaluate(g)
        self.path.write_text(json.dumps({"identity": self.identity,
                                         "points": {json.dumps(list(k)): v for k, v in self.points.items()}}))


def search(cfg: SearchConfig, evaluate=None, confirm=None) -> dict:
    """`evaluate` / `confirm`: gene -> point on the search's / the confirmation's questions
    (default: an Evaluator on eval_examples / confirm_examples held-out questions)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    evaluate = evaluate or Evaluator(cfg)
    layers = evaluate.config["layers"]
    rng = random.Random(cfg.seed)
    scores = ScoreCache(out / "cache.json", cache_identity(cfg))
    cache = scores.points

    def run(genes, desc):
        scores.score(genes, evaluate, desc)

    full, small = (N_REF,) * layers, smallest_gene(layers, cfg.length_drop_ratio_bound)
    init = list(dict.fromkeys([full, small] + late_drop_genes(layers) + parse_seeds(cfg.seeds, layers)))
    while len(init) < cfg.population:
        init.append(random_gene(layers, cfg.length_drop_ratio_bound, rng))
    run(init, "population")
    min_cost = cache[small]["cost"]
    for it in tqdm(range(cfg.iterations), desc="search"):
        front = pareto({g: p for g, p in cache.items() if p["cost"] >= min_cost})
        children = [mutate(rng.choice(front), cfg.mutation_prob, rng) for _ in range(cfg.mutations)]
        children += [crossover(*rng.sample(front, 2)) if len(front) > 1 else mutate(front[0], 1.0, rng)
                     for _ in range(cfg.crossovers)]
        run(children, f"round {it + 1}")
    valid = {g: p for g, p in cache.items() if p["cost"] >= min_cost}
    if cfg.confirm_examples > 0:
        confirm_cfg = replace(cfg, eval_examples=cfg.confirm_examples)
        confirm = confirm or Evaluator(confirm_cfg)
        confirmed = ScoreCache(out / "confirm.json", cache_identity(confirm_cfg))
        candidates = list(dict.fromkeys([full] + near_frontier(valid, cfg.confirm_slack)))
        confirmed.score(candidates, confirm, "confirmation")
        valid = {g: {**confirmed.points[g], "search_f1": cache[g]["f1"]} for g in candidates}
        evaluate = confirm
    front = [dict(valid[g]) for g in pareto(valid)]
    if hasattr(evaluate, "latency_ms"):
        for p in front:
            p.setdefault("latency_ms", evaluate.latency_ms(tuple(p["lengths_at_384"])))
    # The default: the cheapest configuration within default_f1_drop F1 of the full model.
    # The point nearest half the full model's MACs is reported too (the paper's comparison).
    full_cost, full_f1 = valid[full]["macs_vs_bert_base"], valid[full]["f1"]
    default = min((p for p in front if p["f1"] >= full_f1 - cfg.default_f1_drop), key=lambda p: p["cost"],
                  default=valid[full])
    half = min(front, key=lambda p: abs(p["macs_vs_bert_base"] - full_cost / 2))
    result = {"frontier": front, "default_config": config_of_point(default), "half_macs_config": config_of_point(half),
              "evaluated": len(cache), "confirmed": len(valid) if cfg.confirm_examples > 0 else 0,
              "full": valid[full], "config": asdict(cfg)}
    (out / "frontier.json").write_text(json.dumps(result, indent=1))
    plot(valid, front, out / "frontier.png")
    return result


def config_of_point(p: dict):
    """A frontier point's length configuration, as Engine(length_config=...) takes it."""
    return {"tokens": p["tokens"]} if "tokens" in p else p["ratios"]


def cache_identity(cfg: SearchConfig) -> dict:
    """What a cached score depends on: the model file (size and modification time), the data
    and the evaluation settings."""
    model = Path(cfg.model)
    stat = model.stat() if model.exists() else None
    return {"model": str(model.resolve()), "model_size": stat.st_size if stat else None,
            "model_mtime": stat.st_mtime if stat else None, "squad_train": str(cfg.squad_train),
            "held_out_articles": cfg.held_out_articles, "eval_examples": cfg.eval_examples, "seed": cfg.seed,
            "cost": cfg.cost, "genes": cfg.genes}


def plot(cache: dict, front: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = np.array([[p["macs_vs_bert_base"], p["f1"]] for p in cache.values()])
    ax.scatter(pts[:, 0], pts[:, 1], s=8, c="0.7", label="evaluated")
    fr = np.array([[p["macs_vs_bert_base"], p["f1"]] for p in front])
    ax.plot(fr[:, 0], fr[:, 1], "o-", c="C0", label="Pareto frontier")
    ax.set_xlabel("MACs / BERT-base MACs (same inputs)")
    ax.set_ylabel("F1 (held-out training articles)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    from training.train import config_from_args, config_parser
    args = config_parser(SearchConfig, __doc__).parse_args(argv)
    print(json.dumps(search(config_from_args(SearchConfig, args))["frontier"], indent=1))


if __name__ == "__main__":
    main()
