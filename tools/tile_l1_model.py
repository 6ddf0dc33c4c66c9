"""An L1 model of the tile GEMM's memory accesses (csrc/cpu/gemm_tiles.h), for judging its loop
order on a CPU without AMX: one thread's tasks (a block of rows x one 64-column weight panel,
panels fastest), each 32-row block's tile loads in the kernel's order (per k step: A rows
0-15, B columns 0-15, B columns 16-31, A rows 16-31, one half of the panel after the other),
the accumulators stored (and, between K chunks, reloaded), and the previous block's epilogue
(reading its accumulators, writing its output rows) spread over the next block's k steps.
The cache: least recently used lines in sets, 48 KB, 12 ways (Sapphire Rapids' L1D).
Not modelled: hardware prefetch, the instruction stream, other threads. Prints, per shape and
K chunk (0: none), the share of tile-load lines that miss L1 and all L1 misses per TDPBUSD.

    python tools/tile_l1_model.py                      # the encoder's shapes, M = 256
    python tools/tile_l1_model.py --shapes 1536x384 --chunks 0 384 256 --rows-per-task 32 128
"""
from __future__ import annotations

import argparse
from collections import OrderedDict

LINE = 64


class Cache:
    def __init__(self, size: int, ways: int):
        self.sets = [OrderedDict() for _ in range(size // LINE // ways)]
        self.ways, self.misses = ways, 0

    def touch(self, addr: int, nbytes: int = LINE) -> int:
        """Reads or writes bytes [addr, addr + nbytes); returns the lines that missed."""
        missed = 0
        for line in range(addr // LINE, (addr + nbytes - 1) // LINE + 1):
            s = self.sets[line % len(self.sets)]
            if line in s:
                s.move_to_end(line)
            else:
                missed += 1
                s[line] = True
                if len(s) > self.ways:
                    s.popitem(last=False)
        self.misses += missed
        return missed


def model(M: int, K: int, N: int, chunk: int, rows_per_task: int, l1: int = 48 << 10, ways: int = 12) -> dict:
    """Tile-load miss share and L1 misses per TDPBUSD of one M x K x N GEMM (K, N whole 64s)."""
    cache = Cache(l1, ways)
    A, W, OUT, ACC = 0, 1 << 34, 2 << 34, 3 << 34  # disjoint address ranges
    panel_bytes, acc_bytes = K // 4 * 256, 32 * 256  # a panel: K / 4 k-group rows of 256 bytes
    tile_lines = tile_misses = 0

    def tile(addr: int, stride: int) -> None:  # 16 rows of 64 bytes
        nonlocal tile_lines, tile_misses
        for r in range(16):
            tile_misses += cache.touch(addr + r * stride)
        tile_lines += 16

    def accumulators(base: int) -> None:  # 4 tiles of 16 x 16 int32 in a 32 x 64 int32 buffer
        for t in range(4):
            for r in range(16):
                cache.touch(base + (t // 2) * 16 * 256 + r * 256 + (t % 2) * 64)

    chunks = [(k0, min(k0 + chunk, K)) for k0 in range(0, K, chunk)] if chunk else [(0, K)]
    steps = 2 * K // 64  # k steps of a block, both halves
    for b0 in range(0, M, rows_per_task):
        for p in range(N // 64):
            panel, pending = W + p * panel_bytes, None  # pending: (acc buffer, first row) of the last block

            def epilogue_rows(lo: int, hi: int) -> None:
                for r in range(lo, hi):
                    cache.touch(pending[0] + r * 256, 256)
                    cache.touch(OUT + (pending[1] + r) * N * 4 + p * 256, 256)  # fp32 output

            for i, m in enumerate(range(b0, min(b0 + rows_per_task, M), 32)):
                acc, step, done = ACC + (i % 2) * acc_bytes, 0, 0
                for k0, k1 in chunks:
                    for half in range(2):
                        if k0 > 0:
                            accumulators(acc + half * 128)
                        for k in range(k0, k1, 64):
                            tile(A + m * K + k, K)
                            tile(panel + k // 4 * 256 + half * 128, 256)
                            tile(panel + k // 4 * 256 + half * 128 + 64, 256)
                            tile(A + (m + 16) * K + k, K)
                            step += 1
                            if pending:
                                upto = 32 * step // steps
                                epilogue_rows(done, upto)
                                done = max(done, upto)
                        accumulators(acc + half * 128)
                pending = (acc, m)
            epilogue_rows(0, 32)
    tdpbusd = M // 16 * (N // 16) * (K // 64)
    return {"tile_load_miss_share": tile_misses / tile_lines, "l1_misses_per_tdpbusd": cache.misses / tdpbusd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256, help="M (a multiple of 32)")
    ap.add_argument("--shapes", nargs="+", default=["384x1152", "384x384", "384x1536", "1536x384"], help="KxN")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 384], help="K chunks (0: none)")
    ap.add_argument("--rows-per-task", type=int, nargs="+", default=[128], help="rows of a task (multiples of 32)")
    args = ap.parse_args()
    print("| K x N | rows per task | K chunk | tile-load lines missing L1 | L1 misses per TDPBUSD |")
    print("|---|---|---|---|---|")
    for shape in args.shapes:
        K, N = (int(x) for x in shape.split("x"))
        for rows in args.rows_per_task:
            for chunk in args.chunks:
                if chunk >= K:
                    continue
                r = model(args.rows, K, N, chunk, rows)
                print(f"| {shape} | {rows} | {chunk or 'none'} | {r['tile_load_miss_share']:.2f} | "
                      f"{r['l1_misses_per_tdpbusd']:.1f} |")


if __name__ == "__main__":
    main()
