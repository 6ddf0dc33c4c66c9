"""Engine: answers equal the numpy reference forward, configurations, threads, bad input."""
import threading

import numpy as np
import pytest

import qualam_rt
from qualam_rt import decode, Engine
from qualam_rt import reference as ref
from qualam_rt import synthetic as syn
from qualam_rt.errors import InputError, LengthConfigError, ModelFileError, ModelNotFoundError
from qualam_rt.model_file import engine_tensors, read_model, write_model

TEXT = ("Ada Lovelace wrote the first program in 1843 for the analytical engine designed by Charles Babbage . "
        "The engine was never finished , but her notes describe loops and variables . Who wrote the notes ? "
        "When was the program written ? What did Babbage design ? Café Zürich naïve")
QUESTIONS = ["Who wrote the first program?", "When was the program written?", "What did Babbage design?"]
FRONTIER = [{"ratios": [0.9, 0.7, 0.5], "macs": 3.0e6, "f1": 60.0, "latency_ms": 2.0, "real_macs_share": 0.8},
            {"ratios": [0.6, 0.4, 0.2], "macs": 1.5e6, "f1": 40.0, "latency_ms": 1.0, "real_macs_share": 0.5}]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "tiny.qrt"
    syn.write_random_model(path, TEXT, frontier=FRONTIER, default_config=[0.9, 0.7, 0.5])
    return path


@pytest.fixture(scope="module")
def engine(model_path):
    return Engine(model_path)


@pytest.mark.parametrize("config", ["full", "default", (0.5, 0.5, 0.25)])
def test_logits_and_answers_equal_the_reference_forward(model_path, config):
    eng = Engine(model_path, length_config=config)
    meta, tensors = read_model(model_path)
    reference = ref.ReferenceEncoder(meta["architecture"], engine_tensors(tensors), "int8", attention=eng.attention)
    long_context = " ".join([TEXT] * 6)  # several windows
    for question, context in [(QUESTIONS[0], TEXT), (QUESTIONS[1], long_context)]:
        windows = eng.windows([(question, context)])
        got = eng.logits(windows)
        want = [reference.sequence(w.input_ids, w.token_type_ids, eng.length_config)[0] for w in windows]
        for g, w in zip(got, want):
            scale = 1 + np.abs(w).max()
            assert np.abs(g - w).max() <= 0.02 * scale and np.abs(g - w).mean() <= 3e-3 * scale
        answer = eng.answer(question, context)
        expected = decode.best_spans(context, windows, want)[0]
        assert (answer["start"], answer["end"]) == (expected.start, expected.end)
        assert answer["answer"] == context[answer["start"]:answer["end"]]


def test_answer_shape_and_top_k(engine):
    a = engine.answer(QUESTIONS[0], TEXT)
    assert set(a) == {"answer", "score", "start", "end"} and TEXT[a["start"]:a["end"]] == a["answer"]
    top = engine.answer(QUESTIONS[0], TEXT, top_k=4)
    assert len(top) == 4 and top[0] == a and all(x["score"] >= y["score"] for x, y in zip(top, top[1:]))
    assert engine.answer(QUESTIONS[0], TEXT, max_answer_len=1)["answer"].count(" ") == 0


def test_answer_batch_equals_single_answers(engine):
    pairs = [(q, TEXT) for q in QUESTIONS] + [(QUESTIONS[0], " ".join([TEXT] * 5))]
    assert engine.answer_batch(pairs, batch_size=2) == [engine.answer(q, c) for q, c in pairs]


def test_huge_context_is_answered(engine):
    context = " ".join([TEXT] * 300)  # ~10k tokens, ~100 windows
    a = engine.answer(QUESTIONS[2], context)
    assert context[a["start"]:a["end"]] == a["answer"]


def test_concurrent_calls_match_serial_calls(engine):
    pairs = [(QUESTIONS[i % 3], " ".join([TEXT] * (1 + i % 4))) for i in range(16)]
    serial = [engine.answer(q, c) for q, c in pairs]
    results = [None] * len(pairs)

    def work(k):
        for i in range(k, len(pairs), 8):
            results[i] = engine.answer(*pairs[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial


def test_length_configuration_choices(model_path):
    assert Engine(model_path).length_config == (0.9, 0.7, 0.5)
    assert Engine(model_path, length_config="full").length_config is None
    assert Engine(model_path, max_macs=2e6).length_config == (0.6, 0.4, 0.2)
    assert Engine(model_path, max_macs=1e9).length_config == (0.9, 0.7, 0.5)
    assert Engine(model_path, max_latency_ms=1.5).length_config == (0.6, 0.4, 0.2)
    assert Engine(model_path, max_macs_share=0.75).length_config == (0.6, 0.4, 0.2)
    assert Engine(model_path, max_macs_share=0.8).length_config == (0.9, 0.7, 0.5)
    with pytest.raises(LengthConfigError, match="at most one"):
        Engine(model_path, max_macs=1e9, max_macs_share=0.8)
    with pytest.raises(LengthConfigError, match="real_macs_share <= 0.4"):
        Engine(model_path, max_macs_share=0.4)
    with pytest.raises(LengthConfigError, match="frontier"):
        Engine(model_path, max_macs=10)
    for kw in ({"max_macs": "big"}, {"max_latency_ms": -1.0}, {"max_macs_share": float("nan")}, {"max_macs": True}):
        with pytest.raises(LengthConfigError, match=f"{next(iter(kw))} must be a positive number"):
            Engine(model_path, **kw)  # "big": a TypeError from the comparison before
    assert Engine(model_path, max_macs=np.float32(2e6)).length_config == (0.6, 0.4, 0.2)
    assert Engine(model_path, length_config={"ratios": [0.9, 0.7, 0.5]}).length_config == (0.9, 0.7, 0.5)
    assert Engine(model_path, length_config={"tokens": [300, 100, 9]}).length_config == {"tokens": (300, 100, 9)}
    for bad, msg in [((0.5, 0.6, 0.1), "non-increasing"), ((0.5, 0.4), "layers"), ((1.2, 1.0, 0.5), r"\(0, 1\]"),
                     ((0.5, 0.0, 0.0), r"\(0, 1\]"), ("fastest", "length_config"), (("a", "b", "c"), "keep ratios"),
                     ({"tokens": [5, 6, 1]}, "non-increasing"), ({"tokens": [5, 2.5, 1]}, "integers"),
                     ({"tokens": [5, 0, 0]}, "integers >= 1"), ({"budget": [1, 1, 1]}, "one key"),
                     ({"tokens": [3, 2]}, "layers")]:
        with pytest.raises(LengthConfigError, match=msg):
            Engine(model_path, length_config=bad)


def test_token_budgets_give_the_reference_answers(model_path):
    """{"tokens": budgets} through the engine: the same logits as the reference forward."""
    budgets = {"tokens": [20, 12, 6]}
    engine = Engine(model_path, length_config=budgets)
    meta, tensors = read_model(model_path)
    r = ref.ReferenceEncoder(meta["architecture"], engine_tensors(tensors), "int8")
    windows = engine.windows([(QUESTIONS[0], TEXT)])
    for w, got in zip(windows, engine.logits(windows)):
        want, kept = r.sequence(w.input_ids, w.token_type_ids, budgets)
        assert [len(k) for k in kept] == ref.layer_lengths(len(w.input_ids), budgets)
        np.testing.assert_allclose(got, want, atol=2e-2 * (1 + np.abs(want).max()))


def test_bad_questions_and_contexts(engine):
    for q, c, msg in [("", TEXT, "question is empty"), ("   \n", TEXT, "question is empty"),
                      (QUESTIONS[0], "", "context is empty"), (QUESTIONS[0], " \t ", "context is empty"),
                      (None, TEXT, "question must be a str"), (QUESTIONS[0], 42, "context must be a str"),
                      (b"bytes?", TEXT, "must be a str"), ("who\ud800?", TEXT, "question is not valid Unicode"),
                      (QUESTIONS[0], "lone \udfff surrogate", "context is not valid Unicode")]:
        with pytest.raises(InputError, match=msg):
            engine.answer(q, c)
    with pytest.raises(InputError):
        engine.answer_batch("not pairs")
    with pytest.raises(InputError):
        engine.answer_batch([("only one",)])
    with pytest.raises(InputError):
        engine.answer(QUESTIONS[0], TEXT, top_k=0)
    # The lower-level calls: wrong types were AttributeErrors, or a ModelFileError blaming the
    # model's tokenizer for an int.
    for bad in (5, "abc", None, [("q",)], [("q", 5)], [1]):
        with pytest.raises(InputError, match="pairs must be"):
            engine.windows(bad)
        with pytest.raises(InputError, match="windows must be"):
            engine.logits(bad)
    windows = engine.windows(iter([(QUESTIONS[0], TEXT)]))  # any iterable, read once
    assert len(engine.logits(iter(windows))) == len(windows) > 0


def test_counts_may_be_numpy_integers_and_as_large_as_python_allows(engine, model_path):
    """A count read from an array is a numpy integer; a max_answer_len past the native int
    (no limit, in effect) raised a TypeError from the span search: a span is no longer than
    its window, so that is the same answer as the window's length."""
    windows = engine.windows([(QUESTIONS[0], TEXT)])
    whole = max(len(w.input_ids) for w in windows)
    want = engine.answer(QUESTIONS[0], TEXT, top_k=3, max_answer_len=whole)
    assert engine.answer(QUESTIONS[0], TEXT, top_k=np.int64(3), max_answer_len=np.int32(whole)) == want
    assert engine.answer(QUESTIONS[0], TEXT, top_k=3, max_answer_len=10**30) == want
    assert engine.answer_batch([(QUESTIONS[0], TEXT)], batch_size=np.int64(2), top_k=3, max_answer_len=whole) == [want]
    assert len(engine.answer(QUESTIONS[0], TEXT, top_k=10**30)) >= 3
    assert Engine(model_path, threads=np.int64(1)).info()["threads"] == 1
    for bad in (np.float64(2.0), np.bool_(True), 0, "3"):
        with pytest.raises(InputError, match="top_k must be a positive integer"):
            engine.answer(QUESTIONS[0], TEXT, top_k=bad)


def test_bad_thread_count(model_path):
    for bad in (0, -1, 1.5, True, qualam_rt._C.max_threads() + 1, 10**6):
        with pytest.raises(ValueError, match="threads must be an integer in"):
            Engine(model_path, threads=bad)


def test_an_engines_thread_count_is_its_own(model_path):
    """Engine(threads=1) once left every later engine (and the process) on one thread."""
    import qualam_rt
    before = qualam_rt.num_threads()
    one = Engine(model_path, threads=1)
    other = Engine(model_path)
    assert qualam_rt.num_threads() == before
    assert one.info()["threads"] == 1 and other.info()["threads"] == before
    assert one.answer(QUESTIONS[0], TEXT) == other.answer(QUESTIONS[0], TEXT)


@pytest.mark.parametrize("size", [0, -1, 2.0, None, True])
def test_bad_batch_size_is_an_input_error(engine, size):
    with pytest.raises(InputError, match="batch_size"):
        engine.answer_batch([(QUESTIONS[0], TEXT)], batch_size=size)


def test_no_bundled_model_gives_a_clear_error(monkeypatch, tmp_path):
    import qualam_rt.engine as engine_module
    monkeypatch.setattr(engine_module, "default_model_path", lambda: tmp_path / "absent.qrt")
    with pytest.raises(ModelNotFoundError, match="pass the path"):
        Engine()


def test_info(engine):
    info = engine.info()
    assert info["architecture"]["layers"] == 3 and info["frontier"] == FRONTIER
    assert info["isa"] in qualam_rt.supported_isas() and info["macs_at_384"] > 0
    assert info["amx"] == "available" or info["amx"].startswith("unavailable: ")


def test_the_amx_path_runs_bf16_attention_where_the_model_chose_int16(tmp_path):
    """None = the model's choice (int16 here), except on the amx path with head dims of whole
    tiles, where bf16 runs; decided at each call, so changing the path changes it; an
    explicit choice always holds."""
    path = tmp_path / "d32.qrt"
    syn.write_random_model(path, TEXT, config=dict(hidden=64, heads=2))  # head dim 32
    eng, int16 = Engine(path), Engine(path, attention="int16")
    windows = eng.windows([(QUESTIONS[0], TEXT)])
    before = qualam_rt.isa()
    try:
        for isa in qualam_rt.supported_isas():
            qualam_rt.set_isa(isa)
            want = "bf16" if isa == "amx" else "int16"
            assert eng.attention == want and eng.info()["attention"] == want and int16.attention == "int16"
            eng.logits(windows)  # runs on every path
    finally:
        qualam_rt.set_isa(before)
    narrow = tmp_path / "d8.qrt"
    syn.write_random_model(narrow, TEXT)  # head dim 8: not whole tiles
    if "amx" in qualam_rt.supported_isas():
        qualam_rt.set_isa("amx")
        try:
            assert Engine(narrow).attention == "int16"
        finally:
            qualam_rt.set_isa(before)


def test_a_model_exported_for_bf16_attention_answers_on_every_path(tmp_path):
    """`export --attention bf16` wrote a model whose every answer failed (ValueError) on a CPU
    without AMX: a path without tiles now runs int16 for it. Asking for bf16 where it cannot
    run is refused when the engine is made, not at every call."""
    source, bf16 = tmp_path / "source.qrt", tmp_path / "bf16.qrt"
    syn.write_random_model(source, TEXT, config=dict(hidden=64, heads=2))  # head dim 32
    meta, tensors = read_model(source)
    write_model(bf16, tensors, meta | {"attention": "bf16"})
    eng, before = Engine(bf16), qualam_rt.isa()
    try:
        for isa in qualam_rt.supported_isas():
            qualam_rt.set_isa(isa)
            tiles = isa in ("amx", "amx_emulated")
            assert eng.attention == ("bf16" if tiles else "int16")
            assert eng.answer(QUESTIONS[0], TEXT)["answer"] in TEXT
            if tiles:
                assert Engine(bf16, attention="bf16").attention == "bf16"
            else:
                with pytest.raises(ValueError, match="bf16 attention runs on the tile paths"):
                    Engine(bf16, attention="bf16")
    finally:
        qualam_rt.set_isa(before)


def test_a_model_file_naming_an_unknown_attention_path_is_refused(tmp_path):
    source, odd = tmp_path / "source.qrt", tmp_path / "odd.qrt"
    syn.write_random_model(source, TEXT)
    meta, tensors = read_model(source)
    write_model(odd, tensors, meta | {"attention": "int4"})
    with pytest.raises(ModelFileError, match="attention path 'int4'"):
        Engine(odd)


def test_a_tokenizer_that_fails_on_every_pair_is_refused_at_load(tmp_path):
    """A template naming a special token the tokenizer lacks loads, then panics (a Rust panic:
    a BaseException, not an Exception) on every pair: found by tools/fuzz_long.sh."""
    import json
    source, broken = tmp_path / "source.qrt", tmp_path / "broken.qrt"
    syn.write_random_model(source, TEXT)
    meta, tensors = read_model(source)
    tokenizer = json.loads(meta["tokenizer"])
    tokenizer["post_processor"]["pair"][2]["SpecialToken"]["id"] = "[XEP]"  # [CLS] $A [XEP] $B [SEP]
    write_model(broken, tensors, meta | {"tokenizer": json.dumps(tokenizer)})
    with pytest.raises(ModelFileError, match="PanicException"):
        Engine(broken)


@pytest.mark.parametrize("max_position", [8, 16, 40, 70])
@pytest.mark.parametrize("specials", [3, 4])
def test_a_model_with_few_positions_answers_long_questions_about_long_contexts(tmp_path, max_position, specials):
    """The question is cut so that the context keeps more tokens than the stride (tokenizers
    panics otherwise): 64-token questions fit from max_position 101 on, with [CLS] A [SEP] B
    [SEP]; with a fourth special token ([CLS] A [SEP] [SEP] B [SEP]) from 103 on."""
    import json
    path = tmp_path / "short.qrt"
    syn.write_random_model(path, TEXT, calibrate=False, config={"max_position": max_position})
    if specials == 4:
        meta, tensors = read_model(path)
        tokenizer = json.loads(meta["tokenizer"])
        pair = tokenizer["post_processor"]["pair"]
        tokenizer["post_processor"]["pair"] = pair[:3] + [pair[2]] + pair[3:]
        write_model(path, tensors, meta | {"tokenizer": json.dumps(tokenizer)})
    eng = Engine(path)
    long_question, long_context = " ".join(QUESTIONS * 10), " ".join([TEXT] * 4)
    for question, context in [(long_question, TEXT), (long_question, long_context), (QUESTIONS[0], long_context)]:
        answer = eng.answer(question, context)
        assert answer["answer"] == context[answer["start"]:answer["end"]]
        assert all(len(w.input_ids) <= max_position for w in eng.windows([(question, context)]))


def test_a_model_with_no_room_for_a_question_and_a_context_is_refused(tmp_path):
    path = tmp_path / "tiny.qrt"
    syn.write_random_model(path, TEXT, calibrate=False, config={"max_position": 6})
    with pytest.raises(ModelFileError, match="max_position 6"):
        Engine(path)


def _answer_in_a_forked_child(eng, question, context, seconds=30):
    """The answer a child forked now computes, or None if it has none within `seconds`."""
    import os
    import select
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer, report, leave without running the parent's test teardown
        try:
            os.write(write_end, repr(eng.answer(question, context)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], seconds)
    if not ready:
        os.kill(pid, 9)
    got = os.read(read_end, 1 << 16).decode() if ready else None
    os.close(read_end)
    os.waitpid(pid, 0)
    return got


def test_an_engine_used_before_a_fork_answers_in_the_forked_child(model_path):
    """GNU OpenMP cannot start threads in a child forked after the parent ran a parallel region
    (the child waited forever): such a child runs the kernels on one thread."""
    eng = Engine(model_path, threads=2)
    question, context = QUESTIONS[0], " ".join([TEXT] * 8)  # regions large enough to use both threads
    expected = eng.answer(question, context)
    assert _answer_in_a_forked_child(eng, question, context) == repr(expected)
    assert eng.answer(question, context) == expected  # and the parent still does


def test_a_child_forked_while_another_thread_tokenizes_answers(model_path):
    """The tokenizer lock, held by a thread of the parent at the fork, is a new one in the child."""
    eng = Engine(model_path, threads=1)
    expected = eng.answer(QUESTIONS[0], TEXT)
    with eng._tokenize_lock:  # as a thread in the middle of windows() holds it
        got = _answer_in_a_forked_child(eng, QUESTIONS[0], TEXT, seconds=10)
    assert got == repr(expected)


def _answer_in_worker(args):
    engine, question, context = args
    return engine.answer(question, context)


def test_an_engine_pickles_as_its_file_and_settings_and_answers_in_a_spawned_process(model_path):
    import multiprocessing
    import pickle
    context = " ".join([TEXT] * 3)
    for eng in (Engine(model_path, threads=1, length_config=(0.5, 0.5, 0.25), attention="fp32"),
                Engine(model_path, length_config="full"), Engine(model_path, length_config={"tokens": (40, 30, 20)})):
        copy = pickle.loads(pickle.dumps(eng))
        assert (copy.path, copy.threads, copy.length_config, copy.attention) == (
            eng.path, eng.threads, eng.length_config, eng.attention)
        assert copy.answer(QUESTIONS[0], context) == eng.answer(QUESTIONS[0], context)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        # A worker that cannot unpickle its task dies and the pool waits forever: bound the wait
        # (a spawned child imports from the parent's sys.path, where a source tree's qualam_rt,
        # without its extension, once came first).
        answers = pool.map_async(_answer_in_worker, [(eng, QUESTIONS[1], context)]).get(timeout=120)
    assert answers == [eng.answer(QUESTIONS[1], context)]


def test_a_tokenizer_with_ids_past_the_embeddings_is_refused_at_load(tmp_path):
    """Its ids would reach the encoder only with a question that uses them: find it at load."""
    import json
    source, broken = tmp_path / "source.qrt", tmp_path / "broken.qrt"
    syn.write_random_model(source, TEXT)
    meta, tensors = read_model(source)
    tokenizer = json.loads(meta["tokenizer"])
    tokenizer["model"]["vocab"]["ada"] = meta["architecture"]["vocab_size"]  # one past the last row
    write_model(broken, tensors, meta | {"tokenizer": json.dumps(tokenizer)})
    with pytest.raises(ModelFileError, match=f"token id {meta['architecture']['vocab_size']}"):
        Engine(broken)
    Engine(source)  # the largest id of a valid one is the last row


def test_a_model_with_one_token_type_is_refused_at_load(tmp_path):
    """The context's tokens are of type 1: every question would fail in the encoder."""
    path = tmp_path / "one_type.qrt"
    syn.write_random_model(path, TEXT, calibrate=False, config={"type_vocab_size": 1})
    with pytest.raises(ModelFileError, match="token type 1, but the model has 1"):
        Engine(path)


def test_switching_the_kernel_path_during_calls_does_not_crash(tmp_path):
    """set_isa from one thread while others answer: a forward read the path anew at each op, so
    bf16 attention's operands, made on a tile path, were read by a vector path (a segfault).
    Each call now runs on the path it started on; one that starts where bf16 cannot run gets
    the ValueError. In a child process, so a crash fails only this test."""
    import subprocess
    import sys
    path = tmp_path / "d32.qrt"
    syn.write_random_model(path, TEXT, config=dict(hidden=64, heads=2))  # head dim 32: bf16 runs on tiles
    code = f"""
import threading, time, qualam_rt
from qualam_rt import Engine
qualam_rt.set_isa("amx_emulated")
engine = Engine({str(path)!r}, attention="bf16")
question, context = {QUESTIONS[0]!r}, {TEXT!r} * 3
want = engine.answer(question, context)
stop, bad = False, []
def flip():
    i = 0
    while not stop:
        qualam_rt.set_isa(("amx_emulated", "ref")[i % 2]); i += 1; time.sleep(0.0002)
def ask():
    for _ in range(60):
        try:
            if engine.answer(question, context) != want: bad.append("answer")
        except ValueError as e:
            if "bf16 attention runs on the tile paths" not in str(e): bad.append(repr(e))
threads = [threading.Thread(target=flip)] + [threading.Thread(target=ask) for _ in range(2)]
[t.start() for t in threads]; [t.join() for t in threads[1:]]; stop = True; threads[0].join()
print("bad", bad)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd="/")
    assert run.returncode == 0 and "bad []" in run.stdout, (run.returncode, run.stdout[-500:], run.stderr[-2000:])
