"""SQuAD v1.1: reading the json, windows over long contexts, span post-processing and the
official EM/F1. One implementation shared by the runtime (`Engine`, `qualam-rt eval`) and the
training pipeline; numpy and `tokenizers` only.
"""
from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_SEQ_LEN = 384
DOC_STRIDE = 128  # tokens shared by consecutive windows of one context
MAX_QUERY_LEN = 64


# ---- data --------------------------------------------------------------------------------

@dataclass
class Example:
    id: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    title: str = ""


def load_examples(path: str | Path, articles: slice | None = None) -> list[Example]:
    """Examples of a SQuAD v1.1 json file, optionally of a slice of its articles."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    if articles is not None:
        data = data[articles]
    out = []
    for article in data:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append(Example(qa["id"], qa["question"], para["context"],
                                   [a["text"] for a in qa["answers"]],
                                   [a["answer_start"] for a in qa["answers"]], article.get("title", "")))
    return out


# ---- windows -----------------------------------------------------------------------------

@dataclass
class Window:
    """One [CLS] question [SEP] context-part [SEP] input and how it maps back to the text."""
    example: int                 # index of the (question, context) pair
    input_ids: np.ndarray        # int32 [n]
    token_type_ids: np.ndarray   # int32 [n]
    char_spans: np.ndarray       # int64 [n, 2]: context character span of each token, (-1, -1) outside the context


def truncate_question(tokenizer, question: str, max_query_len: int = MAX_QUERY_LEN) -> str:
    enc = tokenizer.encode(question, add_special_tokens=False)
    if len(enc.ids) <= max_query_len:
        return question
    return question[:enc.offsets[max_query_len - 1][1]]


def _encode_pairs(tokenizer, pairs) -> list:
    """Encodings of (question, context) pairs; None where the question alone is too long for
    a window (the tokenizer refuses to truncate only the context then)."""
    if len(pairs) == 1:  # encode_batch's thread pool costs more than it saves for one pair
        try:
            return [tokenizer.encode(*pairs[0])]
        except Exception:
            return [None]
    try:
        return tokenizer.encode_batch([tuple(p) for p in pairs])
    except Exception:  # one question too long: find it
        return [_encode_pairs(tokenizer, [p])[0] for p in pairs]


def make_windows(tokenizer, pairs: list[tuple[str, str]], max_seq_len: int = MAX_SEQ_LEN,
                 doc_stride: int = DOC_STRIDE, max_query_len: int = MAX_QUERY_LEN) -> list[Window]:
    """Tokenizes (question, context) pairs into windows of at most max_seq_len tokens; a
    context longer than one window is split into windows sharing doc_stride tokens."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_len, stride=doc_stride, strategy="only_second")
    encodings = _encode_pairs(tokenizer, pairs)
    # Questions over max_query_len tokens are cut and encoded again; checking after the
    # encoding costs nothing for the usual short question (no separate question encoding).
    for i, enc in enumerate(encodings):
        if enc is None or enc.sequence_ids.count(0) > max_query_len:
            tokenizer.no_truncation()
            question = truncate_question(tokenizer, pairs[i][0], max_query_len)
            tokenizer.enable_truncation(max_length=max_seq_len, stride=doc_stride, strategy="only_second")
            encodings[i] = tokenizer.encode(question, pairs[i][1])
    windows = []
    for i, enc in enumerate(encodings):
        for part in [enc] + list(enc.overflowing):
            # sequence_ids: None (special token) becomes nan, so only context tokens equal 1.
            outside = np.array(part.sequence_ids, dtype=np.float64) != 1
            spans = np.array(part.offsets, dtype=np.int64).reshape(-1, 2)
            spans[outside] = -1
            windows.append(Window(i, np.array(part.ids, np.int32), np.array(part.type_ids, np.int32), spans))
    return windows


def pack(windows: list[Window]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated (input_ids, token_type_ids, offsets) of windows, as the engine takes them."""
    ids = np.concatenate([w.input_ids for w in windows]) if windows else np.zeros(0, np.int32)
    types = np.concatenate([w.token_type_ids for w in windows]) if windows else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(w.input_ids) for w in windows])]).astype(np.int64)
    return ids, types, offsets


def answer_token_span(window: Window, start_char: int, end_char: int) -> tuple[int, int] | None:
    """Token indices (start, end) of the answer characters [start_char, end_char) in this
    window, or None if the answer is not wholly inside it (training labels)."""
    spans = window.char_spans
    inside = np.nonzero(spans[:, 0] >= 0)[0]
    if len(inside) == 0 or spans[inside[0], 0] > start_char or spans[inside[-1], 1] < end_char:
        return None
    start = inside[np.nonzero(spans[inside, 1] > start_char)[0][0]]
    end = inside[np.nonzero(spans[inside, 0] < end_char)[0][-1]]
    return int(start), int(end)


# ---- post-processing ---------------------------------------------------------------------

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
    starts_c, ends_c, scores = [], [], []
    for w, lg in zip(windows, logits):
        lg = np.asarray(lg)
        spans = w.char_spans
        top = np.argsort(-lg, axis=0, kind="stable")[:n_best]  # n_best start and end candidates
        s_idx = top[:, 0][spans[top[:, 0], 0] >= 0]
        e_idx = top[:, 1][spans[top[:, 1], 0] >= 0]
        length = e_idx[None, :] - s_idx[:, None] + 1
        si, ei = np.nonzero((length >= 1) & (length <= max_answer_len))
        starts_c.append(spans[s_idx[si], 0])
        ends_c.append(spans[e_idx[ei], 1])
        scores.append(lg[s_idx[si], 0].astype(np.float64) + lg[e_idx[ei], 1])
    if not scores:
        return []
    starts_a, ends_a, scores_a = ((a[0] if len(a) == 1 else np.concatenate(a)) for a in (starts_c, ends_c, scores))
    if len(scores_a) == 0:
        return []
    if top_k == 1:  # the best span; ties: the earlier one
        tied = np.flatnonzero(scores_a == scores_a.max())
        i = tied[np.lexsort((ends_a[tied], starts_a[tied]))[0]] if len(tied) > 1 else tied[0]
        a, b = int(starts_a[i]), int(ends_a[i])
        return [Span(float(scores_a[i]), a, b, context[a:b])]
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


# ---- official v1.1 metric ----------------------------------------------------------------

def normalize_answer(s: str) -> str:
    """Lower case, strip punctuation, articles and extra whitespace (official v1.1 script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def evaluate(examples: list[Example], predictions: dict[str, str]) -> dict[str, float]:
    """EM and F1 in percent, each the max over an example's reference answers."""
    em = f1 = 0.0
    for ex in examples:
        pred = predictions.get(ex.id, "")
        em += max(exact_match(pred, a) for a in ex.answers)
        f1 += max(f1_score(pred, a) for a in ex.answers)
    n = max(len(examples), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "count": len(examples)}
