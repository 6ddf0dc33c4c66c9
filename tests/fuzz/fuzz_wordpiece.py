"""Fuzzer: the native WordPiece windows against `tokenizers` on arbitrary text and window
shapes: the same windows, or declined (None) for a stated reason: a question over
max_query_len tokens cut by the fallback, a character off the native table, or an added-token
string. See harness.py for how to run it."""
import sys
from pathlib import Path

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from qualam_rt import featurize, wordpiece
from qualam_rt import synthetic as syn
from harness import TEXT, fuzz  # noqa: E402

TOK = syn.tiny_tokenizer(TEXT)
NATIVE = wordpiece.NativeWordPiece(TOK)
TABLE = set(chr(c) for c in wordpiece.bert_char_table(True)[0])
ADDED = [t.content for t in TOK.get_added_tokens_decoder().values()]
ALPHABET = TEXT + "\x00\t\n\u3000\u00ad\u0301é漢字🙂ﬁ\ufffd[]#"


def text(fdp, n: int) -> str:
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicodeNoSurrogates(n)
    return "".join(ALPHABET[fdp.ConsumeIntInRange(0, len(ALPHABET) - 1)] for _ in range(fdp.ConsumeIntInRange(0, n)))


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_seq_len = fdp.ConsumeIntInRange(14, 160)
    doc_stride = fdp.ConsumeIntInRange(1, max_seq_len - 12)
    question, context = text(fdp, 40), text(fdp, 400)
    parts = NATIVE(question, context, max_seq_len, doc_stride, 8)
    if parts is None:
        TOK.no_truncation()
        reason = (len(TOK.encode(question, add_special_tokens=False).ids) > 8 or set(question + context) - TABLE
                  or any(t in question or t in context for t in ADDED))
        assert reason, (question, context)
        return
    want = featurize.make_windows(TOK, [(question, context)], max_seq_len, doc_stride, max_query_len=8)
    got = [featurize.Window(0, *p) for p in parts]
    assert len(got) == len(want), (question, context, max_seq_len, doc_stride)
    for a, b in zip(got, want):
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.token_type_ids, b.token_type_ids)
        assert np.array_equal(a.char_spans, b.char_spans), (question, context)


if __name__ == "__main__":
    fuzz(TestOneInput)
