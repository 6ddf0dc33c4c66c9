"""The native WordPiece fast path (csrc/wordpiece.h) gives exactly the windows of `tokenizers`,
and declines what it cannot reproduce."""
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualam_rt import featurize, wordpiece

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Pieces chosen so that greedy longest-match matters ("play" + "##ing" vs "p" + ...), some
# letters have no piece at all (x, y, z: [UNK] words) and punctuation is partly missing.
WORDS = ["the", "play", "##ing", "##ed", "##s", "plays", "a", "ab", "##b", "##ab", "1843", "19", "##43", "q",
         "what", "who", "wrote", ",", ".", "?", "(", ")", "'", "-"]
LETTERS = [c for c in string.ascii_lowercase + string.digits if c not in "xyz"]


def make_tokenizer(added_specials: bool = True):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {t: i for i, t in enumerate(dict.fromkeys(SPECIALS + WORDS + LETTERS + ["##" + c for c in LETTERS]))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=12))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    if added_specials:
        tok.add_special_tokens(SPECIALS)
    return tok


TOK = make_tokenizer()
NATIVE = wordpiece.NativeWordPiece.of(TOK)

# Accents (stripped), upper case outside ASCII, Unicode punctuation and spaces, deleted
# characters (control, zero-width), CJK (one token each), and a few the fast path declines
# (a combining mark, an emoji).
OTHER_CHARS = "éÉüßİΣσЖж–—“”«»…\u00a0\u2003\u200e\x0b\x00中文。、Ａ\u0301\u200b😀"
TABLE = set(map(chr, wordpiece.bert_char_table(True)[0]))
text = st.lists(st.one_of(st.sampled_from(WORDS + ["Playing", "PLAYS", "xyz", "abab", "a" * 13, "Café", "ÉCOLE"]),
                          st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " \t\n\r"
                                  + OTHER_CHARS, max_size=6)),
                min_size=1, max_size=60).map(" ".join)


def same_windows(got, want):
    return len(got) == len(want) and all(
        g.example == w.example and all(np.array_equal(a, b) for a, b in
                                       zip((g.input_ids, g.token_type_ids, g.char_spans),
                                           (w.input_ids, w.token_type_ids, w.char_spans)))
        for g, w in zip(got, want))


# Windows of at most max_seq_len tokens; the stride fits any window (questions are cut to 8 tokens).
window_shape = st.integers(14, 120).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m - 12)))


@settings(max_examples=300, deadline=None)
@given(question=text, context=text, shape=window_shape)
def test_native_windows_equal_tokenizers_windows(question, context, shape):
    max_seq_len, doc_stride = shape
    want = featurize.make_windows(TOK, [(question, context)], max_seq_len, doc_stride, max_query_len=8)
    parts = NATIVE(question, context, max_seq_len, doc_stride, 8)
    if parts is None:  # declined only for a question over max_query_len tokens, a character off the
        # table, or an added-token string such as "[PAD]" (tokenizers matches those in raw text)
        TOK.no_truncation()
        added = [t.content for t in TOK.get_added_tokens_decoder().values()]
        assert (len(TOK.encode(question, add_special_tokens=False).ids) > 8 or set(question + context) - TABLE
                or any(t in question or t in context for t in added))
    else:
        assert same_windows([featurize.Window(0, *p) for p in parts], want)


def test_make_windows_mixes_native_and_fallback_pairs_in_order():
    pairs = [("who wrote it?", "Ada wrote the first program in 1843."),
             ("who wrote it?", "Ada wrote it in Zürich \u2013 in 中文."),  # accents, a dash, CJK: native
             ("what [SEP] is", "the plays of 1843"),                   # an added token's text: tokenizers
             ("q", "a\x0bb\u200ec"),                                   # deleted characters: native
             ("play " * 20, "the playing"),                            # question over max_query_len
             ("q", "e\u0301 and 😀"),                                  # a combining mark, an emoji: tokenizers
             ("what?", "Playing PLAYS abab " * 10)]                    # several windows
    got = featurize.make_windows(TOK, pairs, 32, 8, max_query_len=8, native=NATIVE)
    want = featurize.make_windows(TOK, pairs, 32, 8, max_query_len=8)
    assert same_windows(got, want)
    assert [w.example for w in got] == sorted(w.example for w in got)
    declined = [i for i, (q, c) in enumerate(pairs) if NATIVE(q, c, 32, 8, 8) is None]
    assert declined == [2, 4, 5]


def test_long_words_and_missing_pieces_become_one_unk():
    parts = NATIVE("q", "xyz playing aaaaaaaaaaaaa b", 64, 16, 8)
    (ids, types, spans), = parts
    unk = TOK.token_to_id("[UNK]")
    context = ids[types == 1][:-1]
    assert list(context) == [unk, TOK.token_to_id("play"), TOK.token_to_id("##ing"), unk, TOK.token_to_id("b")]
    assert spans[types == 1][:-1].tolist() == [[0, 3], [4, 8], [8, 11], [12, 25], [26, 27]]


def test_tokenizers_it_cannot_reproduce_get_no_fast_path():
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert wordpiece.NativeWordPiece.of(tok) is None
    cased = make_tokenizer()
    from tokenizers import normalizers
    cased.normalizer = normalizers.BertNormalizer(lowercase=False)
    assert wordpiece.NativeWordPiece.of(cased) is None


def test_every_code_point_of_the_table_matches_tokenizers():
    """Each character of the table, inside and between words, against the installed `tokenizers`
    with the bundled model's vocabulary (which has accented and CJK pieces)."""
    import qualam_rt
    engine = qualam_rt.Engine()
    tok, native = engine._tokenizer, engine._native_tokenizer
    points = wordpiece.bert_char_table(True)[0]
    pairs = [(f"what {c}?", f"a{c}b {c} X{c}. caf{c}s \u00e9{c}{c}") for c in map(chr, points)]
    want = featurize._tokenizers_windows(tok, pairs, 384, 128, 64)
    mismatched = [q[5] for (q, c), w in zip(pairs, want)
                  if not same_windows([featurize.Window(0, *p) for p in native(q, c, 384, 128, 64) or []],
                                      [featurize.Window(0, *p) for p in w])]
    assert not mismatched, f"{len(mismatched)} code points differ, e.g. {[hex(ord(c)) for c in mismatched[:10]]}"


def test_default_model_tokenizer_matches_on_real_text():
    import qualam_rt
    engine = qualam_rt.Engine()
    if engine._native_tokenizer is None:
        pytest.fail("the bundled model's tokenizer should have the native fast path")
    question = "In what country is Normandy located?"
    context = ("The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the "
               "10th and 11th centuries gave their name to Normandy, a region in France. Don't they?\tYes -- "
               "U.S.A. e-mail 3.14 $5 x_y Zürich – “quoted” 東京 Ωmega\u00a0naïve ") * 8
    for msl, stride in ((384, 128), (64, 16)):
        got = featurize.make_windows(engine._tokenizer, [(question, context)], msl, stride, native=engine._native_tokenizer)
        want = featurize.make_windows(engine._tokenizer, [(question, context)], msl, stride)
        assert len(got) > 1 and same_windows(got, want)
