"""(question, context) pairs to model inputs: windows of at most max_seq_len tokens over long
contexts, how each token maps back to the text, packing for the encoder, and answer labels.
Tokenization is `tokenizers`, with a native fast path (qualam_rt.wordpiece) that gives the
same windows for text in the common scripts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qualam_rt.wordpiece import NativeWordPiece

MAX_SEQ_LEN = 384
DOC_STRIDE = 128  # tokens shared by consecutive windows of one context
MAX_QUERY_LEN = 64


@dataclass
class Window:
    """One [CLS] question [SEP] context-part [SEP] input and how it maps back to the text."""
    example: int                 # index of the (question, context) pair
    input_ids: np.ndarray        # int32 [n]
    token_type_ids: np.ndarray   # int32 [n]
    char_spans: np.ndarray       # int64 [n, 2]: context character span of each token, (-1, -1) outside the context


def window_limits(max_position: int, special_tokens: int = 3) -> tuple[int, int, int]:
    """(max_seq_len, doc_stride, max_query_len) for a model of max_position positions whose
    pairs carry `special_tokens` ([CLS] and two [SEP]: 3): the usual 384 / 128 / 64 where they
    fit; for a shorter model, small enough that a question cut to max_query_len leaves the
    context more tokens than the stride, which `tokenizers` requires. max_query_len < 1: no
    window fits a question and a context."""
    max_seq_len = min(MAX_SEQ_LEN, max_position)
    doc_stride = min(DOC_STRIDE, max_seq_len // 3)
    return max_seq_len, doc_stride, min(MAX_QUERY_LEN, max_seq_len - special_tokens - doc_stride - 1)


def truncate_question(tokenizer, question: str, max_query_len: int = MAX_QUERY_LEN) -> str:
    enc = tokenizer.encode(question, add_special_tokens=False)
    if len(enc.ids) <= max_query_len:
        return question
    return question[:enc.offsets[max_query_len - 1][1]]


def is_tokenizer_error(e: BaseException) -> bool:
    """Whether `tokenizers` (or anything else) failed, as opposed to an interrupt or exit: it
    panics (a BaseException) when a long question leaves a window no room for the stride or
    its template names a special token it lacks, and raises plain Exceptions otherwise."""
    return isinstance(e, Exception) or type(e).__name__ == "PanicException"


def _encode_pairs(tokenizer, pairs) -> list:
    """Encodings of (question, context) pairs; None where the question alone is too long for
    a window (the tokenizer refuses to truncate only the context then)."""
    if len(pairs) == 1:  # encode_batch's thread pool costs more than it saves for one pair
        try:
            return [tokenizer.encode(*pairs[0])]
        except BaseException as e:
            if not is_tokenizer_error(e):
                raise
            return [None]
    try:
        return tokenizer.encode_batch([tuple(p) for p in pairs])
    except BaseException as e:  # one question too long: find it
        if not is_tokenizer_error(e):
            raise
        return [_encode_pairs(tokenizer, [p])[0] for p in pairs]


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
    # A question of more bytes than max_query_len may have more tokens (a token covers at least
    # a byte): cut those first. A question too long for its window makes `tokenizers` panic,
    # which is caught below, but it prints the panic (a backtrace, with RUST_BACKTRACE=1) first.
    tokenizer.no_truncation()
    pairs = [(truncate_question(tokenizer, q, max_query_len) if len(q.encode("utf-8", "surrogatepass")) > max_query_len
              else q, c) for q, c in pairs]
    tokenizer.enable_truncation(max_length=max_seq_len, stride=doc_stride, strategy="only_second")
    encodings = _encode_pairs(tokenizer, pairs)
    # Left over max_query_len tokens (or refused) only where a token covers less than a byte (a
    # normalizer that expands characters): cut and encoded again.
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


