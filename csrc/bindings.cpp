// Python bindings: convert arguments, release the GIL, call. No logic lives here.
#include <atomic>
#include <cstdlib>
#include <optional>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "dispatch.h"
#include "encoder.h"
#include "huge_pages.h"
#include "ops.h"
#include "spans.h"
#include "wordpiece.h"

namespace py = pybind11;
using namespace qrt;

namespace {

// The array's data as T*, or a TypeError/ValueError naming the argument.
template <class T>
T* data_of(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must have dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                         ", got " + py::str(a.dtype()).cast<std::string>());
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

// A new C-contiguous array on 64-byte aligned memory (numpy's own is 16-byte aligned), so the
// kernels' whole-vector and streaming stores apply to the outputs they allocate. Not on huge
// pages: a fresh huge page per call costs more (zeroing, compaction) than it saves.
std::atomic<int64_t> g_outputs_allocated{0};  // arrays empty() has made: _C.outputs_allocated()

template <class T>
py::array_t<T> empty(const Shape& s) {
  g_outputs_allocated.fetch_add(1, std::memory_order_relaxed);
  size_t bytes = sizeof(T);
  for (int64_t d : s) bytes *= (size_t)d;
  void* p = alloc_aligned(bytes);
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array_t<T>(std::vector<py::ssize_t>(s.begin(), s.end()), static_cast<T*>(p), owner);
}

py::array gemm_py(const py::array& A, py::object a_scale, py::object a_zp, const PackedWeight& W,
               std::optional<py::array> bias, bool gelu, std::optional<py::array> residual,
               const std::string& out_dtype, float out_scale, int32_t out_zp, std::optional<py::array> out_arg) {
  GemmCall c;
  c.A = data_of<uint8_t>(A, "A");
  c.a_shape = shape_of(A);
  c.W = &W;
  float scale_scalar;
  int32_t zp_scalar;
  py::array scale_arr, zp_arr;
  if (py::isinstance<py::array>(a_scale) || py::isinstance<py::array>(a_zp)) {
    scale_arr = py::array::ensure(a_scale);
    zp_arr = py::array::ensure(a_zp);
    c.a_scale = data_of<float>(scale_arr, "a_scale");
    c.a_zp = data_of<int32_t>(zp_arr, "a_zp");
    c.q_shape = shape_of(scale_arr);
    if (shape_of(zp_arr) != c.q_shape) throw py::value_error("a_scale and a_zp must have the same shape");
    if (c.q_shape.size() != 1) throw py::value_error("per-row a_scale/a_zp must be 1-D");
  } else {
    scale_scalar = a_scale.cast<float>();
    zp_scalar = a_zp.cast<int32_t>();
    c.a_scale = &scale_scalar;
    c.a_zp = &zp_scalar;
  }
  if (bias) { c.bias = data_of<float>(*bias, "bias"); c.bias_shape = shape_of(*bias); }
  c.gelu = gelu;
  if (residual) { c.residual = data_of<float>(*residual, "residual"); c.residual_shape = shape_of(*residual); }
  const Shape out_shape = {c.a_shape.size() == 2 ? c.a_shape[0] : 0, W.N()};
  py::dtype dtype;
  if (out_dtype == "float32") { dtype = py::dtype::of<float>(); c.out_kind = OutKind::F32; }
  else if (out_dtype == "uint8") { dtype = py::dtype::of<uint8_t>(); c.out_kind = OutKind::U8; }
  else if (out_dtype == "int32") { dtype = py::dtype::of<int32_t>(); c.out_kind = OutKind::S32; }
  else if (out_dtype == "bfloat16") { dtype = py::dtype::of<uint16_t>(); c.out_kind = OutKind::BF16; }  // its bits
  else throw py::value_error("out_dtype must be 'float32', 'uint8', 'int32' or 'bfloat16'");
  py::array out;
  if (out_arg) {  // write into the caller's array (same dtype, shape [M, N], C-contiguous): no allocation
    if (!out_arg->dtype().is(dtype))
      throw py::type_error("out must have dtype " + py::str(dtype).cast<std::string>() + " (out_dtype), got " +
                           py::str(out_arg->dtype()).cast<std::string>());
    if (shape_of(*out_arg) != out_shape)
      throw py::value_error("out must have shape (M, N) = (" + std::to_string(out_shape[0]) + ", " +
                            std::to_string(out_shape[1]) + ")");
    if (!(out_arg->flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
    if (!out_arg->writeable()) throw py::value_error("out must be writeable");
    out = *out_arg;
  } else if (c.out_kind == OutKind::F32) {
    out = empty<float>(out_shape);
  } else if (c.out_kind == OutKind::U8) {
    out = empty<uint8_t>(out_shape);
  } else if (c.out_kind == OutKind::BF16) {
    out = empty<uint16_t>(out_shape);
  } else {
    out = empty<int32_t>(out_shape);
  }
  c.out = out.mutable_data();
  c.out_shape = out_shape;
  c.out_scale = out_scale;
  c.out_zp = out_zp;
  {
    py::gil_scoped_release nogil;  // re-acquired before `out` is copied into the return value
    qrt::gemm(c);
  }
  return out;
}

EncoderConfig config_from(const py::dict& d) {
  EncoderConfig c;
  for (auto item : d) {
    const std::string k = py::str(item.first);
    if (k == "hidden") c.hidden = item.second.cast<int64_t>();
    else if (k == "heads") c.heads = item.second.cast<int64_t>();
    else if (k == "intermediate") c.intermediate = item.second.cast<int64_t>();
    else if (k == "layers") c.layers = item.second.cast<int64_t>();
    else if (k == "vocab_size") c.vocab_size = item.second.cast<int64_t>();
    else if (k == "max_position") c.max_position = item.second.cast<int64_t>();
    else if (k == "type_vocab_size") c.type_vocab_size = item.second.cast<int64_t>();
    else if (k == "layer_norm_eps") c.layer_norm_eps = item.second.cast<float>();
    else if (k == "min_keep") c.min_keep = item.second.cast<int64_t>();
    else throw py::value_error("unknown architecture key '" + k + "'");
  }
  return c;
}

Encoder* make_encoder(const py::dict& config, const py::dict& tensors) {
  TensorMap map;
  std::vector<py::array> keep_alive;
  for (auto item : tensors) {
    const std::string name = py::str(item.first);
    py::array a = py::array::ensure(item.second);
    if (!a) throw py::type_error("tensor '" + name + "' is not an array");
    if (!(a.flags() & py::array::c_style)) a = py::array::ensure(a, py::array::c_style);
    TensorView v;
    v.data = a.data();
    v.dtype = py::str(a.dtype());
    v.shape = shape_of(a);
    map[name] = v;
    keep_alive.push_back(a);
  }
  const EncoderConfig c = config_from(config);
  py::gil_scoped_release nogil;
  return new Encoder(c, map);
}

py::object encoder_forward(const Encoder& e, const py::array& ids, const py::array& types, const py::array& offsets,
                           std::optional<std::vector<float>> ratios, bool return_kept, bool profile,
                           const std::string& attention, int threads, std::optional<std::vector<int64_t>> tokens,
                           int64_t chunk_tokens) {
  if (chunk_tokens < 0) throw py::value_error("chunk_tokens must be >= 1, or 0 for the default");
  if (threads < 0 || threads > max_threads())
    throw py::value_error("threads must be in [1, " + std::to_string(max_threads()) + "], or 0 for the process-wide count");
  AttentionPrecision precision;
  if (attention == "fp32") precision = AttentionPrecision::F32;
  else if (attention == "int16") precision = AttentionPrecision::Int16;
  else if (attention == "int8") precision = AttentionPrecision::Int8;
  else if (attention == "bf16") precision = AttentionPrecision::BF16;
  else throw py::value_error("attention must be 'fp32', 'int16', 'int8' or 'bf16'");
  const int32_t* ip = data_of<int32_t>(ids, "input_ids");
  const int32_t* tp = data_of<int32_t>(types, "token_type_ids");
  const int64_t* op = data_of<int64_t>(offsets, "offsets");
  if (ids.ndim() != 1 || types.ndim() != 1 || offsets.ndim() != 1 || offsets.size() < 1)
    throw py::value_error("input_ids, token_type_ids and offsets must be 1-D; offsets holds num_seqs + 1 entries");
  const int64_t B = offsets.size() - 1;
  if (ids.size() != types.size()) throw py::value_error("input_ids and token_type_ids differ in length");
  for (int64_t s = 0; s < B; ++s)
    if (op[s + 1] < op[s]) throw py::value_error("offsets must be non-decreasing");
  if (op[0] != 0 || op[B] != ids.size()) throw py::value_error("offsets must run from 0 to len(input_ids)");
  ForwardResult r;
  {
    py::gil_scoped_release nogil;
    std::optional<ThreadCountOverride> own_threads;
    if (threads > 0) own_threads.emplace(threads);
    e.forward(ip, tp, op, B, ratios.value_or(std::vector<float>{}), return_kept, profile, r, precision,
              tokens.value_or(std::vector<int64_t>{}), chunk_tokens);
  }
  auto logits = empty<float>({(int64_t)r.logits.size() / 2, 2});
  std::copy(r.logits.begin(), r.logits.end(), logits.mutable_data());
  py::dict out;
  out["logits"] = logits;
  if (return_kept) {
    py::list kept;
    for (size_t l = 0; l < r.kept.size(); ++l)
      kept.append(py::make_tuple(py::array_t<int32_t>(r.kept[l].size(), r.kept[l].data()),
                                 py::array_t<int64_t>(r.kept_offsets[l].size(), r.kept_offsets[l].data())));
    out["kept"] = kept;
  }
  if (profile) {
    py::dict t;
    for (int i = 0; i < kNumOps; ++i) t[kOpNames[i]] = r.op_seconds[i];
    out["op_seconds"] = t;
  }
  return std::move(out);
}

// (input_ids, token_type_ids, char_spans [n, 2]) per window, or None where the fast path declines.
py::object wordpiece_windows(const WordPiece& wp, std::string_view question, std::string_view context,
                             int max_seq_len, int doc_stride, int max_query_len) {
  std::optional<std::vector<TokenWindow>> windows;
  {
    py::gil_scoped_release nogil;
    windows = wp.windows(question, context, max_seq_len, doc_stride, max_query_len);
  }
  if (!windows) return py::none();
  py::list out;
  for (const TokenWindow& w : *windows) {
    const py::ssize_t n = static_cast<py::ssize_t>(w.ids.size());
    out.append(py::make_tuple(py::array_t<int32_t>(n, w.ids.data()), py::array_t<int32_t>(n, w.type_ids.data()),
                              py::array_t<int64_t>({n, py::ssize_t{2}}, w.spans.data())));
  }
  return std::move(out);
}

py::tuple span_candidates_py(const py::array& logits, const py::array& char_spans, int n_best, int max_answer_len) {
  const float* lp = data_of<float>(logits, "logits");
  const int64_t* sp = data_of<int64_t>(char_spans, "char_spans");
  const Shape shape = shape_of(logits);
  if (shape.size() != 2 || shape[1] != 2 || shape_of(char_spans) != shape)
    throw py::value_error("logits and char_spans must both have shape [n, 2]");
  if (n_best < 1 || max_answer_len < 1) throw py::value_error("n_best and max_answer_len must be positive");
  std::vector<SpanCandidate> c;
  {
    py::gil_scoped_release nogil;
    c = span_candidates(lp, sp, shape[0], n_best, max_answer_len);
  }
  const py::ssize_t m = static_cast<py::ssize_t>(c.size());
  py::array_t<int64_t> starts(m), ends(m);
  py::array_t<double> scores(m);
  for (py::ssize_t i = 0; i < m; ++i) {
    starts.mutable_data()[i] = c[i].start;
    ends.mutable_data()[i] = c[i].end;
    scores.mutable_data()[i] = c[i].score;
  }
  return py::make_tuple(starts, ends, scores);
}

py::array quantize_py(const py::array& x, float scale, int32_t zp) {
  const float* xp = data_of<float>(x, "x");
  auto out = empty<uint8_t>(shape_of(x));
  uint8_t* op = out.mutable_data();
  const Shape s = shape_of(x);
  py::gil_scoped_release nogil;
  quantize(xp, s, scale, zp, op);
  return out;
}

py::tuple quantize_per_row_py(const py::array& x) {
  const float* xp = data_of<float>(x, "x");
  const Shape s = shape_of(x);
  auto out = empty<uint8_t>(s);
  auto scales = empty<float>({s.empty() ? 0 : s[0]});
  auto zps = empty<int32_t>({s.empty() ? 0 : s[0]});
  uint8_t* op = out.mutable_data();
  float* sp = scales.mutable_data();
  int32_t* zp = zps.mutable_data();
  {
    py::gil_scoped_release nogil;
    quantize_per_row(xp, s, op, sp, zp);
  }
  return py::make_tuple(out, scales, zps);
}

py::object layernorm_py(const py::array& x, const py::array& gamma, const py::array& beta, float eps,
                        std::optional<py::array> residual, py::object quantize) {
  const float* xp = data_of<float>(x, "x");
  const float* rp = residual ? data_of<float>(*residual, "residual") : nullptr;
  const Shape rs = residual ? shape_of(*residual) : Shape{};
  const float* gp = data_of<float>(gamma, "gamma");
  const float* bp = data_of<float>(beta, "beta");
  const Shape xs = shape_of(x), gs = shape_of(gamma), bs = shape_of(beta);
  auto out = empty<float>(xs);
  float* op = out.mutable_data();
  if (quantize.is_none()) {
    py::gil_scoped_release nogil;
    layernorm(xp, xs, rp, rs, gp, gs, bp, bs, eps, op);
    return std::move(out);
  }
  U8Output u8;
  py::array_t<uint8_t> q = empty<uint8_t>(xs);
  py::array_t<float> scales = empty<float>({xs.empty() ? 0 : xs[0]});
  py::array_t<int32_t> zps = empty<int32_t>({xs.empty() ? 0 : xs[0]});
  u8.data = q.mutable_data();
  if (py::isinstance<py::str>(quantize) && quantize.cast<std::string>() == "per_row") {
    u8.per_row = true;
    u8.row_scale = scales.mutable_data();
    u8.row_zp = zps.mutable_data();
  } else if (py::isinstance<py::tuple>(quantize) && py::len(quantize) == 2) {
    u8.scale = quantize.cast<py::tuple>()[0].cast<float>();
    u8.zp = quantize.cast<py::tuple>()[1].cast<int32_t>();
  } else {
    throw py::value_error("quantize must be None, 'per_row' or a (scale, zero_point) tuple");
  }
  {
    py::gil_scoped_release nogil;
    layernorm(xp, xs, rp, rs, gp, gs, bp, bs, eps, op, &u8);
  }
  if (u8.per_row) return py::make_tuple(out, q, scales, zps);
  return py::make_tuple(out, q);
}

}  // namespace

// Kernel paths, threads and the measured peaks.
static void bind_dispatch(py::module_& m) {
  m.def("isa", [] { return std::string(kernels().name); }, "The active kernel path.");
  m.def("supported_isas", &supported_isas, "Kernel paths this CPU can run, best last.");
  m.def("set_isa", &set_isa, py::arg("name"), "Force a kernel path (ref, amx_emulated, avx2, avx512vnni, amx).");
  m.def("amx_status", &amx_status, "Whether the amx path can run here, and if not, why.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Kernel threads of every call (an Engine's threads= overrides it for that engine).");
  m.def("single_threaded_after_fork", &single_threaded_after_fork,
        "Whether this process was forked after kernels ran on several threads, and so runs them on one.");
  m.def("outputs_allocated", [] { return g_outputs_allocated.load(); },
        "How many output arrays the bindings have allocated so far (a call with out= allocates none).");
  m.def("num_threads", &num_threads, "The process-wide kernel thread count (1 in a child forked after threads ran).");
  m.def("max_threads", &max_threads, "The most kernel threads a count may name: max(256, 4 x the CPUs OpenMP sees).");
  m.def("int8_peak_macs_per_s", [](double seconds) {
    py::gil_scoped_release nogil;
    return kernels().int8_peak_macs_per_s(seconds);
  }, py::arg("seconds") = 0.5, "Measured peak int8 MAC/s of the active path (register-only loop).");
  m.def("int8_tile_macs_per_s", [](int64_t K, double seconds) {
    if (K < 1 || K > kMaxGemmK) throw py::value_error("K must be in [1, " + std::to_string(kMaxGemmK) + "]");
    py::gil_scoped_release nogil;
    return kernels().int8_tile_macs_per_s(K, seconds);
  }, py::arg("K"), py::arg("seconds") = 0.5,
        "Measured int8 MAC/s of the active path's GEMM tile kernel on cache-resident data of depth K (the GEMM's ceiling).");
}

// The kernels one at a time: packed weights, the GEMM, quantizers, LayerNorm.
static void bind_kernels(py::module_& m) {
  py::class_<PackedWeight>(m, "PackedWeight", "Int8 [N, K] weights packed for the GEMM kernels.")
      .def(py::init([](const py::array& w, const py::array& scales) {
             const Shape ws = shape_of(w);
             if (ws.size() != 2) throw py::value_error("weight must be 2-D [N, K]");
             if (shape_of(scales) != Shape{ws[0]}) throw py::value_error("scales must have shape (N,)");
             return new PackedWeight(data_of<int8_t>(w, "weight"), ws[0], ws[1], data_of<float>(scales, "scales"));
           }),
           py::arg("weight"), py::arg("scales"))
      .def_property_readonly("K", &PackedWeight::K)
      .def_property_readonly("N", &PackedWeight::N)
      .def("unpack", [](const PackedWeight& w) {
        auto out = empty<int8_t>({w.N(), w.K()});
        const auto v = w.unpack();
        std::copy(v.begin(), v.end(), out.mutable_data());
        return out;
      });

  m.def("gemm", &gemm_py, py::arg("A"), py::arg("a_scale"), py::arg("a_zp"), py::arg("weight"),
        py::arg("bias") = py::none(), py::arg("gelu") = false, py::arg("residual") = py::none(),
        py::arg("out_dtype") = "float32", py::arg("out_scale") = 1.f, py::arg("out_zp") = 0, py::arg("out") = py::none(),
        "u8 x packed s8 GEMM with fused epilogue (see csrc/types.h GemmArgs); with out, into that array (returned).");
  m.def("quantize", &quantize_py, py::arg("x"), py::arg("scale"), py::arg("zp"));
  m.def("quantize_per_row", &quantize_per_row_py, py::arg("x"));
  m.def("layernorm", &layernorm_py, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps") = 1e-12f,
        py::arg("residual") = py::none(), py::arg("quantize") = py::none(),
        "LayerNorm(x + residual) * gamma + beta over the last axis; with quantize ('per_row' or "
        "(scale, zero_point)) also its u8 quantization: (out, u8) or (out, u8, scales, zero_points).");
}

// The model: encoder, tokenizer, span decoding, length configurations.
static void bind_model(py::module_& m) {
  py::class_<Encoder>(m, "Encoder", "The INT8 length-adaptive encoder + QA head (csrc/encoder.h).")
      .def(py::init(&make_encoder), py::arg("config"), py::arg("tensors"))
      .def("forward", &encoder_forward, py::arg("input_ids"), py::arg("token_type_ids"), py::arg("offsets"),
           py::arg("keep_ratios") = py::none(), py::arg("return_kept") = false, py::arg("profile") = false,
           py::arg("attention") = "fp32", py::arg("threads") = 0, py::arg("keep_tokens") = py::none(),
           py::arg("chunk_tokens") = 0,
           "Packed batch forward (whole sequences in chunks of at most chunk_tokens tokens; 0: the default); returns {'logits': [T, 2], 'kept'?: [(positions, offsets)] per layer, 'op_seconds'?}.");
  py::class_<WordPiece>(m, "WordPiece", "BERT WordPiece windows for text in a character table (csrc/wordpiece.h).")
      .def(py::init<const std::vector<std::string>&, int32_t, int32_t, int32_t, int, const std::vector<uint32_t>&,
                    const std::vector<std::u32string>&, const std::vector<std::string>&>(),
           py::arg("vocab"), py::arg("unk_id"), py::arg("cls_id"), py::arg("sep_id"), py::arg("max_input_chars_per_word"),
           py::arg("code_points"), py::arg("normalized"), py::arg("classes"))
      .def("windows", &wordpiece_windows, py::arg("question"), py::arg("context"), py::arg("max_seq_len"),
           py::arg("doc_stride"), py::arg("max_query_len"),
           "[(input_ids, token_type_ids, char_spans)] per window, or None if the text needs the general tokenizer.");
  m.def("span_candidates", &span_candidates_py, py::arg("logits"), py::arg("char_spans"), py::arg("n_best"),
        py::arg("max_answer_len"),
        "Answer spans of one window as (char starts, char ends, scores), best first (csrc/spans.h).");
  m.def("layer_lengths", &layer_lengths, py::arg("n"), py::arg("keep_ratios"), py::arg("min_keep") = 2);
  m.def("budget_lengths", &budget_lengths, py::arg("n"), py::arg("keep_tokens"), py::arg("min_keep") = 2);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "qualam_rt native kernels";
  bind_dispatch(m);
  bind_kernels(m);
  bind_model(m);
}
