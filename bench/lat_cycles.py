"""What each drop-and-restore cycle from the bundled model bought, per hour of training: for every
cycle, its training hours (from the run's log) and, from its held-out results file (both models
on all held-out questions, INT8 engine, `bench/held_out.py`), the change against the bundled model
at full length and at the paper's two budget configurations, and QuaLA's gap to full length.

    python bench/lat_cycles.py runs/lat_cycle8:held_out_fixed13 runs/lat_cycle16:held_out_fixed19_pairs --name lat_cycles

Each argument is RUN:RESULTS: a run directory (config.json, log.jsonl) and the name of the
results file in bench/results/ whose rows pair the reference model (the first row's) with that
run's exported model, configuration by configuration.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, header, write_results  # noqa: E402
from lat_probes import training_seconds  # noqa: E402
from training.train import PROBES  # noqa: E402  (the paper's two budget configurations, as the runs probe them)

PAPER = {"qualam": PROBES["qualam_tokens"], "la_minilm": PROBES["la_minilm_tokens"]}


def paired_changes(rows: list[dict]) -> dict:
    """From held-out rows of a reference model (the first row's) and one other model: per
    configuration of the two papers (and full length) the other's F1, the change against the
    reference, and its paired standard error where the file has one."""
    reference = rows[0]["model"]
    by_config = {}
    for r in rows:
        key = json.dumps(r["length_config"])
        by_config.setdefault(key, {})["reference" if r["model"] == reference else "run"] = r
    out = {}
    for name, config in {"full": None, **PAPER}.items():
        pair = by_config.get(json.dumps(config), {})
        if "reference" in pair and "run" in pair:
            run, ref = pair["run"], pair["reference"]
            out[name] = {"f1": run["f1"], "reference_f1": ref["f1"], "change": run["f1"] - ref["f1"],
                         "se": run.get("f1_vs_pair_se")}
    return out


def recipe(config: dict) -> str:
    """The settings that tell the cycles apart, in the CLI's words."""
    teacher = {"": "labels, in place", "init": "frozen copy of its init"}.get(config.get("teacher", ""),
                                                                           f"frozen {config.get('teacher')}")
    parts = [f"teacher: {teacher}", f"lr {config['lr']:g}", f"{config['epochs']:g} ep from {config.get('data_offset', 0):g}"]
    if config.get("distill_temperature", 1.0) != 1.0:
        parts.append(f"T {config['distill_temperature']:g}")
    if config.get("min_window_tokens"):
        parts.append(f"windows >= {config['min_window_tokens']}")
    if config.get("keep_answer_weight"):
        parts.append(f"keep-answer {config['keep_answer_weight']:g} at {config['keep_answer_budgets']}")
    return ", ".join(parts + [f"from {config['init']}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cycles", nargs="+", help="RUN:RESULTS")
    ap.add_argument("--name", default="lat_cycles")
    args = ap.parse_args()
    rows = []
    for item in args.cycles:
        run, results = item.rsplit(":", 1)
        config = json.loads((Path(run) / "config.json").read_text())
        records = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]
        seconds = training_seconds(records, config["batch_size"])
        held = json.loads((RESULTS / f"{results}.json").read_text())["rows"]
        changes = paired_changes(held)
        if "full" not in changes or "qualam" not in changes:
            raise SystemExit(f"{results}: no full-length and QuaLA pair of the reference and the run's model")
        rows.append({"run": run, "results": results, "recipe": recipe(config), "steps": max(seconds, default=0),
                     "hours": max(seconds.values(), default=0.0) / 3600, "changes": changes,
                     "qualam_gap": changes["full"]["f1"] - changes["qualam"]["f1"],
                     "reference_qualam_gap": changes["full"]["reference_f1"] - changes["qualam"]["reference_f1"]})

    def cell(change):
        if change is None:
            return "-"
        se = f" ± {change['se']:.2f}" if change["se"] is not None else ""
        return f"{change['change']:+.2f}{se}"

    md = ["Each cycle against the bundled model on the held-out questions of its results file (INT8 engine, "
          "F1 change, ± the paired standard error where the file has it); hours: the run's training time from its "
          "logged rate; QuaLA gap: full-length F1 minus F1 at QuaLA's budgets, the run's model (the bundled "
          "model's in brackets).", "",
          "| run | recipe | steps | hours | full | QuaLA budgets | LA-MiniLM budgets | QuaLA gap | results |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["changes"]
        md.append(f"| `{r['run']}` | {r['recipe']} | {r['steps']} | {r['hours']:.2f} | {cell(c['full'])} | "
                  f"{cell(c['qualam'])} | {cell(c.get('la_minilm'))} | {r['qualam_gap']:.2f} "
                  f"({r['reference_qualam_gap']:.2f}) | `{r['results']}.md` |")
    hours = sum(r["hours"] for r in rows)
    best = max(rows, key=lambda r: r["changes"]["qualam"]["change"])
    md += ["", f"{len(rows)} cycles, {hours:.2f} hours of training in all. The most any moved QuaLA's budgets: "
           f"{best['changes']['qualam']['change']:+.2f} F1 (`{best['run']}`, {best['hours']:.2f} hours, "
           f"{best['changes']['qualam']['change'] / best['hours']:+.2f} per hour; full length "
           f"{best['changes']['full']['change']:+.2f})."]
    write_results(args.name, header(0), rows, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
