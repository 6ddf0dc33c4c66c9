"""The native WordPiece fast path (csrc/wordpiece.h): the character table it is built with
(the BERT normalizer and pre-tokenizer, per code point) and the wrapper that gives exactly the
windows `tokenizers` gives, or None where it cannot."""
from __future__ import annotations

import functools
import itertools
import json
import string
import unicodedata

from qualam_rt import _C


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
