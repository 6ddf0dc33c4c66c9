"""Python overhead of Engine.answer: tokenization, windows and post-processing against the
native encoder call, for one question and a context of about 150 tokens, once with the
native WordPiece tokenizer (the default) and once with `tokenizers` (its fallback). The native call is
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
    native = engine._native_tokenizer
    rows = [measure(engine, "native WordPiece", args.repeats)]
    engine._native_tokenizer = None  # what text outside the native tokenizer's table costs
    rows.append(measure(engine, "tokenizers", args.repeats))
    engine._native_tokenizer = native
    for row in rows:
        print(row)
    md = (f"One question, a context of {rows[0]['context_tokens']} tokens ({rows[0]['tokens']} window tokens), model "
          f"`{engine.path.name}`, config {engine.length_config}, {args.repeats} calls after warm-up (medians). "
          f"answer() = the native encoder call + everything else (tokenization, windows, packing, post-processing). "
          f"Tokenizer: the native WordPiece (default), and `tokenizers`, its fallback for characters outside its table.\n\n"
          "| tokenizer | answer() ms | encoder inside ms | everything else ms | tokenization + windows alone ms "
          "| encoder back to back ms | Python overhead |\n|---|---|---|---|---|---|---|\n")
    for r in rows:
        md += (f"| {r['tokenizer']} | {r['answer_ms']:.2f} | {r['encoder_in_answer_ms']:.2f} | "
               f"{r['outside_encoder_ms']:.2f} | {r['tokenize_windows_ms']:.3f} | {r['encoder_back_to_back_ms']:.2f} | "
               f"**{r['python_overhead_share']:.1%}** |\n")
    write_results("overhead", header(args.threads), rows, md)


def measure(engine, tokenizer: str, repeats: int) -> dict:
    windows = engine.windows([(QUESTION, CONTEXT)])
    n = sum(len(w.input_ids) for w in windows)
    n_context = sum(int((w.char_spans[:, 0] >= 0).sum()) for w in windows)
    native = time_call(lambda: engine.logits(windows), warmup=10, repeats=repeats)
    tokenize = time_call(lambda: engine.windows([(QUESTION, CONTEXT)]), warmup=10, repeats=repeats)
    encoder = engine._encoder
    timed = engine._encoder = TimedEncoder(encoder)
    answer_s, inside_s = [], []
    try:
        for i in range(10 + repeats):
            t = time.perf_counter()
            engine.answer(QUESTION, CONTEXT)
            if i >= 10:
                answer_s.append(time.perf_counter() - t)
                inside_s.append(timed.seconds[-1])
    finally:
        engine._encoder = encoder
    answer_s, inside_s = np.array(answer_s), np.array(inside_s)
    return {"tokenizer": tokenizer,
            "tokens": n, "context_tokens": n_context, "answer_ms": 1e3 * float(np.median(answer_s)),
            "encoder_in_answer_ms": 1e3 * float(np.median(inside_s)),
            "outside_encoder_ms": 1e3 * float(np.median(answer_s - inside_s)),
            "encoder_back_to_back_ms": 1e3 * native["median"], "tokenize_windows_ms": 1e3 * tokenize["median"],
            "python_overhead_share": float(np.median((answer_s - inside_s) / answer_s)),
            "length_config": engine.length_config, "attention": engine.attention}


if __name__ == "__main__":
    main()
