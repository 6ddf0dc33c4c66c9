"""The native drop-and-restore encoder against the numpy reference (qualam_rt.reference)."""
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualam_rt import _C
from qualam_rt import reference as ref
from qualam_rt import synthetic as syn

CFG = dict(hidden=64, heads=4, intermediate=96, layers=3, vocab_size=120, max_position=512, type_vocab_size=2)
RATIOS = [0.8, 0.55, 0.3]


def assert_close_to_int8_reference(got, want):
    """Native vs INT8-simulated logits. Float rounding differences (1e-6) now and then push
    a value across a quantization rounding boundary, moving one uint8 input by one step;
    through attention that perturbs every token of a long sequence a little. Short
    sequences match to float precision; every sequence within a small error. Bounds: the
    largest errors measured over this file on every path (ref, amx_emulated, avx2,
    avx512vnni, amx), times ~10 where that leaves a margin: <= 8e-7 on up to 8 tokens (bound
    1e-5); flips on longer ones up to 1.0e-2 (bound 0.02, the flip's own size) and a mean
    row error up to 1.8e-3 (bound 3e-3)."""
    scale = 1 + np.abs(want).max()
    err = np.abs(got - want).max(axis=1)
    tight = 1e-5 if len(want) <= 8 else 0.02
    assert err.max() <= tight * scale, f"max error {err.max()} (scale {scale})"
    assert err.mean() <= 3e-3 * scale, f"mean error {err.mean()} (scale {scale})"


def split(ids, types, offsets, s):
    return ids[offsets[s]:offsets[s + 1]], types[offsets[s]:offsets[s + 1]]


@pytest.fixture(scope="module", params=["per_row", "static"])
def model(request):
    """A tiny random model, with run-time per-row or calibrated static activation quantization."""
    tensors = syn.random_tensors(CFG, seed=1)
    if request.param == "static":
        ids, types, off = syn.random_batch(CFG, [30, 12, 50], seed=9)
        tensors = syn.calibrate_minmax(CFG, tensors, [split(ids, types, off, s) for s in range(3)])
    return tensors, _C.Encoder(CFG, tensors)


@pytest.mark.parametrize("ratios", [None, RATIOS, [0.5, 0.5, 0.1]])
def test_logits_and_kept_positions_match_the_reference(isa, model, ratios):
    tensors, enc = model
    ids, types, off = syn.random_batch(CFG, [17, 1, 40, 2, 64], seed=3)
    out = enc.forward(ids, types, off, ratios, return_kept=True)
    int8_ref = ref.ReferenceEncoder(CFG, tensors, "int8")
    fp32_ref = ref.ReferenceEncoder(CFG, tensors, "fp32")
    for s in range(len(off) - 1):
        want, kept = int8_ref.sequence(*split(ids, types, off, s), ratios)
        got = out["logits"][off[s]:off[s + 1]]
        assert_close_to_int8_reference(got, want)
        loose, _ = fp32_ref.sequence(*split(ids, types, off, s), ratios)
        assert np.abs(got - loose).max() < 0.05 * (1 + np.abs(loose).max())
        for layer, (positions, offsets) in enumerate(out["kept"]):
            np.testing.assert_array_equal(positions[offsets[s]:offsets[s + 1]] - off[s], kept[layer])


def test_keep_counts_follow_the_length_rule(model):
    _, enc = model
    lengths = [1, 2, 3, 10, 77]
    ids, types, off = syn.random_batch(CFG, lengths, seed=4)
    out = enc.forward(ids, types, off, RATIOS, return_kept=True)
    for s, n in enumerate(lengths):
        counts = [int(o[s + 1] - o[s]) for _, o in out["kept"]]
        assert counts == ref.layer_lengths(n, RATIOS) == _C.layer_lengths(n, RATIOS, 2)


@pytest.mark.parametrize("tokens", [[40, 20, 5], [3, 3, 1], [500, 500, 500]])
def test_token_budgets_drop_only_below_a_sequences_length(isa, model, tokens):
    """The paper's form: layer i keeps min(l_{i-1}, max(2, b_i)) tokens, so short sequences
    lose nothing where their length is within the budget; logits as the reference's."""
    tensors, enc = model
    lengths = [1, 5, 30, 77]
    ids, types, off = syn.random_batch(CFG, lengths, seed=5)
    out = enc.forward(ids, types, off, keep_tokens=tokens, return_kept=True)
    r = ref.ReferenceEncoder(CFG, tensors, "int8")
    for s, n in enumerate(lengths):
        want_counts, prev = [], n
        for b in tokens:
            prev = min(prev, max(2, b))
            want_counts.append(prev)
        assert [int(o[s + 1] - o[s]) for _, o in out["kept"]] == want_counts == _C.budget_lengths(n, tokens, 2)
        want, kept = r.sequence(*split(ids, types, off, s), {"tokens": tokens})
        assert [len(k) for k in kept] == want_counts
        assert_close_to_int8_reference(out["logits"][off[s]:off[s + 1]], want)


def test_bad_token_budgets_raise(model):
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [9], seed=5)
    for tokens, msg in (([5, 6, 1], "non-increasing"), ([5, 0, 0], "below 1"), ([5, 4], "layers")):
        with pytest.raises(ValueError, match=msg):
            enc.forward(ids, types, off, keep_tokens=tokens)
    with pytest.raises(ValueError, match="not both"):
        enc.forward(ids, types, off, RATIOS, keep_tokens=[5, 4, 3])


def test_paper_configuration_lengths_at_384():
    ratios = [x / 384 for x in (315, 251, 242, 159, 142, 33)]
    assert _C.layer_lengths(384, ratios, 2) == [315, 251, 242, 159, 142, 33]


def test_all_ones_configuration_equals_the_no_drop_path(isa, model):
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [5, 33, 8], seed=5)
    out = enc.forward(ids, types, off, [1.0] * CFG["layers"], return_kept=True)
    full = enc.forward(ids, types, off)["logits"]
    np.testing.assert_array_equal(full, out["logits"])
    # keeping everything keeps every position at every layer (not only the same numbers)
    for positions, offsets in out["kept"]:
        np.testing.assert_array_equal(positions, np.arange(off[-1]))
        np.testing.assert_array_equal(offsets, off)
    # and differs from a configuration that does drop: the comparison can fail
    assert np.abs(enc.forward(ids, types, off, [1.0, 1.0, 0.5])["logits"] - full).max() > 1e-3


def test_a_dropped_token_keeps_its_last_computed_state(model):
    """A token dropped at layer i ends with its layer i-1 output: its logits equal those of
    the same model truncated to i layers (the QA head is linear)."""
    tensors, enc = model
    ids, types, off = syn.random_batch(CFG, [60], seed=6)
    out = enc.forward(ids, types, off, RATIOS, return_kept=True)
    kept_sets = [set(p.tolist()) for p, _ in out["kept"]]
    assert [len(k) for k in kept_sets] == ref.layer_lengths(60, RATIOS)
    for i in range(1, CFG["layers"]):
        dropped_here = sorted(kept_sets[i - 1] - kept_sets[i])
        assert dropped_here, "the configuration must drop tokens at every layer"
        truncated_cfg = dict(CFG, layers=i)
        truncated = {k: v for k, v in tensors.items()
                     if not k.startswith("layers.") or int(k.split(".")[1]) < i}
        short = _C.Encoder(truncated_cfg, truncated).forward(ids, types, off, RATIOS[:i])["logits"]
        np.testing.assert_array_equal(out["logits"][dropped_here], short[dropped_here])
        # the kept tokens went on through layer i: their logits are not the truncated model's
        still = sorted(kept_sets[i])
        assert np.abs(out["logits"][still] - short[still]).max() > 1e-3


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 90), min_size=2, max_size=6), seed=st.integers(0, 1000))
def test_a_sequence_does_not_depend_on_its_batch(model, lengths, seed):
    _, enc = model
    ids, types, off = syn.random_batch(CFG, lengths, seed=seed)
    batch = enc.forward(ids, types, off, RATIOS)["logits"]
    for s in range(len(lengths)):
        i, t = split(ids, types, off, s)
        alone = enc.forward(i, t, np.array([0, len(i)], np.int64), RATIOS)["logits"]
        np.testing.assert_array_equal(batch[off[s]:off[s + 1]], alone)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 90), min_size=1, max_size=7), chunk=st.integers(1, 300),
       seed=st.integers(0, 1000))
def test_a_batch_in_chunks_gives_the_same_logits_and_kept_positions(isa, model, lengths, chunk, seed):
    """forward runs whole sequences in chunks of about chunk_tokens; the logits, and the kept
    positions and offsets stitched back to the whole batch, are those of one chunk."""
    _, enc = model
    ids, types, off = syn.random_batch(CFG, lengths, seed=seed)
    one = enc.forward(ids, types, off, RATIOS, return_kept=True, chunk_tokens=10**6)
    got = enc.forward(ids, types, off, RATIOS, return_kept=True, chunk_tokens=chunk)
    np.testing.assert_array_equal(got["logits"], one["logits"])
    assert len(got["kept"]) == len(one["kept"]) == CFG["layers"]
    for (pos, o), (pos1, o1) in zip(got["kept"], one["kept"]):
        np.testing.assert_array_equal(o, o1)
        np.testing.assert_array_equal(pos, pos1)
    with pytest.raises(ValueError, match="chunk_tokens"):
        enc.forward(ids, types, off, chunk_tokens=-1)


@pytest.mark.parametrize("attention", ["fp32", "int16"])
def test_results_do_not_depend_on_thread_count(isa, model, attention, set_threads):
    """With several threads, each layer's rows are split into chunks run in parallel (and the
    kernels inside run serially); the logits must still match one thread's bit for bit."""
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [100, 3, 250, 31], seed=7)
    results = []
    for n in (1, 2, 3):
        set_threads(n)
        results.append(enc.forward(ids, types, off, RATIOS, attention=attention)["logits"])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_sequence_lengths_from_1_to_512(isa, model):
    tensors, enc = model
    lengths = [1, 2, 3, 511, 512]
    ids, types, off = syn.random_batch(CFG, lengths, seed=8)
    dropped = enc.forward(ids, types, off, RATIOS, return_kept=True)
    for s, n in enumerate(lengths):  # every sequence keeps its own counts of its own positions
        counts = [int(o[s + 1] - o[s]) for _, o in dropped["kept"]]
        assert counts == ref.layer_lengths(n, RATIOS)
        for positions, o in dropped["kept"]:
            assert ((positions[o[s]:o[s + 1]] >= off[s]) & (positions[o[s]:o[s + 1]] < off[s + 1])).all()
    # Logits at 511/512 tokens with dropping: most tokens match the reference; over 512 tokens a
    # near-tie in significance can swap one kept token between float orders, so the whole-
    # sequence comparison is made without dropping.
    r = ref.ReferenceEncoder(CFG, tensors, "int8")
    for s in range(3):  # the short ones have no near-ties to speak of
        want, _ = r.sequence(*split(ids, types, off, s), RATIOS)
        assert_close_to_int8_reference(dropped["logits"][off[s]:off[s + 1]], want)
    out = enc.forward(ids, types, off)["logits"]
    assert out.shape == (sum(lengths), 2)
    for s in range(len(lengths)):
        want, _ = r.sequence(*split(ids, types, off, s))
        assert_close_to_int8_reference(out[off[s]:off[s + 1]], want)


def test_empty_batch(model):
    _, enc = model
    out = enc.forward(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(1, np.int64))
    assert out["logits"].shape == (0, 2)


@pytest.mark.parametrize("ratios, message", [
    ([0.5, 0.8, 0.3], "non-increasing"),
    ([0.5, 0.3], "layers"),
    ([0.5, 0.3, 0.2, 0.1], "layers"),
    ([1.5, 1.0, 0.5], r"\(0, 1\]"),
    ([0.5, 0.3, 0.0], r"\(0, 1\]"),
    ([0.5, 0.3, -0.1], r"\(0, 1\]"),
    ([float("nan"), 0.3, 0.1], r"\(0, 1\]"),
])
def test_bad_length_configurations_raise(model, ratios, message):
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [5], seed=0)
    with pytest.raises(ValueError, match=message):
        enc.forward(ids, types, off, ratios)


def test_bad_inputs_raise(model):
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [5, 6], seed=0)
    with pytest.raises(ValueError, match="vocabulary"):
        enc.forward(np.full(11, 999, np.int32), types, off)
    with pytest.raises(ValueError, match="type"):
        enc.forward(ids, np.full(11, 5, np.int32), off)
    with pytest.raises(ValueError, match="empty"):
        enc.forward(ids, types, np.array([0, 0, 11], np.int64))
    with pytest.raises(ValueError, match="offsets"):
        enc.forward(ids, types, np.array([0, 5, 10], np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        enc.forward(ids, types, np.array([0, 7, 5, 11], np.int64))
    with pytest.raises(TypeError, match="int32"):
        enc.forward(ids.astype(np.int64), types, off)
    long_ids, long_types, long_off = syn.random_batch(CFG, [513], seed=0)
    with pytest.raises(ValueError, match="maximum"):
        enc.forward(long_ids, long_types, long_off)


def test_invalid_model_tensors_raise():
    tensors = syn.random_tensors(CFG, seed=2)
    bad = dict(tensors)
    del bad["layers.1.ffn2.bias"]
    with pytest.raises(ValueError, match="missing tensor 'layers.1.ffn2.bias'"):
        _C.Encoder(CFG, bad)
    bad = dict(tensors, **{"layers.0.qkv.weight": tensors["layers.0.qkv.weight"][:10]})
    with pytest.raises(ValueError, match="shape"):
        _C.Encoder(CFG, bad)
    bad = dict(tensors, **{"qa.weight": tensors["qa.weight"].astype(np.float64)})
    with pytest.raises(ValueError, match="dtype"):
        _C.Encoder(CFG, bad)
    bad = dict(tensors, **{"layers.0.out.input_quant": np.array([0.0, 3.0], np.float32)})
    with pytest.raises(ValueError, match="input_quant"):
        _C.Encoder(CFG, bad)
    with pytest.raises(ValueError, match="architecture"):
        _C.Encoder(dict(CFG, heads=5), tensors)
    with pytest.raises(ValueError, match="unknown architecture key"):
        _C.Encoder(dict(CFG, hiden=3), tensors)


@pytest.mark.parametrize("attention", ["int16", "int8"])
@pytest.mark.parametrize("ratios", [None, RATIOS])
def test_integer_attention_matches_its_reference(isa, model, ratios, attention):
    """The int16 and INT8 attention paths against numpy simulations of the same quantization."""
    tensors, enc = model
    ids, types, off = syn.random_batch(CFG, [1, 6, 7, 40, 130], seed=11)
    out = enc.forward(ids, types, off, ratios, attention=attention)["logits"]
    r = ref.ReferenceEncoder(CFG, tensors, "int8", attention=attention)
    for s in range(len(off) - 1):
        want, _ = r.sequence(*split(ids, types, off, s), ratios)
        assert_close_to_int8_reference(out[off[s]:off[s + 1]], want)


def test_integer_attention_error_against_fp32_attention(model):
    """The accuracy cost of each attention path on the same inputs: int16 is within float
    noise of fp32, INT8 within a few percent."""
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [200, 50], seed=12)
    fp32 = enc.forward(ids, types, off)["logits"]
    scale = 1 + np.abs(fp32).max()
    for attention, tol in (("int16", 0.05), ("int8", 0.05)):
        got = enc.forward(ids, types, off, attention=attention)["logits"]
        assert np.abs(got - fp32).max() < tol * scale, attention
    with pytest.raises(ValueError, match="attention"):
        enc.forward(ids, types, off, attention="bf17")


CFG_D32 = dict(CFG, heads=2)  # head dim 32: what bf16 attention's tiles take


@pytest.mark.parametrize("lengths", [[1, 6, 17, 33], [64, 100], [384]])
@pytest.mark.parametrize("ratios", [None, RATIOS])
def test_bf16_attention_on_tiles_matches_its_reference(isa, lengths, ratios):
    """Tile paths: bf16 Q, K, P, V with fp32 sums, against the numpy simulation of the same
    rounding (lengths across the 16-row and 32-key tile edges)."""
    tensors = syn.random_tensors(CFG_D32, seed=21)
    enc = _C.Encoder(CFG_D32, tensors)
    ids, types, off = syn.random_batch(CFG_D32, lengths, seed=22)
    if isa not in ("amx", "amx_emulated"):
        with pytest.raises(ValueError, match="tile paths"):
            enc.forward(ids, types, off, ratios, attention="bf16")
        return
    out = enc.forward(ids, types, off, ratios, attention="bf16", return_kept=True)
    r = ref.ReferenceEncoder(CFG_D32, tensors, "int8", attention="bf16")
    for s in range(len(off) - 1):
        want, kept = r.sequence(*split(ids, types, off, s), ratios)
        assert_close_to_int8_reference(out["logits"][off[s]:off[s + 1]], want)
        for layer, (positions, offsets) in enumerate(out["kept"]):
            np.testing.assert_array_equal(positions[offsets[s]:offsets[s + 1]] - off[s], kept[layer])


def test_the_reference_uses_the_kernels_exp2_cubic():
    """The reference simulates the bf16 attention's cubic 2^f with the coefficients of the
    header tools/exp2_cubic.py writes, and the cubic is within 7.5e-5 of 2^f."""
    header = (Path(__file__).resolve().parents[1] / "csrc" / "cpu" / "exp2_cubic.h").read_text()
    values = re.search(r"kExp2Cubic\[4\] = \{([^}]*)\}", header).group(1)
    assert tuple(float(x.strip().rstrip("f")) for x in values.split(",")) == ref.EXP2_CUBIC
    f = np.linspace(0, 1, 100001)
    c0, c1, c2, c3 = ref.EXP2_CUBIC
    assert np.abs((((c3 * f + c2) * f + c1) * f + c0) / 2 ** f - 1).max() < 7.5e-5


@pytest.mark.parametrize("isa", [i for i in ("amx", "amx_emulated") if i in _C.supported_isas()])
def test_bf16_attention_rows_whose_bound_overshoots(isa):
    """Q and K scaled up 12x: the score bound sum_c |q_c| max_j |k_jc| then lies so far above
    each row's largest score that 2^(t - bound) underflows, and the rows run again shifted by
    their maximum. Without that second run the logits are NaN or far off."""
    tensors = syn.random_tensors(CFG_D32, seed=21)
    two_h = 2 * CFG_D32["hidden"]
    for layer in range(CFG_D32["layers"]):
        tensors[f"layers.{layer}.qkv.scale"][:two_h] *= 12
    enc = _C.Encoder(CFG_D32, tensors)
    ids, types, off = syn.random_batch(CFG_D32, [5, 40, 100], seed=23)
    before = _C.isa()
    _C.set_isa(isa)
    try:
        got = enc.forward(ids, types, off, attention="bf16")["logits"]
    finally:
        _C.set_isa(before)
    r = ref.ReferenceEncoder(CFG_D32, tensors, "int8", attention="bf16")
    for s in range(len(off) - 1):
        want, _ = r.sequence(*split(ids, types, off, s), None)
        assert_close_to_int8_reference(got[off[s]:off[s + 1]], want)


def test_bf16_attention_needs_a_head_dim_of_whole_tiles():
    if "amx_emulated" not in _C.supported_isas():
        pytest.skip("no tile path")
    tensors = syn.random_tensors(CFG, seed=1)  # head dim 16
    enc = _C.Encoder(CFG, tensors)
    before = _C.isa()
    _C.set_isa("amx_emulated")
    try:
        with pytest.raises(ValueError, match="multiple of 32"):
            enc.forward(*syn.random_batch(CFG, [5], seed=1), attention="bf16")
    finally:
        _C.set_isa(before)


def test_int16_attention_error_on_the_float_reference(model):
    """Without activation quantization (whose rounding turns any perturbation into whole
    quantization steps), int16 attention moves the logits by ~1e-3 of their scale, INT8 by
    several times more."""
    tensors, _ = model
    ids, types, off = syn.random_batch(CFG, [96], seed=13)
    seq = split(ids, types, off, 0)
    want, _ = ref.ReferenceEncoder(CFG, tensors, "fp32").sequence(*seq)
    err = {a: np.abs(ref.ReferenceEncoder(CFG, tensors, "fp32", attention=a).sequence(*seq)[0] - want).max()
           for a in ("int16", "int8")}
    scale = 1 + np.abs(want).max()
    assert err["int16"] < 3e-3 * scale
    assert err["int16"] < err["int8"] / 3


@pytest.mark.parametrize("n", [1, 2, 3, 31, 32, 33, 65, 384])
def test_int16_attention_lengths_and_odd_sizes(isa, model, n):
    """Key blocks, odd key counts (a zero key pads the last pair) and single tokens."""
    tensors, enc = model
    ids, types, off = syn.random_batch(CFG, [n], seed=14 + n)
    got = enc.forward(ids, types, off, attention="int16")["logits"]
    want, _ = ref.ReferenceEncoder(CFG, tensors, "int8", attention="int16").sequence(ids, types)
    assert_close_to_int8_reference(got, want)


@pytest.mark.parametrize("n", [513, 1031])
def test_int16_attention_beyond_one_probability_chunk(isa, n):
    """Rows of more than 512 keys: their int16 probabilities span several chunks of the
    P x V block layout (1031 also pads its last key pair with a zero)."""
    cfg = dict(CFG, max_position=1100)
    tensors = syn.random_tensors(cfg, seed=3)
    enc = _C.Encoder(cfg, tensors)
    ids, types, off = syn.random_batch(cfg, [n], seed=n)
    got = enc.forward(ids, types, off, attention="int16")["logits"]
    want, _ = ref.ReferenceEncoder(cfg, tensors, "int8", attention="int16").sequence(ids, types)
    assert_close_to_int8_reference(got, want)


@pytest.mark.parametrize("attention", ["fp32", "int16", "int8"])
def test_head_dims_that_are_not_whole_vectors(isa, attention):
    """Head dim 15: odd (int16 pads a zero channel pair), not a multiple of any vector width,
    so Q, K and V stay in the row-major [T, 3H] layout instead of head-major blocks."""
    cfg = dict(CFG, hidden=60, heads=4)
    tensors = syn.random_tensors(cfg, seed=3)
    enc = _C.Encoder(cfg, tensors)
    ids, types, off = syn.random_batch(cfg, [5, 33, 70], seed=15)
    out = enc.forward(ids, types, off, RATIOS, attention=attention)["logits"]
    r = ref.ReferenceEncoder(cfg, tensors, "int8", attention=attention)
    for s in range(len(off) - 1):
        want, _ = r.sequence(*split(ids, types, off, s), RATIOS)
        assert_close_to_int8_reference(out[off[s]:off[s + 1]], want)


def test_int16_attention_refuses_head_dims_beyond_its_bound():
    cfg = dict(CFG, hidden=272, heads=1, intermediate=32, layers=1)
    enc = _C.Encoder(cfg, syn.random_tensors(cfg, seed=4))
    ids, types, off = syn.random_batch(cfg, [9], seed=16)
    assert np.isfinite(enc.forward(ids, types, off, attention="fp32")["logits"]).all()
    with pytest.raises(ValueError, match="head dims up to 256"):
        enc.forward(ids, types, off, attention="int16")


def test_profile_splits_the_call_time_over_the_ops(model, set_threads):
    """profile=True times each op (how long they take is bench/'s business, not a test's);
    the logits are those of an unprofiled call."""
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [120, 77, 200], seed=21)
    set_threads(2)
    out = enc.forward(ids, types, off, RATIOS, profile=True, attention="int16")
    plain = enc.forward(ids, types, off, RATIOS, attention="int16")["logits"]
    secs = out["op_seconds"]
    assert set(secs) >= {"qkv", "attention", "significance+gather", "o_proj", "ffn1", "ffn2", "layernorm"}
    assert all(v >= 0 for v in secs.values())
    assert secs["ffn1"] > 0 and secs["attention"] > 0
    np.testing.assert_array_equal(out["logits"], plain)


@pytest.mark.parametrize("tiles, vectors", [("amx_emulated", "ref"), ("amx", "avx512vnni")])
@pytest.mark.parametrize("attention", ["fp32", "int16", "int8"])
def test_tile_paths_give_their_vector_twins_bitwise(model, tiles, vectors, attention):
    """A tile path shares everything but the GEMM's inner product with its vector twin (the
    same epilogues, quantizers, attention), and the products are the same integers: the
    logits and kept positions are bitwise equal. So the AMX path keeps the F1 of the
    avx512vnni path exactly."""
    if tiles not in _C.supported_isas() or vectors not in _C.supported_isas():
        pytest.skip(f"this CPU cannot run both {tiles} and {vectors}")
    _, enc = model
    ids, types, off = syn.random_batch(CFG, [1, 17, 40, 130, 33], seed=31)
    before = _C.isa()
    try:
        outs = []
        for isa in (tiles, vectors):
            _C.set_isa(isa)
            outs.append(enc.forward(ids, types, off, RATIOS, return_kept=True, attention=attention))
    finally:
        _C.set_isa(before)
    np.testing.assert_array_equal(outs[0]["logits"], outs[1]["logits"])
    for (pa, oa), (pb, ob) in zip(outs[0]["kept"], outs[1]["kept"]):
        np.testing.assert_array_equal(pa, pb)
