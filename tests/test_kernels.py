"""Every native kernel, on every ISA path this machine supports, against qualam_rt.reference."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualam_rt import _C
from qualam_rt import reference as ref

EDGE_DIMS = [1, 3, 17, 383, 384, 1152, 1536]
dims = st.one_of(st.sampled_from(EDGE_DIMS), st.integers(1, 700))
SLOW_PATHS = ("ref", "amx_emulated")  # scalar code: smaller M, every tail still covered
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def random_problem(rng, M, K, N):
    A = rng.integers(0, 256, (M, K), dtype=np.uint8)
    W = rng.integers(-127, 128, (N, K), dtype=np.int8)
    w_scale = (rng.random(N, dtype=np.float32) * 0.01 + 1e-4).astype(np.float32)
    return A, W, w_scale


@SETTINGS
@given(M=st.integers(1, 512), K=dims, N=dims, seed=st.integers(0, 2**31), per_row=st.booleans())
def test_gemm_int32_exact(isa, M, K, N, seed, per_row):
    if isa in SLOW_PATHS:
        M = min(M, 64)  # the scalar path is slow; its shapes still cover every tail
    rng = np.random.default_rng(seed)
    A, W, w_scale = random_problem(rng, M, K, N)
    pw = _C.PackedWeight(W, w_scale)
    if per_row:
        zp = rng.integers(0, 256, M, dtype=np.int32)
        scale = np.ones(M, np.float32)
    else:
        zp, scale = int(rng.integers(0, 256)), 1.0
    got = _C.gemm(A, scale, zp, pw, out_dtype="int32")
    np.testing.assert_array_equal(got, ref.gemm_s32(A, zp, W))


@pytest.mark.parametrize("K", [1, 3, 17, 64, 383, 1536])
@pytest.mark.parametrize("N", [1, 5, 63, 64, 65, 130])
def test_packing_round_trip(K, N):
    W = np.random.default_rng(K * N).integers(-127, 128, (N, K), dtype=np.int8)
    pw = _C.PackedWeight(W, np.ones(N, np.float32))
    assert (pw.K, pw.N) == (K, N)
    np.testing.assert_array_equal(pw.unpack(), W)


@SETTINGS
@given(M=st.integers(1, 200), K=dims, N=dims, seed=st.integers(0, 2**31),
       bias=st.booleans(), gelu=st.booleans(), residual=st.booleans(), per_row=st.booleans())
def test_gemm_float_epilogue(isa, M, K, N, seed, bias, gelu, residual, per_row):
    if isa in SLOW_PATHS:
        M = min(M, 32)
    rng = np.random.default_rng(seed)
    A, W, w_scale = random_problem(rng, M, K, N)
    if per_row:
        a_scale = (rng.random(M, dtype=np.float32) * 0.05 + 0.001).astype(np.float32)
        a_zp = rng.integers(0, 256, M, dtype=np.int32)
    else:
        a_scale, a_zp = 0.02, int(rng.integers(0, 256))
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    r = rng.standard_normal((M, N)).astype(np.float32) if residual else None
    got = _C.gemm(A, a_scale, a_zp, _C.PackedWeight(W, w_scale), bias=b, gelu=gelu, residual=r)
    want = ref.gemm(A, a_scale, a_zp, W, w_scale, bias=b, gelu_=gelu, residual=r)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * (1 + np.abs(want).max()))


def test_gelu_epilogue_is_accurate_over_the_whole_line(isa):
    """The GELU of every path (a table of cubics on AVX-512, a rational erf on AVX2, libm's erf
    on ref) within 2e-6 of the exact erf form, on a fine grid of [-10, 10] (every interval of
    the table, its ends and the saturated tails) and at 0. The GEMM passes the bias through:
    A is zero and its zero point 0."""
    x = np.concatenate([np.linspace(-10, 10, 40001), [0.0, 6.0, -6.0, 5.999999, -5.999999]]).astype(np.float32)
    x = np.concatenate([x, np.zeros(-len(x) % 64, np.float32)]).reshape(-1, 64)
    pw = _C.PackedWeight(np.zeros((64, 1), np.int8), np.ones(64, np.float32))
    got = np.stack([_C.gemm(np.zeros((1, 1), np.uint8), 1.0, 0, pw, bias=row, gelu=True)[0] for row in x])
    np.testing.assert_allclose(got, ref.gelu(x.astype(np.float64)), rtol=0, atol=2e-6)


@pytest.mark.parametrize("gelu", [False, True])
def test_gemm_requantized_u8_output(isa, gelu):
    rng = np.random.default_rng(7)
    M, K, N = 37, 384, 130
    A, W, w_scale = random_problem(rng, M, K, N)
    b = rng.standard_normal(N).astype(np.float32)
    kw = dict(bias=b, out_dtype="uint8", out_scale=0.05, out_zp=40)
    got = _C.gemm(A, 0.02, 128, _C.PackedWeight(W, w_scale), gelu=gelu, **kw)
    want = ref.gemm(A, 0.02, 128, W, w_scale, gelu_=gelu, **kw)
    # Only values that land on a rounding tie may differ, and then by one step.
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("gelu", [False, True])
def test_gemm_bfloat16_output_is_the_float_output_rounded(isa, gelu):
    """out_dtype="bfloat16" (the bits, as uint16; what the QKV projection gives the bf16
    attention): the float32 output rounded to nearest even, on the tile paths only."""
    rng = np.random.default_rng(13)
    M, K, N = 37, 384, 130
    A, W, w_scale = random_problem(rng, M, K, N)
    pw = _C.PackedWeight(W, w_scale)
    kw = dict(bias=rng.standard_normal(N).astype(np.float32), gelu=gelu)
    a_scale = (rng.random(M, dtype=np.float32) * 0.05 + 0.001).astype(np.float32)
    a_zp = rng.integers(0, 256, M, dtype=np.int32)
    if isa not in ("amx", "amx_emulated"):
        with pytest.raises(ValueError, match="tile paths"):
            _C.gemm(A, a_scale, a_zp, pw, out_dtype="bfloat16", **kw)
        return
    got = _C.gemm(A, a_scale, a_zp, pw, out_dtype="bfloat16", **kw)
    assert got.dtype == np.uint16
    want = ref.to_bf16(_C.gemm(A, a_scale, a_zp, pw, **kw)).view(np.uint32) >> 16
    np.testing.assert_array_equal(got, want.astype(np.uint16))


def test_gemm_of_zero_rows_is_empty(isa):
    pw = _C.PackedWeight(np.ones((5, 8), np.int8), np.ones(5, np.float32))
    assert _C.gemm(np.zeros((0, 8), np.uint8), 0.1, 0, pw).shape == (0, 5)
    assert _C.gemm(np.zeros((0, 8), np.uint8), 0.1, 0, pw, out_dtype="int32").shape == (0, 5)


@pytest.mark.parametrize("out_dtype, dtype", [("float32", np.float32), ("uint8", np.uint8), ("int32", np.int32)])
def test_gemm_into_a_given_array(isa, out_dtype, dtype):
    """out=: the same values, written into (and returned as) the caller's array."""
    rng = np.random.default_rng(4)
    A, W, w_scale = random_problem(rng, 19, 70, 33)
    pw = _C.PackedWeight(W, w_scale)
    kw = dict(bias=rng.standard_normal(33).astype(np.float32), out_dtype=out_dtype, out_scale=0.05, out_zp=40)
    if out_dtype == "int32":
        kw = dict(out_dtype="int32")
    out = np.full((19, 33), 7, dtype)
    got = _C.gemm(A, 0.02, 128, pw, out=out, **kw)
    assert got is out
    np.testing.assert_array_equal(out, _C.gemm(A, 0.02, 128, pw, **kw))


def test_gemm_into_a_given_array_allocates_no_output():
    """out= once still allocated (and dropped) an M x N array per call."""
    rng = np.random.default_rng(5)
    A, W, w_scale = random_problem(rng, 64, 64, 96)
    pw = _C.PackedWeight(W, w_scale)
    for dtype, kw in ((np.float32, {}), (np.uint8, dict(out_dtype="uint8")), (np.int32, dict(out_dtype="int32"))):
        out = np.empty((64, 96), dtype)
        before = _C.outputs_allocated()
        assert all(_C.gemm(A, 0.02, 128, pw, out=out, **kw) is out for _ in range(3))
        assert _C.outputs_allocated() == before
        _C.gemm(A, 0.02, 128, pw, **kw)
        assert _C.outputs_allocated() == before + 1


def off_alignment(shape, offset):
    """A float32 array whose data starts `offset` bytes past a 64-byte boundary."""
    n = int(np.prod(shape))
    buf = np.empty(n + 32, np.float32)
    start = ((offset - buf.ctypes.data) % 64) // 4
    out = buf[start:start + n].reshape(shape)
    assert out.ctypes.data % 64 == offset
    return out


@pytest.mark.parametrize("gelu", [False, True])
def test_gemm_large_output_streams_the_same_values(isa, gelu, set_threads):
    """An fp32 output of 4 MiB or more on aligned memory (a fresh output) is written with
    streaming stores, on every thread; an array 16 bytes off a 64-byte boundary gets ordinary
    stores. Both hold the same values, and those of the reference."""
    rng = np.random.default_rng(11)
    M, K, N = 1100, 40, 1024  # 4.5 MB of output, rows of whole vectors
    A, W, w_scale = random_problem(rng, M, K, N)
    pw = _C.PackedWeight(W, w_scale)
    b = rng.standard_normal(N).astype(np.float32)
    r = rng.standard_normal((M, N)).astype(np.float32)
    for threads in (1, 2, 3):
        set_threads(threads)
        fresh = _C.gemm(A, 0.02, 9, pw, bias=b, gelu=gelu, residual=r)
        assert fresh.ctypes.data % 64 == 0
        unaligned = off_alignment((M, N), 16)
        _C.gemm(A, 0.02, 9, pw, bias=b, gelu=gelu, residual=r, out=unaligned)
        np.testing.assert_array_equal(fresh, unaligned)
    want = ref.gemm(A, 0.02, 9, W, w_scale, bias=b, gelu_=gelu, residual=r)
    np.testing.assert_allclose(fresh, want, rtol=2e-5, atol=2e-5 * (1 + np.abs(want).max()))


def test_gemm_refuses_a_wrong_out_array():
    rng = np.random.default_rng(4)
    A, W, w_scale = random_problem(rng, 4, 8, 6)
    pw = _C.PackedWeight(W, w_scale)
    read_only = np.empty((4, 6), np.float32)
    read_only.flags.writeable = False
    for bad, error in ((np.empty((4, 6), np.int32), TypeError), (np.empty((4, 7), np.float32), ValueError),
                       (np.empty((6, 4), np.float32).T, ValueError), (read_only, ValueError)):
        with pytest.raises(error):
            _C.gemm(A, 0.1, 0, pw, out=bad)


@pytest.mark.parametrize("K", [64, 384, 1553])
@pytest.mark.parametrize("epilogue", [dict(), dict(gelu=True), dict(residual=True), dict(out_dtype="uint8")])
def test_a_rows_result_does_not_depend_on_the_kernel_that_made_it(isa, K, epilogue):
    """On the tile paths, rows in whole 16-row tiles go through the tiles, whose epilogue adds
    the per-row zero-point correction (an int16-pair dot product), and the last M mod 16 rows
    through the vector kernel, whose accumulators start from it (a 32-bit product): the same
    int32 sums, so the same bits. Rolling the rows moves the last ones into the tiles. Extreme
    columns (every weight +-127: |colsum| = 127 K) and zero points 0 and 255 included."""
    rng = np.random.default_rng(K)
    M, N = 37, 70
    A, W, w_scale = random_problem(rng, M, K, N)
    W[0], W[1], W[69] = 127, -127, 127
    a_scale = (rng.random(M, dtype=np.float32) * 0.05 + 0.001).astype(np.float32)
    a_zp = rng.integers(0, 256, M, dtype=np.int32)
    a_zp[[0, 34, 35, 36]] = [255, 0, 255, 128]
    pw = _C.PackedWeight(W, w_scale)
    kw = dict(bias=rng.standard_normal(N).astype(np.float32), gelu=epilogue.get("gelu", False))
    r = rng.standard_normal((M, N)).astype(np.float32)
    if "out_dtype" in epilogue:
        kw.update(out_dtype="uint8", out_scale=0.5, out_zp=100)

    def run(order):
        res = r[order] if "residual" in epilogue else None
        return _C.gemm(np.ascontiguousarray(A[order]), a_scale[order], a_zp[order], pw, residual=res, **kw)

    rolled = np.roll(np.arange(M), 5)  # rows 32..36 first
    np.testing.assert_array_equal(run(rolled), run(np.arange(M))[rolled])


@pytest.mark.parametrize("K", [385, 447, 449, 769, 1153, 1553])
def test_gemm_exact_across_the_tile_paths_k_chunks(isa, K):
    """The tile paths sum K past 384 in chunks (the accumulators stored and reloaded between
    them): K just past one chunk, chunks ending inside the last 64 k and the partial last
    group, 33 rows (two tiles and a vector row), two panels."""
    rng = np.random.default_rng(K)
    M, N = 33, 100
    A, W, w_scale = random_problem(rng, M, K, N)
    zp = rng.integers(0, 256, M, dtype=np.int32)
    pw = _C.PackedWeight(W, w_scale)
    np.testing.assert_array_equal(_C.gemm(A, np.ones(M, np.float32), zp, pw, out_dtype="int32"), ref.gemm_s32(A, zp, W))
    kw = dict(out_dtype="uint8", out_scale=0.05, out_zp=128)  # the tile epilogue's own correction
    got = _C.gemm(A, np.full(M, 1e-3, np.float32), zp, pw, **kw).astype(int)
    diff = np.abs(got - ref.gemm(A, np.full(M, 1e-3, np.float32), zp, W, w_scale, **kw))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # rounding ties only


def test_gemm_results_do_not_depend_on_thread_count(isa, set_threads):
    rng = np.random.default_rng(3)
    A, W, w_scale = random_problem(rng, 300, 384, 1152)
    pw = _C.PackedWeight(W, w_scale)
    outs = []
    for n in (1, 2, 3):
        set_threads(n)
        outs.append(_C.gemm(A, 0.01, 5, pw, gelu=True))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@SETTINGS
@given(rows=st.integers(1, 300), cols=dims, seed=st.integers(0, 2**31))
def test_quantize_matches_reference_exactly(isa, rows, cols, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    np.testing.assert_array_equal(_C.quantize(x, 0.037, 121), ref.quantize(x, 0.037, 121))
    q, s, z = _C.quantize_per_row(x)
    q_ref, s_ref, z_ref = ref.quantize_per_row(x)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(q, q_ref)


def test_quantize_is_exact_at_rounding_ties(isa):
    """The kernels divide through the reciprocal and one FMA correction: the same u8 as numpy's
    rint(x / scale) (ties to even) for values on and next to .5 ties, all inside the u8 range
    (where no clamp could hide a wrong quotient), at fixed scales (0.25: exact ties; 1e-39:
    denormal, whose reciprocal overflows, so the kernels divide) and at 200 random scales over
    2^-40..2^40. A quotient without the FMA correction fails this."""
    rng = np.random.default_rng(11)
    fixed = np.array([0.25, 0.037, 3.1e-9, 7.7e5, 1e-39], np.float32)
    for scale in np.concatenate([fixed, np.ldexp(1 + rng.random(200), rng.integers(-40, 40, 200)).astype(np.float32)]):
        zp = int(rng.integers(1, 255))
        k = rng.integers(-zp, 254 - zp, 500).astype(np.float32) + np.float32(0.5)
        x = (k * scale).astype(np.float32)
        x = np.stack([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
        np.testing.assert_array_equal(_C.quantize(x, float(scale), zp), ref.quantize(x, scale, zp))


def test_quantize_saturates_far_outside_the_range(isa):
    """Values whose quotient is beyond the int32 range (or infinite) clamp to 0 and 255."""
    x = np.array([[1e30, -1e30, np.inf, -np.inf, 3e9, -3e9, 300.0, 1.0]], np.float32)
    np.testing.assert_array_equal(_C.quantize(x, 0.5, 100)[0], [255, 0, 255, 0, 255, 0, 255, 102])


def test_gemm_u8_output_saturates_far_outside_the_range(isa):
    rng = np.random.default_rng(2)
    A, W, w_scale = random_problem(rng, 3, 64, 20)
    got = _C.gemm(A, 0.02, 128, _C.PackedWeight(W, w_scale), out_dtype="uint8", out_scale=1e-12, out_zp=128)
    f = ref.gemm(A, 0.02, 128, W, w_scale)
    np.testing.assert_array_equal(got, np.where(f > 0, 255, np.where(f < 0, 0, 128)))


def test_quantize_per_row_handles_constant_rows(isa):
    x = np.zeros((3, 5), np.float32)
    x[1] = 2.0
    q, s, z = _C.quantize_per_row(x)
    assert np.all(s > 0)
    deq = (q.astype(np.float32) - z[:, None]) * s[:, None]
    np.testing.assert_allclose(deq, x, atol=1e-6)


@SETTINGS
@given(rows=st.integers(1, 100), cols=st.sampled_from([1, 2, 7, 17, 384, 385]), seed=st.integers(0, 2**31),
       with_residual=st.booleans())
def test_layernorm(isa, rows, cols, seed, with_residual):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32) * 4 + 1
    r = rng.standard_normal((rows, cols)).astype(np.float32) if with_residual else None
    g = rng.standard_normal(cols).astype(np.float32)
    b = rng.standard_normal(cols).astype(np.float32)
    got = _C.layernorm(x, g, b, 1e-12, r)
    # Rows whose values nearly coincide are ill-conditioned in float32 (x - mean ~ rounding
    # error, divided by a tiny std): compare only well-conditioned rows.
    z = x if r is None else x + r
    ok = z.std(axis=1) > 1e-2 * (1 + np.abs(z).max(axis=1))
    np.testing.assert_allclose(got[ok], ref.layernorm(x, g, b, 1e-12, r)[ok], rtol=1e-4, atol=1e-4)


@SETTINGS
@given(rows=st.integers(1, 40), cols=st.sampled_from([1, 7, 17, 384, 385]), seed=st.integers(0, 2**31),
       per_row=st.booleans())
def test_layernorm_with_quantized_output(isa, rows, cols, seed, per_row):
    """The fused u8 copy is exactly the quantization of the fp32 output, which itself is
    unchanged by asking for the copy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32) * 4 + 1
    g, b = rng.standard_normal(cols).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
    plain = _C.layernorm(x, g, b, 1e-12)
    if per_row:
        out, q, s, z = _C.layernorm(x, g, b, 1e-12, quantize="per_row")
        q_ref, s_ref, z_ref = ref.quantize_per_row(plain)
        np.testing.assert_array_equal(s, s_ref)
        np.testing.assert_array_equal(z, z_ref)
    else:
        out, q = _C.layernorm(x, g, b, 1e-12, quantize=(0.021, 117))
        q_ref = ref.quantize(plain, 0.021, 117)
    np.testing.assert_array_equal(out, plain)
    np.testing.assert_array_equal(q, q_ref)


def test_layernorm_quantize_argument_is_checked():
    x, g = np.ones((2, 4), np.float32), np.ones(4, np.float32)
    for bad in ("per_tensor", (0.1,), (0.0, 3), (0.1, 300)):
        with pytest.raises((ValueError, TypeError)):
            _C.layernorm(x, g, g, 1e-12, quantize=bad)


def test_peak_probe_reports_a_positive_rate(isa):
    assert _C.int8_peak_macs_per_s(0.01) > 0


@pytest.mark.parametrize("K", [1, 3, 384, 1537])
def test_tile_probe_reports_a_positive_rate(isa, K):
    assert _C.int8_tile_macs_per_s(K, 0.01) > 0


def test_tile_probe_refuses_a_depth_out_of_range():
    for K in (0, -1, 65794):
        with pytest.raises(ValueError):
            _C.int8_tile_macs_per_s(K, 0.01)


# ---- bad input: Python exceptions, never a crash --------------------------------------

@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    A, W, s = random_problem(rng, 4, 8, 3)
    return A, _C.PackedWeight(W, s)


def test_wrong_dtypes_raise_type_error(small):
    A, pw = small
    with pytest.raises(TypeError, match="uint8"):
        _C.gemm(A.astype(np.int8), 1.0, 0, pw)
    with pytest.raises(TypeError, match="uint8"):
        _C.gemm(A.astype(np.float64), 1.0, 0, pw)
    with pytest.raises(TypeError, match="int8"):
        _C.PackedWeight(np.zeros((3, 8), np.int16), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float32"):
        _C.gemm(A, 1.0, 0, pw, bias=np.zeros(3, np.float64))
    with pytest.raises(TypeError):
        _C.gemm(A, 1.0, 0, "not a weight")
    with pytest.raises(TypeError, match="float32"):
        _C.quantize(np.zeros((2, 2), np.float64), 1.0, 0)


def test_non_contiguous_input_raises(small):
    A, pw = small
    wide = np.zeros((4, 16), np.uint8)
    with pytest.raises(ValueError, match="contiguous"):
        _C.gemm(wide[:, ::2], 1.0, 0, pw)


def test_mismatched_shapes_raise(small):
    A, pw = small
    with pytest.raises(ValueError, match="K"):
        _C.gemm(np.zeros((4, 9), np.uint8), 1.0, 0, pw)
    with pytest.raises(ValueError, match="2-D"):
        _C.gemm(np.zeros(8, np.uint8), 1.0, 0, pw)
    with pytest.raises(ValueError, match="bias"):
        _C.gemm(A, 1.0, 0, pw, bias=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="residual"):
        _C.gemm(A, 1.0, 0, pw, residual=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="per-row"):
        _C.gemm(A, np.ones(3, np.float32), np.zeros(3, np.int32), pw)
    with pytest.raises(ValueError, match="scales"):
        _C.PackedWeight(np.zeros((3, 8), np.int8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="gamma"):
        _C.layernorm(np.zeros((2, 4), np.float32), np.ones(3, np.float32), np.ones(4, np.float32))


def test_bad_values_raise(small):
    A, pw = small
    with pytest.raises(ValueError, match="scale"):
        _C.gemm(A, 0.0, 0, pw)
    with pytest.raises(ValueError, match="zero point"):
        _C.gemm(A, 1.0, 300, pw)
    with pytest.raises(ValueError, match="out_dtype"):
        _C.gemm(A, 1.0, 0, pw, out_dtype="float16")
    with pytest.raises(ValueError, match="raw accumulator"):
        _C.gemm(A, 1.0, 0, pw, gelu=True, out_dtype="int32")
    with pytest.raises(ValueError, match="-128"):
        _C.PackedWeight(np.full((2, 4), -128, np.int8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="overflow"):
        _C.PackedWeight(np.zeros((1, 65794), np.int8), np.ones(1, np.float32))
    with pytest.raises(ValueError):
        _C.set_num_threads(0)
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("sse9")


def test_the_largest_allowed_k_does_not_overflow():
    K = 65793
    A = np.full((2, K), 255, np.uint8)
    W = np.full((1, K), -127, np.int8)
    got = _C.gemm(A, 1.0, 0, _C.PackedWeight(W, np.ones(1, np.float32)), out_dtype="int32")
    assert got[0, 0] == 255 * -127 * K


@pytest.mark.parametrize("K", [32767, 32768, 40000])
def test_tile_rows_correct_the_zero_point_past_int16_column_sums(isa, K):
    """The tile epilogue adds corr * colsum as int16 pairs, which hold |colsum| <= 127 K up to
    K = 32767; beyond, a pass over the accumulators corrects them. Columns of +-127 (the
    largest sums), every row's zero point extreme, 32 rows (whole tiles) and one more."""
    rng = np.random.default_rng(K)
    M = 33
    A = rng.integers(0, 256, (M, K), dtype=np.uint8)
    W = np.zeros((3, K), np.int8)
    W[0], W[1], W[2] = 127, -127, rng.integers(-127, 128, K)
    a_zp = np.where(np.arange(M) % 2 == 0, 255, 0).astype(np.int32)
    a_scale = np.full(M, 1e-6, np.float32)
    got = _C.gemm(A, a_scale, a_zp, _C.PackedWeight(W, np.ones(3, np.float32)))
    want = ref.gemm(A, a_scale, a_zp, W, np.ones(3, np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_empty_batch_returns_empty_output(small):
    _, pw = small
    assert _C.gemm(np.zeros((0, 8), np.uint8), 1.0, 0, pw).shape == (0, 3)
