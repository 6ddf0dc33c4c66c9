"""Issue 18's speed and accuracy targets for the `amx` path, checked against the results files
that measure them (each made on a CPU with AMX, all paths or systems in the same run):

    python bench/isa_compare.py --threads 2 --paths avx512vnni amx
    python bench/gemm_bench.py --threads 2 --rows 1024 4096 12288 --repeats 9
    python bench/e2e.py --random --threads 2 --repeats 5 --mix 128 \\
        --skip "BERT-base,ONNX Runtime FP32,OpenVINO default,PyTorch FP32" --name e2e_random_amx
    python bench/amx_targets.py --gemm gemm_amx --e2e e2e_random_amx

Each target is met, not met, or not measured (its file missing, or made without the `amx`
path); the table says which file and row each number comes from.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, header, write_results  # noqa: E402
from e2e import OPENVINO_INT8, QUALAM_FULL, QUALAM_PAPER  # noqa: E402  (the system names of its rows)


def load(name: str | None) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if name and path.exists() else None


def target(name: str, required: float, measured: float | None, source: str, at_most: bool = False) -> dict:
    if measured is None:
        verdict = "not measured"
    else:
        verdict = "met" if (measured <= required if at_most else measured >= required) else "not met"
    return {"target": name, "required": ("<= " if at_most else ">= ") + f"{required:g}",
            "measured": None if measured is None else round(measured, 3), "verdict": verdict, "source": source}


def encoder_targets(isa: dict | None, name: str) -> list[dict]:
    """The full-length encoder at n384 bs32: amx over avx512vnni (median per-round ratio)."""
    row = None
    if isa and "amx" in isa["meta"].get("paths", []):
        row = next((r for r in isa["rows"] if r["setting"] == "n=384 bs=32" and r["config"] == "full"), None)
    return [target("encoder, full length, n384 bs32: amx over avx512vnni", 2.5,
                   row and row["amx_speedup"] / row["avx512vnni_speedup"], f"{name}: n=384 bs=32, full")]


def gemm_targets(gemm: dict | None, name: str) -> list[dict]:
    """At M >= 1024: the fused GEMM over torch._int_mm (both into preallocated outputs) and as a
    fraction of the measured AMX peak. The worst shape decides."""
    rows = [r for r in gemm["rows"] if r["M"] >= 1024] if gemm and gemm["meta"].get("isa") == "amx" else []

    def worst(key: str, label: str, required: float) -> dict:
        have = [r for r in rows if r.get(key) is not None]
        if not have:
            return target(label, required, None, name)
        r = min(have, key=lambda r: r[key])
        return target(label, required, r[key], f"{name}: {key}, the lowest of {len(have)} rows with M >= 1024 "
                                               f"(M {r['M']}, {r['K']}x{r['N']}, {r['epilogue']})")

    return [worst("fused_out_over_int_mm_out", "GEMM, M >= 1024: fused over torch._int_mm", 1.5),
            worst("qualam_fused_out_peak_frac", "GEMM, M >= 1024: fused, fraction of the AMX peak", 0.4)]


def e2e_targets(e2e: dict | None, name: str) -> list[dict]:
    """Against OpenVINO INT8, ms per sample from the same interleaved run."""
    by_system = {r["system"]: r for r in e2e["rows"]} if e2e else {}
    full, paper, ov = by_system.get(QUALAM_FULL), by_system.get(QUALAM_PAPER), by_system.get(OPENVINO_INT8)
    mix = next((k for k in (ov or {}) if k.startswith("SQuAD dev mix")), None)
    measured_amx = e2e is not None and e2e["meta"].get("isa") == "amx"

    def ratio(row, setting):
        if not (measured_amx and row and ov and setting and row.get(setting) and ov.get(setting)):
            return None
        return ov[setting] / row[setting]

    out = [target(f"full length over OpenVINO INT8, {s}", req, ratio(full, s), f"{name}: {QUALAM_FULL}, {s}")
           for s, req in (("n=384 bs=1", 2.0), ("n=384 bs=32", 2.0), ("n=128 bs=1", 1.5))]
    out.append(target("full length over OpenVINO INT8, dev mix", 1.5, ratio(full, mix), f"{name}: {QUALAM_FULL}, {mix}"))
    out.append(target("paper configuration over OpenVINO INT8 (full length), n384 bs32", 3.5, ratio(paper, "n=384 bs=32"),
                      f"{name}: {QUALAM_PAPER}, n=384 bs=32"))
    return out


def f1_targets(dev: dict | None, name: str) -> list[dict]:
    """F1 on dev with the amx path's default attention against the first row's (int16)."""
    if not dev or dev["meta"].get("isa") != "amx" or len(dev["rows"]) < 2:
        return [target("dev F1 change with the amx path", 0.1, None, name, at_most=True)]
    first = dev["rows"][0]
    change = max(abs(r["f1"] - first["f1"]) for r in dev["rows"][1:])
    return [target("dev F1 change with the amx path", 0.1, change, f"{name}: every row against {first['attention']}",
                   at_most=True)]


def check(isa, gemm, e2e, dev, names) -> list[dict]:
    return (encoder_targets(isa, names[0]) + gemm_targets(gemm, names[1]) + e2e_targets(e2e, names[2])
            + f1_targets(dev, names[3]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", default="isa_compare", help="results file of bench/isa_compare.py")
    ap.add_argument("--gemm", default="gemm_amx", help="results file of bench/gemm_bench.py on the amx path")
    ap.add_argument("--e2e", default="e2e_random_amx", help="results file of bench/e2e.py --random on the amx path")
    ap.add_argument("--dev", default="dev_eval_attention_amx", help="dev F1 per attention precision on the amx path")
    ap.add_argument("--name", default="amx_targets")
    args = ap.parse_args()
    names = (args.isa, args.gemm, args.e2e, args.dev)
    files = [load(n) for n in names]
    rows = check(*files, names)
    cpus = sorted({f["meta"]["cpu"] for f in files if f})
    lines = ["Issue 18's targets from the results files named in `source` (made on: " + "; ".join(cpus) + ").", "",
             "| target | required | measured | verdict | source |", "|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['required']} | {r['measured'] if r['measured'] is not None else '-'} | "
              f"{r['verdict']} | {r['source']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    # The numbers are the source files' own: their CPUs and thread counts, not this run's.
    meta = header(0) | {"cpu": "; ".join(cpus) or "none (no results file found)",
                        "threads": ", ".join(sorted({str(f["meta"]["threads"]) for f in files if f})),
                        "files": {n: f["meta"] if f else None for n, f in zip(names, files)}}
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
