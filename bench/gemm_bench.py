"""INT8 GEMM microbenchmark on the encoder's shapes.

For each M and (K, N): GOP/s of qualam_rt's fused GEMM (u8 x s8 -> bias [+ GELU] -> fp32),
of its raw int32 GEMM, of torch's dynamically quantized Linear (every quantized engine torch
offers here), of torch._int_mm (raw int32, no epilogue), and of fp32 torch.matmul; and the
fraction of the measured int8 peak (a register-only loop of the path's dot-product
instruction). All systems are timed in the same run, with the same thread count.

The peak fractions are medians over repeats of (GEMM rate / peak rate measured right before
it): this machine's speed drifts by tens of percent within minutes (shared host), so a peak
taken once at the start would mix two machine states.

Every call of the plain columns allocates its output, as a framework's Linear does; at large
M the fresh pages (faults, zeroing) cost a good part of the time. The `_out` columns write into
one preallocated, 64-byte aligned array instead (qualam_rt's `out=`, torch's `out=`; torch
aligns its tensors so): the kernel alone. `qualam_fused_u8_out` is the same epilogue requantized
to uint8 (the encoder's form when the next GEMM's input quantization is static): a quarter of
the fp32 output's bytes.

`tile_ceiling_frac` is the GEMM's tile kernel alone on cache-resident data of the same K, over
the same peak, paired the same way: what the GEMM would reach with no epilogue, no cache
misses and no scheduling. `qualam_fused_out_of_ceiling` is the fused GEMM's share of it.
`fused_out_over_<isa>`: the same fused GEMM on the active path over the path --compare-isa
(default avx512vnni), timed alternately, median ratio (> 1: the active path is faster).
`fused_out_over_int_mm_out`: speed of qualam_fused_out (with its epilogue) over torch_int_mm_out
(int32, no epilogue) on the same shape, the two timed alternately: the median ratio, > 1 when
ours is faster (only where torch runs the same M).

    python bench/gemm_bench.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import warnings

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import aligned_empty, header, time_call, write_results  # noqa: E402

import qualam_rt  # noqa: E402
from qualam_rt import _C  # noqa: E402

SHAPES = [(384, 1152), (384, 384), (384, 1536), (1536, 384)]
ROWS = [1, 8, 32, 384, 1024, 4096, 12288]


def paired_peak_fraction(fn, ops: int, repeats: int, span: float = 0.003) -> float:
    """Median over repeats of (rate of fn) / (int8 peak measured just before it). Each repeat
    times fn back to back for `span` seconds after one untimed call, so a short GEMM is not
    charged for the switch from the peak loop."""
    fracs = []
    for _ in range(repeats):
        peak_ops = 2 * _C.int8_peak_macs_per_s(span)
        fracs.append(ops * rate_over(fn, span) / peak_ops)
    return statistics.median(fracs)


def rate_over(fn, span: float) -> float:
    """Calls per second of fn, timed back to back for `span` seconds after one untimed call."""
    fn()
    calls, t0 = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - t0 < span:
        fn()
        calls += 1
    return calls / (time.perf_counter() - t0)


def paired_speed_ratio(ours, theirs, repeats: int, span: float = 0.003) -> float:
    """Median over repeats of (rate of ours) / (rate of theirs), the two timed right after
    each other (alternating which goes first): > 1 means ours is faster."""
    ratios = []
    for i in range(repeats):
        if i % 2:
            b = rate_over(theirs, span)
            a = rate_over(ours, span)
        else:
            a = rate_over(ours, span)
            b = rate_over(theirs, span)
        ratios.append(a / b)
    return statistics.median(ratios)


def paired_tile_fraction(K: int, repeats: int, span: float = 0.003) -> float:
    """Median over repeats of (rate of the tile kernel at depth K) / (int8 peak just before)."""
    return statistics.median(_C.int8_tile_macs_per_s(K, span) / _C.int8_peak_macs_per_s(span) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, nargs="*", default=ROWS)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--name", default="gemm")
    ap.add_argument("--compare-isa", default="avx512vnni",
                    help="another kernel path whose fused GEMM is timed alternately with the active one ('' = none)")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")  # torch.ao deprecation notices
    qualam_rt.set_num_threads(args.threads)
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            print("torch not installed: skipping the torch baselines")
    peak = _C.int8_peak_macs_per_s(1.0)
    print(f"path {_C.isa()}, measured int8 peak {2 * peak / 1e9:.0f} GOP/s ({peak / 1e9:.0f} GMAC/s)")
    rng = np.random.default_rng(0)
    rows_out = []
    for K, N in SHAPES:
        W = rng.integers(-127, 128, (N, K), dtype=np.int8)
        w_scale = np.full(N, 0.01, np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        packed = _C.PackedWeight(W, w_scale)
        gelu = (K, N) == (384, 1536)
        engines = []
        if torch is not None:
            lin = torch.nn.Linear(K, N)
            engines = [e for e in ("fbgemm", "onednn", "x86") if e in torch.backends.quantized.supported_engines]
            wt = torch.from_numpy(W.astype(np.float32))
        for M in args.rows:
            A = rng.integers(0, 256, (M, K), dtype=np.uint8)
            ops = 2 * M * K * N
            repeats = args.repeats if M >= 32 else args.repeats * 20
            row = {"M": M, "K": K, "N": N, "epilogue": "bias+gelu" if gelu else "bias"}
            out = aligned_empty((M, N), np.float32)
            out_u8 = aligned_empty((M, N), np.uint8)
            fused = lambda: _C.gemm(A, 0.02, 7, packed, bias=bias, gelu=gelu)  # noqa: E731
            fused_out = lambda: _C.gemm(A, 0.02, 7, packed, bias=bias, gelu=gelu, out=out)  # noqa: E731
            fused_u8_out = lambda: _C.gemm(A, 0.02, 7, packed, bias=bias, gelu=gelu, out_dtype="uint8",  # noqa: E731
                                           out_scale=0.05, out_zp=3, out=out_u8)
            raw = lambda: _C.gemm(A, 0.02, 7, packed, out_dtype="int32")  # noqa: E731
            row["qualam_fused"] = ops / time_call(fused, repeats=repeats)["median"] / 1e9
            row["qualam_fused_out"] = ops / time_call(fused_out, repeats=repeats)["median"] / 1e9
            row["qualam_fused_u8_out"] = ops / time_call(fused_u8_out, repeats=repeats)["median"] / 1e9
            row["qualam_int32"] = ops / time_call(raw, repeats=repeats)["median"] / 1e9
            if torch is not None:
                x = torch.randn(M, K)
                for eng in engines:
                    torch.backends.quantized.engine = eng
                    q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
                    with torch.inference_mode():
                        t = time_call(lambda: q(x), repeats=repeats)
                    row[f"torch_dynamic_{eng}"] = ops / t["median"] / 1e9
                a8 = torch.randint(-128, 127, (max(M, 17), K), dtype=torch.int8)
                b8 = torch.randint(-128, 127, (K, N), dtype=torch.int8)
                c32 = torch.empty(a8.shape[0], N, dtype=torch.int32)
                try:
                    t = time_call(lambda: torch._int_mm(a8, b8), repeats=repeats)
                    row["torch_int_mm"] = 2 * a8.shape[0] * K * N / t["median"] / 1e9
                    int_mm_out = lambda: torch._int_mm(a8, b8, out=c32)  # noqa: E731
                    t = time_call(int_mm_out, repeats=repeats)
                    row["torch_int_mm_out"] = 2 * a8.shape[0] * K * N / t["median"] / 1e9
                    if a8.shape[0] == M:  # same work: a paired speed ratio
                        row["fused_out_over_int_mm_out"] = paired_speed_ratio(fused_out, int_mm_out, args.repeats)
                except RuntimeError as e:  # shape limits of _int_mm on some builds
                    print("torch._int_mm unavailable:", e)
                with torch.inference_mode():
                    t = time_call(lambda: torch.matmul(x, wt.T), repeats=repeats)
                row["torch_fp32"] = ops / t["median"] / 1e9
            other = args.compare_isa
            if other and other != _C.isa() and other in _C.supported_isas():
                active = _C.isa()

                def fused_out_other():
                    _C.set_isa(other)
                    try:
                        _C.gemm(A, 0.02, 7, packed, bias=bias, gelu=gelu, out=out)
                    finally:
                        _C.set_isa(active)
                row[f"fused_out_over_{other}"] = paired_speed_ratio(fused_out, fused_out_other, args.repeats)
            row["qualam_fused_peak_frac"] = paired_peak_fraction(fused, ops, args.repeats)
            row["qualam_fused_out_peak_frac"] = paired_peak_fraction(fused_out, ops, args.repeats)
            row["qualam_fused_u8_out_peak_frac"] = paired_peak_fraction(fused_u8_out, ops, args.repeats)
            row["qualam_int32_peak_frac"] = paired_peak_fraction(raw, ops, args.repeats)
            row["tile_ceiling_frac"] = paired_tile_fraction(K, args.repeats)
            row["qualam_fused_out_of_ceiling"] = row["qualam_fused_out_peak_frac"] / row["tile_ceiling_frac"]
            rows_out.append(row)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    cols = [c for c in dict.fromkeys(k for r in rows_out for k in r) if c not in ("M", "K", "N", "epilogue")]
    md = [f"Path `{_C.isa()}`; measured int8 peak {2 * peak / 1e9:.0f} GOP/s. Values in GOP/s "
          "(2 x M x K x N / median time); `peak_frac`: median over repeats of the GEMM's rate / the "
          "peak measured right before it (the peak above is from the start of the run). torch_int_mm has no epilogue and "
          "runs at least 17 rows. `_out` columns: into one preallocated output array (the kernel without the "
          "allocation of a fresh output per call).", "",
          "| M | K x N | epilogue | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in rows_out:
        md.append(f"| {r['M']} | {r['K']}x{r['N']} | {r['epilogue']} | " +
                  " | ".join(f"{r.get(c, float('nan')):.2f}" if "frac" in c or "ceiling" in c or "_over_" in c else f"{r.get(c, float('nan')):.0f}" for c in cols) + " |")
    meta = header(args.threads) | {"isa": _C.isa(), "int8_peak_gops": 2 * peak / 1e9,
                                   "torch": getattr(torch, "__version__", None)}
    # The file names the path (gemm_amx); a name that already ends with it is kept as given.
    name = args.name if args.name.endswith(f"_{_C.isa()}") else f"{args.name}_{_C.isa()}"
    write_results(name, meta, rows_out, "\n".join(md))


if __name__ == "__main__":
    main()
