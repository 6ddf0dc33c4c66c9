"""Answers from logits: the best spans of a context across its windows (SQuAD's
post-processing), and predictions for a set of examples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qualam_rt import _C
from qualam_rt.featurize import Window


@dataclass
class Span:
    score: float
    start: int  # character offsets into the context
    end: int
    text: str


def best_spans(context: str, windows: list[Window], logits: list[np.ndarray], top_k: int = 1,
               n_best: int = 20, max_answer_len: int = 30) -> list[Span]:
    """The standard SQuAD post-processing across the windows of one context: the n_best
    start and end candidates of each window, spans inside the context with start <= end,
    at most max_answer_len tokens; score = start logit + end logit (a span found in several
    overlapping windows keeps its best score). Returns the top_k distinct spans, best first."""
    # No span is longer than its window: a larger max_answer_len (past the native int) is that.
    found = [c for c in (_C.span_candidates(np.ascontiguousarray(lg, np.float32), w.char_spans, n_best,
                                            min(max_answer_len, len(lg)))
                         for w, lg in zip(windows, logits)) if len(c[2])]
    if not found:
        return []
    if top_k == 1:  # each window's candidates come best first; ties: the earlier span
        starts, ends, scores = min(found, key=lambda c: (-c[2][0], c[0][0], c[1][0]))
        a, b = int(starts[0]), int(ends[0])
        return [Span(float(scores[0]), a, b, context[a:b])]
    starts_a, ends_a, scores_a = (np.concatenate(a) for a in zip(*found))
    # Best first; ties: earlier span first. A span found in several windows keeps its best score.
    order = np.lexsort((ends_a, starts_a, -scores_a))
    ranked, seen = [], set()
    for i in order:
        key = (int(starts_a[i]), int(ends_a[i]))
        if key not in seen:
            seen.add(key)
            ranked.append((key, float(scores_a[i])))
            if len(ranked) == top_k:
                break
    return [Span(score, a, b, context[a:b]) for (a, b), score in ranked]


def predict(examples: list, windows: list[Window], infer, batch_size: int = 32, progress: str | None = None) -> dict[str, str]:
    """Best answer text per example id. infer(list of windows) -> list of [n, 2] logits; it
    gets length-sorted batches (little padding for padded runtimes)."""
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc=progress, leave=False)
    logits: list = [None] * len(windows)
    for idx in chunks:
        for j, lg in zip(idx, infer([windows[k] for k in idx])):
            logits[j] = lg
    by_example: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_example.setdefault(w.example, []).append(i)
    preds = {ex.id: "" for ex in examples}
    for e, idx in by_example.items():
        spans = best_spans(examples[e].context, [windows[i] for i in idx], [logits[i] for i in idx])
        preds[examples[e].id] = spans[0].text if spans else ""
    return preds
