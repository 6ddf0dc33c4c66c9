"""Python overhead of Engine.answer: tokenization, windows and post-processing against the
native encoder call, for one question and a context of about 150 tokens. The native call is
timed inside each answer() call (the same run), so the overhead is answer() minus its own
encoder call; the encoder called back to back is reported beside it.

    python bench/overhead.py --model model.qrt --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, time_call, write_results  # noqa: E402

import qualam_rt  # noqa: E402

CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
           "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
           "their leader Rollo, agreed to swear fealty to King Charles III of West Francia. Through generations of "
           "assimilation and mixing with the native Frankish and Roman-Gaulish populations, their descendants would "
           "gradually merge with the Carolingian-based cultures of West Francia. The distinct cultural and ethnic "
           "identity of the Normans emerged initially in the first half of the 10th century, and it continued to "
           "evolve over the succeeding centuries. Norman leaders later conquered England in 1066 and founded states "
           "in southern Italy and Sicily, where they ruled for a century.")  # 151 context tokens
QUESTION = "In what country is Normandy located?"


class TimedEncoder:
    """Wraps the engine's native encoder and records how long each forward() takes."""

    def __init__(self, encoder):
        self.encoder, self.seconds = encoder, []

    def forward(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.encoder.forward(*args, **kwargs)
        self.seconds.append(time.perf_counter() - t)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    engine = qualam_rt.Engine(args.model, threads=args.threads)
    windows = engine.windows([(QUESTION, CONTEXT)])
    n = sum(len(w.input_ids) for w in windows)
    n_context = sum(int((w.char_spans[:, 0] >= 0).sum()) for w in windows)
    native = time_call(lambda: engine.logits(windows), warmup=10, repeats=args.repeats)
    tokenize = time_call(lambda: engine.windows([(QUESTION, CONTEXT)]), warmup=10, repeats=args.repeats)
    timed = engine._encoder = TimedEncoder(engine._encoder)
    answer_s, inside_s = [], []
    for i in range(10 + args.repeats):
        t = time.perf_counter()
        engine.answer(QUESTION, CONTEXT)
        if i >= 10:
            answer_s.append(time.perf_counter() - t)
            inside_s.append(timed.seconds[-1])
    answer_s, inside_s = np.array(answer_s), np.array(inside_s)
    share = float(np.median((answer_s - inside_s) / answer_s))
    row = {"tokens": n, "context_tokens": n_context, "answer_ms": 1e3 * float(np.median(answer_s)), "encoder_in_answer_ms": 1e3 * float(np.median(inside_s)),
           "outside_encoder_ms": 1e3 * float(np.median(answer_s - inside_s)),
           "encoder_back_to_back_ms": 1e3 * native["median"], "tokenize_windows_ms": 1e3 * tokenize["median"],
           "python_overhead_share": share, "length_config": engine.length_config, "attention": engine.attention}
    print(row)
    md = (f"One question, a context of {n_context} tokens ({n} window tokens), model `{engine.path.name}`, config {engine.length_config}, "
          f"{args.repeats} calls after warm-up (medians). answer(): {row['answer_ms']:.2f} ms, of which the native "
          f"encoder call {row['encoder_in_answer_ms']:.2f} ms and everything else (tokenization, windows, packing, "
          f"post-processing) {row['outside_encoder_ms']:.2f} ms. Tokenization + windows alone: "
          f"{row['tokenize_windows_ms']:.2f} ms; the encoder called back to back: {row['encoder_back_to_back_ms']:.2f} ms. "
          f"Python overhead: **{share:.1%}** of end-to-end latency.")
    write_results("overhead", header(args.threads), [row], md)


if __name__ == "__main__":
    main()
