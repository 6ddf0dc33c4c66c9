"""Windows, post-processing on hand-made logits, and the official metric."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualam_rt import _C, decode, featurize, squad
from qualam_rt import synthetic as syn

CONTEXT = ("Ada Lovelace wrote   the first\n\n program in 1843 . Charles Babbage designed the analytical "
           "engine ; the café owner in Zürich was naïve about it and the story ends with the word finale")
QUESTION = "Who wrote the first program?"


@pytest.fixture(scope="module")
def tok():
    return syn.tiny_tokenizer(CONTEXT + " " + QUESTION)


def token_at(window, char_start):
    hits = np.nonzero(window.char_spans[:, 0] == char_start)[0]
    return int(hits[0]) if len(hits) else None


def logits_for(windows, which, start_char, end_char):
    """Zero logits except a clear start/end for the given characters in window `which`."""
    out = []
    for i, w in enumerate(windows):
        lg = np.zeros((len(w.input_ids), 2), np.float32)
        if i == which:
            s = token_at(w, start_char)
            e = int(np.nonzero(w.char_spans[:, 1] == end_char)[0][0])
            lg[s, 0] = lg[e, 1] = 10.0
        out.append(lg)
    return out


def test_windows_cover_the_context_with_overlap(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=24, doc_stride=6)
    assert len(windows) > 2
    for w in windows:
        assert len(w.input_ids) <= 24
        assert w.input_ids[0] == tok.token_to_id("[CLS]")
        ctx = w.char_spans[w.char_spans[:, 0] >= 0]
        assert len(ctx) and (w.token_type_ids[w.char_spans[:, 0] >= 0] == 1).all()
    starts = [set(w.char_spans[w.char_spans[:, 0] >= 0, 0].tolist()) for w in windows]
    assert all(len(a & b) >= 1 for a, b in zip(starts, starts[1:])), "consecutive windows share tokens"
    every = set().union(*starts)
    assert max(every) > len(CONTEXT) - 10


def test_long_question_is_truncated(tok):
    q = " ".join(["who"] * 200)
    w = featurize.make_windows(tok, [(q, CONTEXT)], max_seq_len=100, doc_stride=10, max_query_len=8)[0]
    assert (w.token_type_ids == 0).sum() == 8 + 2  # [CLS] + 8 question tokens + [SEP]


@pytest.mark.parametrize("batch", [1, 2])
def test_question_leaving_less_room_than_the_stride_is_truncated(tok, batch, capfd):
    # 90 question tokens leave 7 context tokens per window, fewer than the stride: `tokenizers`
    # panics on such a pair; the question must be cut before, without a panic in the log.
    q = " ".join(["who"] * 90)
    windows = featurize.make_windows(tok, [(q, CONTEXT)] * batch, max_seq_len=100, doc_stride=10, max_query_len=8)
    assert {w.example for w in windows} == set(range(batch))
    assert all((w.token_type_ids == 0).sum() == 8 + 2 for w in windows)
    assert "panicked" not in capfd.readouterr().err


def test_question_over_the_limit_but_inside_a_window_is_truncated_in_a_batch(tok):
    pairs = [(" ".join(["who"] * 20), CONTEXT), (QUESTION, CONTEXT), (" ".join(["who"] * 200), CONTEXT)]
    windows = featurize.make_windows(tok, pairs, max_seq_len=100, doc_stride=10, max_query_len=8)
    first = {}
    for w in windows:
        first.setdefault(w.example, w)
    assert [(first[i].token_type_ids == 0).sum() for i in range(3)] == [10, min(10, 2 + len(tok.encode(QUESTION, add_special_tokens=False).ids)), 10]


@given(st.integers(1, 1000), st.integers(2, 6))
def test_window_limits_leave_the_context_more_than_the_stride(max_position, specials):
    """What `tokenizers` needs of any window: a question cut to max_query_len, the special
    tokens and more than doc_stride context tokens fit max_seq_len <= max_position."""
    max_seq_len, doc_stride, max_query_len = featurize.window_limits(max_position, specials)
    assert max_seq_len <= max_position and max_query_len <= featurize.MAX_QUERY_LEN
    if max_query_len >= 1:
        assert max_seq_len - specials - max_query_len > doc_stride >= 0
    if max_position >= 384:
        assert (max_seq_len, doc_stride, max_query_len) == (384, 128, 64)  # the usual windows, unchanged


def test_span_inside_one_window(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=24, doc_stride=6)
    start = CONTEXT.index("Ada")
    end = start + len("Ada Lovelace")
    span = decode.best_spans(CONTEXT, windows, logits_for(windows, 0, start, end))[0]
    assert (span.start, span.end, span.text) == (start, end, "Ada Lovelace")


def test_whitespace_gaps_are_kept_from_the_original_text(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=64, doc_stride=16)
    start = CONTEXT.index("wrote")
    end = CONTEXT.index("program") + len("program")
    span = decode.best_spans(CONTEXT, windows, logits_for(windows, 0, start, end))[0]
    assert span.text == "wrote   the first\n\n program"


def test_answer_across_a_window_boundary_found_in_the_overlapping_window(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=18, doc_stride=7)
    start = CONTEXT.index("Charles")
    end = CONTEXT.index("designed") + len("designed")
    holder = [i for i, w in enumerate(windows) if token_at(w, start) is not None and (w.char_spans[:, 1] == end).any()]
    cut = [i for i, w in enumerate(windows) if token_at(w, start) is not None and not (w.char_spans[:, 1] == end).any()]
    assert holder and cut, "this stride must cut the answer in one window and hold it whole in another"
    span = decode.best_spans(CONTEXT, windows, logits_for(windows, holder[-1], start, end))[0]
    assert span.text == "Charles Babbage designed"
    # the window where the answer is cut off cannot produce it, even pointed at its start
    cut_logits = logits_for([windows[cut[0]]], 0, start, start + len("Charles"))
    assert decode.best_spans(CONTEXT, [windows[cut[0]]], cut_logits)[0].text == "Charles"


def test_answer_at_the_very_end(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=24, doc_stride=6)
    start = CONTEXT.index("finale")
    span = decode.best_spans(CONTEXT, windows, logits_for(windows, len(windows) - 1, start, len(CONTEXT)))[0]
    assert span.text == "finale" and span.end == len(CONTEXT)


def test_accented_text_maps_to_original_characters(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=100, doc_stride=16)
    start = CONTEXT.index("café")
    end = CONTEXT.index("Zürich") + len("Zürich")
    span = decode.best_spans(CONTEXT, windows, logits_for(windows, 0, start, end))[0]
    assert span.text == "café owner in Zürich"


def test_constraints_end_before_start_and_length_limit(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=100, doc_stride=16)
    w = windows[0]
    lg = np.zeros((len(w.input_ids), 2), np.float32)
    s, e = token_at(w, CONTEXT.index("program")), token_at(w, CONTEXT.index("Ada"))
    lg[s, 0] = 10  # best start after the best end
    lg[e, 1] = 10
    span = decode.best_spans(CONTEXT, [w], [lg])[0]
    assert span.start <= span.end and span.text != ""
    lg = np.zeros_like(lg)
    lg[token_at(w, CONTEXT.index("Ada")), 0] = 10
    lg[token_at(w, CONTEXT.index("1843")), 1] = 10
    assert decode.best_spans(CONTEXT, [w], [lg], max_answer_len=3)[0].end - decode.best_spans(CONTEXT, [w], [lg], max_answer_len=3)[0].start < 25
    assert decode.best_spans(CONTEXT, [w], [lg], max_answer_len=30)[0].text == "Ada Lovelace wrote   the first\n\n program in 1843"
    # the question tokens are never part of an answer: the best span lies in the context
    lg = np.full_like(lg, -5)
    lg[1, 0] = lg[2, 1] = 50
    lg[token_at(w, CONTEXT.index("Ada")), 0] = lg[token_at(w, CONTEXT.index("Lovelace")), 1] = 1
    assert decode.best_spans(CONTEXT, [w], [lg])[0].text == "Ada Lovelace"


def test_top_k_spans_are_distinct_and_sorted(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=24, doc_stride=6)
    rng = np.random.default_rng(0)
    spans = decode.best_spans(CONTEXT, windows, [rng.standard_normal((len(w.input_ids), 2)) for w in windows], top_k=5)
    assert len(spans) == 5 and len({(s.start, s.end) for s in spans}) == 5
    assert all(a.score >= b.score for a, b in zip(spans, spans[1:]))


def test_official_metric():
    assert squad.normalize_answer("The  Cat, sat!") == "cat sat"
    assert squad.exact_match("the cat", "Cat") == 1.0
    assert squad.f1_score("a cat sat down", "the cat sat") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert squad.f1_score("dog", "cat") == 0.0
    ex = [squad.Example("1", "q", "c", ["Cat", "a dog"], [0, 0]), squad.Example("2", "q", "c", ["x y"], [0])]
    r = squad.evaluate(ex, {"1": "dog", "2": "x"})
    assert r["exact_match"] == 50.0 and r["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    em, f1 = squad.question_scores(ex, {"1": "dog", "2": "x"})
    assert em == [1.0, 0.0] and f1 == pytest.approx([1.0, 2 / 3])


def test_load_examples(tmp_path):
    data = {"data": [{"title": "t", "paragraphs": [{"context": "abc def", "qas": [
        {"id": "q1", "question": "what?", "answers": [{"text": "def", "answer_start": 4}]}]}]}]}
    (tmp_path / "s.json").write_text(json.dumps(data))
    ex = squad.load_examples(tmp_path / "s.json")
    assert ex[0].context[ex[0].answer_starts[0]:].startswith(ex[0].answers[0])


def test_answer_token_span_labels(tok):
    windows = featurize.make_windows(tok, [(QUESTION, CONTEXT)], max_seq_len=24, doc_stride=6)
    start = CONTEXT.index("Charles")
    end = start + len("Charles Babbage")
    labelled = [(i, featurize.answer_token_span(w, start, end)) for i, w in enumerate(windows)]
    hits = [(i, s) for i, s in labelled if s is not None]
    assert hits
    for i, (s, e) in hits:
        w = windows[i]
        assert w.char_spans[s, 0] == start and w.char_spans[e, 1] == end


def reference_candidates(lg, spans, n_best, max_answer_len):
    """The post-processing of one window in plain numpy: (start, end, score) best first."""
    top = np.argsort(-lg, axis=0, kind="stable")[:n_best]
    s_idx = top[:, 0][spans[top[:, 0], 0] >= 0]
    e_idx = top[:, 1][spans[top[:, 1], 0] >= 0]
    length = e_idx[None, :] - s_idx[:, None] + 1
    si, ei = np.nonzero((length >= 1) & (length <= max_answer_len))
    starts, ends = spans[s_idx[si], 0], spans[e_idx[ei], 1]
    scores = lg[s_idx[si], 0].astype(np.float64) + lg[e_idx[ei], 1]
    order = np.lexsort((ends, starts, -scores))
    return starts[order], ends[order], scores[order]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 80), n_best=st.integers(1, 30), max_answer_len=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1))
def test_native_span_candidates_equal_the_numpy_reference(n, n_best, max_answer_len, seed):
    rng = np.random.default_rng(seed)
    lg = rng.integers(-3, 4, (n, 2)).astype(np.float32)  # small integers: many ties
    if seed % 2:
        lg += rng.normal(size=(n, 2)).astype(np.float32)
    spans = np.stack([np.arange(n) * 3, np.arange(n) * 3 + 2], 1).astype(np.int64)
    spans[rng.random(n) < 0.3] = -1  # question and special tokens
    got = _C.span_candidates(lg, spans, n_best, max_answer_len)
    for g, w in zip(got, reference_candidates(lg, spans, n_best, max_answer_len)):
        np.testing.assert_array_equal(g, w)


def test_span_candidates_reject_bad_arrays():
    with pytest.raises(TypeError):
        _C.span_candidates(np.zeros((3, 2)), np.zeros((3, 2), np.int64), 20, 30)
    with pytest.raises(ValueError):
        _C.span_candidates(np.zeros((3, 2), np.float32), np.zeros((4, 2), np.int64), 20, 30)
    with pytest.raises(ValueError):
        _C.span_candidates(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.int64), 0, 30)
