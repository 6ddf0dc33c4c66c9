"""The held-out frontier of a drop-and-restore run over its training: the probes that
`python -m training lat --probe-every N` logs (F1 of full length, the paper's configurations
as token budgets, keep ratios at about 0.75 and 0.5 of the real-token MACs), with the training
time at each, and F1 gained per hour. Reads <run>/log.jsonl; writes results/<name>.{md,json,png}.

    python bench/lat_probes.py runs/lat_full2 --name lat_probes
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_results  # noqa: E402


def training_seconds(records: list[dict], batch_size: int) -> dict[int, float]:
    """Training time at each logged step, from the logged rates. Each process (a start or a resume)
    logs its start step, and its examples_per_s averages over its own steps only; so a step's time
    is the time of the processes before it plus its own process's steps at that rate."""
    seconds = {}
    base = start = 0
    for r in records:
        if "start_step" in r:
            base, start = max(seconds.values(), default=0.0), r["start_step"]
        elif "loss" in r:
            seconds[r["step"]] = base + (r["step"] - start) * batch_size / r["examples_per_s"]
    return seconds


def probe_rows(records: list[dict], seconds: dict[int, float]) -> list[dict]:
    """One row per logged probe: its step, the training hours to it, each configuration's F1, and
    the paper's two budget configurations' gaps to full length."""
    rows = []
    for r in records:
        if "probe" in r:
            row = {"step": r["step"], "hours": seconds.get(r["step"], 0.0) / 3600, **r["probe"]}
            row["gap_qualam_tokens"] = row["full"] - row["qualam_tokens"]
            row["gap_la_minilm_tokens"] = row["full"] - row["la_minilm_tokens"]
            rows.append(row)
    return rows


def gained_per_hour(rows: list[dict], names: list[str]) -> dict[str, float]:
    """F1 gained per hour of training from the first probe to the last, per configuration: the
    change over the training time between them (a first probe taken after some training is not
    charged for the hours before it); {} without two probes apart in time."""
    if len(rows) < 2 or rows[-1]["hours"] <= rows[0]["hours"]:
        return {}
    first, last = rows[0], rows[-1]
    return {n: (last[n] - first[n]) / (last["hours"] - first["hours"]) for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--name", default="lat_probes")
    args = ap.parse_args()
    records = [json.loads(line) for line in (Path(args.run) / "log.jsonl").read_text().splitlines()]
    config = json.loads((Path(args.run) / "config.json").read_text())
    seconds = training_seconds(records, config["batch_size"])
    rows = probe_rows(records, seconds)
    if not rows:
        raise SystemExit(f"{args.run}/log.jsonl has no probes (the run had --probe-every 0); its training time: "
                         f"{max(seconds.values(), default=0.0) / 3600:.2f} hours")
    names = [k for k in rows[0] if k not in ("step", "hours") and not k.startswith("gap")]
    # The training log says which precision its probes ran in (runs before it logged one: bf16).
    precisions = sorted({r.get("precision", "bf16") for r in records if "start_step" in r}) or ["bf16"]
    precision = " / ".join("bf16 autocast" if p == "bf16" else p for p in precisions)
    md = [f"Run `{args.run}` ({config['step']}, init `{config['init']}`, lr {config['lr']}, batch {config['batch_size']}, "
          f"windows {config['max_seq_len']}/{config['doc_stride']}); held-out F1 ({precision}, PyTorch, "
          f"{records[[i for i, r in enumerate(records) if 'probe' in r][0]].get('examples')} questions of the held-out articles) "
          "at each probe; hours: wall-clock time of the training processes from their logged rate (probes included, "
          "and any time the process was paused or slowed by other work on the machine).", "",
          "| step | hours | " + " | ".join(names) + " | full - qualam_tokens | full - la_minilm_tokens |",
          "|---|---|" + "---|" * (len(names) + 2)]
    md += [f"| {r['step']} | {r['hours']:.2f} | " + " | ".join(f"{r[n]:.2f}" for n in names) +
           f" | {r['gap_qualam_tokens']:.2f} | {r['gap_la_minilm_tokens']:.2f} |" for r in rows]
    gains = gained_per_hour(rows, names)
    if gains:
        md += ["", "F1 gained per hour of training, first to last probe: " + ", ".join(
            f"{n} {g:+.2f}" for n, g in gains.items())]
    if seconds:
        last_step = max(seconds)
        md += ["", f"Training time to the last logged step ({last_step}): {seconds[last_step] / 3600:.2f} hours."]
    plot(rows, names, Path(__file__).parent / "results" / f"{args.name}.png")
    md += ["", f"![probes]({args.name}.png)"]
    write_results(args.name, header(0) | {"run": args.run, "config": config}, rows, "\n".join(md))
    print("\n".join(md))


def plot(rows, names, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        ax.plot([r["step"] for r in rows], [r[n] for r in rows], "o-", label=n)
    ax.set_xlabel("training step (16 windows each)")
    ax.set_ylabel("held-out F1")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
