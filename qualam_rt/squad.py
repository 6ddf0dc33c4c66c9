"""SQuAD v1.1: reading the json, windows over long contexts, span post-processing and the
official EM/F1. One implementation shared by the runtime (`Engine`, `qualam-rt eval`) and the
training pipeline. Tokenization is `tokenizers`, with a native fast path (csrc/wordpiece.h)
that gives the same windows for text in the common scripts.
"""
from __future__ import annotations

import collections
import functools
import itertools
import json
import re
import string
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qualam_rt import _C

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


def _is_tokenizer_error(e: BaseException) -> bool:
    # `tokenizers` panics (a BaseException) when a long question leaves a window no room for
    # the stride, and raises plain Exceptions for other refusals.
    return isinstance(e, Exception) or type(e).__name__ == "PanicException"


def _encode_pairs(tokenizer, pairs) -> list:
    """Encodings of (question, context) pairs; None where the question alone is too long for
    a window (the tokenizer refuses to truncate only the context then)."""
    if len(pairs) == 1:  # encode_batch's thread pool costs more than it saves for one pair
        try:
            return [tokenizer.encode(*pairs[0])]
        except BaseException as e:
            if not _is_tokenizer_error(e):
                raise
            return [None]
    try:
        return tokenizer.encode_batch([tuple(p) for p in pairs])
    except BaseException as e:  # one question too long: find it
        if not _is_tokenizer_error(e):
            raise
        return [_encode_pairs(tokenizer, [p])[0] for p in pairs]


# Rust's White_Space property (char::is_whitespace), which the BERT normalizer and
# pre-tokenizer use.
_WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                         + "".join(map(chr, range(0x2000, 0x200B))))
# The code points of the native tokenizer's table: the alphabets up to CJK symbols and kana,
# CJK unified ideographs (the only block of the table that handle_chinese_chars isolates),
# full-width forms.
_CJK = range(0x4E00, 0xA000)
_TABLE_RANGES = (range(0, 0x3100), _CJK, range(0xFF00, 0xFFF0))


def _pre_tokenizer_class(ch: str) -> str:
    """BertPreTokenizer: 's' splits (whitespace), 'i' is a token of its own (punctuation), 'w'."""
    if ch in _WHITE_SPACE:
        return "s"
    return "i" if ch in string.punctuation or unicodedata.category(ch)[0] == "P" else "w"


@functools.lru_cache(maxsize=2)
def bert_char_table(strip_accents: bool) -> tuple[list[int], list[str], list[str]]:
    """What BertNormalizer (clean_text, handle_chinese_chars, lowercase, strip_accents) and
    BertPreTokenizer make of each code point of _TABLE_RANGES: (code points, normalized text,
    the class of each normalized character). Left out, so that text containing them goes to
    `tokenizers`: combining marks (NFD may reorder them across neighbours); unassigned,
    private-use and surrogate code points; and code points whose category changed since
    Unicode 3.2 or that came later, because `tokenizers` may classify them with another
    Unicode version than Python's."""
    points, normalized, classes = [], [], []
    for cp in itertools.chain(*_TABLE_RANGES):
        c = chr(cp)
        category = unicodedata.category(c)
        if category[0] == "M" or category in ("Cn", "Co", "Cs") or unicodedata.ucd_3_2_0.category(c) != category:
            continue
        if c in "\t\n\r" or (c in _WHITE_SPACE and category != "Cc"):
            norm, cls = " ", "s"
        elif category in ("Cc", "Cf"):  # deleted by clean_text
            norm, cls = "", ""
        else:
            norm = unicodedata.normalize("NFD", c) if strip_accents else c
            # Lower-cased one character at a time, as `tokenizers` does (no final-sigma rule).
            norm = "".join(ch.lower() for ch in norm if not (strip_accents and unicodedata.category(ch) == "Mn"))
            cls = "i" * len(norm) if cp in _CJK else "".join(map(_pre_tokenizer_class, norm))
        points.append(cp)
        normalized.append(norm)
        classes.append(cls)
    return points, normalized, classes


class NativeWordPiece:
    """The native fast path of make_windows for a BERT WordPiece tokenizer. It gives exactly
    the windows `tokenizers` gives, for text whose characters are all in bert_char_table and
    that holds no added-token string such as "[SEP]"; it returns None for anything else, and
    make_windows falls back to `tokenizers`."""

    def __init__(self, tokenizer):
        config = json.loads(tokenizer.to_str())
        model, normalizer = config["model"], config.get("normalizer") or {}
        if (model.get("type") != "WordPiece" or model.get("continuing_subword_prefix") != "##"
                or normalizer.get("type") != "BertNormalizer"
                or not all(normalizer.get(k) for k in ("lowercase", "clean_text", "handle_chinese_chars"))
                or (config.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"):
            raise ValueError("not a lowercasing BERT WordPiece tokenizer")
        strip_accents = normalizer.get("strip_accents")
        vocab = tokenizer.get_vocab()
        words = [""] * (max(vocab.values()) + 1)
        for word, i in vocab.items():
            words[i] = word
        cls, sep, unk = (vocab.get(t) for t in ("[CLS]", "[SEP]", model.get("unk_token", "[UNK]")))
        if None in (cls, sep, unk):
            raise ValueError("the vocabulary lacks [CLS], [SEP] or the unknown token")
        probe = tokenizer.encode("a", "b")  # the post-processor must make [CLS] A [SEP] B [SEP]
        if probe.ids != [cls, vocab["a"], sep, vocab["b"], sep] or probe.type_ids != [0, 0, 0, 1, 1]:
            raise ValueError("the post-processor is not [CLS] A [SEP] B [SEP]")
        self._native = _C.WordPiece(words, unk, cls, sep, int(model.get("max_input_chars_per_word", 100)),
                                    *bert_char_table(strip_accents is None or bool(strip_accents)))
        self._added = [t["content"] for t in config.get("added_tokens", [])]  # matched in raw text by tokenizers

    @classmethod
    def of(cls, tokenizer) -> "NativeWordPiece | None":
        try:
            return cls(tokenizer)
        except (ValueError, KeyError):
            return None

    def __call__(self, question: str, context: str, max_seq_len: int, doc_stride: int, max_query_len: int):
        """[(input_ids, token_type_ids, char_spans)] of each window, or None."""
        if any(t in question or t in context for t in self._added):
            return None
        try:
            return self._native.windows(question, context, max_seq_len, doc_stride, max_query_len)
        except TypeError:  # not encodable as UTF-8 (lone surrogates; Engine rejects them first)
            return None


def make_windows(tokenizer, pairs: list[tuple[str, str]], max_seq_len: int = MAX_SEQ_LEN,
                 doc_stride: int = DOC_STRIDE, max_query_len: int = MAX_QUERY_LEN,
                 native: NativeWordPiece | None = None) -> list[Window]:
    """Tokenizes (question, context) pairs into windows of at most max_seq_len tokens; a
    context longer than one window is split into windows sharing doc_stride tokens. With
    `native`, pairs it can handle skip `tokenizers` (same windows, several times faster)."""
    parts: list = [None] * len(pairs)
    if native is not None:
        parts = [native(q, c, max_seq_len, doc_stride, max_query_len) for q, c in pairs]
    slow = [i for i, p in enumerate(parts) if p is None]
    if slow:
        for i, p in zip(slow, _tokenizers_windows(tokenizer, [pairs[i] for i in slow], max_seq_len, doc_stride,
                                                  max_query_len)):
            parts[i] = p
    return [Window(i, *w) for i, p in enumerate(parts) for w in p]


def _tokenizers_windows(tokenizer, pairs, max_seq_len: int, doc_stride: int, max_query_len: int) -> list[list]:
    """make_windows with `tokenizers`: [(input_ids, token_type_ids, char_spans)] per pair."""
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
    out = []
    for enc in encodings:
        windows = []
        for part in [enc] + list(enc.overflowing):
            # sequence_ids: None (special token) becomes nan, so only context tokens equal 1.
            outside = np.array(part.sequence_ids, dtype=np.float64) != 1
            spans = np.array(part.offsets, dtype=np.int64).reshape(-1, 2)
            spans[outside] = -1
            windows.append((np.array(part.ids, np.int32), np.array(part.type_ids, np.int32), spans))
        out.append(windows)
    return out


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
    found = [c for c in (_C.span_candidates(np.ascontiguousarray(lg, np.float32), w.char_spans, n_best, max_answer_len)
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
