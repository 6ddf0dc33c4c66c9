#include "encoder.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "dispatch.h"
#include "huge_pages.h"
#include "ops.h"

namespace qrt {

const char* const kOpNames[kNumOps] = {"embeddings", "quantize", "qkv", "attention", "significance+gather",
                                       "o_proj", "ffn1", "ffn2", "layernorm", "restore", "qa_head"};

namespace {

const TensorView& require(const TensorMap& t, const std::string& name, const char* dtype,
                          const std::vector<int64_t>& shape) {
  auto it = t.find(name);
  if (it == t.end()) throw std::invalid_argument("missing tensor '" + name + "'");
  if (it->second.dtype != dtype)
    throw std::invalid_argument("tensor '" + name + "' has dtype " + it->second.dtype + ", expected " + dtype);
  if (it->second.shape != shape)
    throw std::invalid_argument("tensor '" + name + "' has shape " + shape_string(it->second.shape) +
                                ", expected " + shape_string(shape));
  return it->second;
}

std::vector<float> copy_f32(const TensorMap& t, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorView& v = require(t, name, "float32", shape);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const float* p = static_cast<const float*>(v.data);
  return std::vector<float>(p, p + n);
}

QLinear load_linear(const TensorMap& t, const std::string& name, int64_t out, int64_t in) {
  QLinear q;
  const TensorView& w = require(t, name + ".weight", "int8", {out, in});
  const std::vector<float> scale = copy_f32(t, name + ".scale", {out});
  for (float s : scale)
    if (!(s > 0.f) || !std::isfinite(s)) throw std::invalid_argument("tensor '" + name + ".scale' must be positive and finite");
  q.weight = std::make_unique<PackedWeight>(static_cast<const int8_t*>(w.data), out, in, scale.data());
  q.bias = copy_f32(t, name + ".bias", {out});
  if (t.count(name + ".input_quant")) {
    const std::vector<float> iq = copy_f32(t, name + ".input_quant", {2});
    if (!(iq[0] > 0.f) || !std::isfinite(iq[0]) || iq[1] < 0.f || iq[1] > 255.f || iq[1] != std::nearbyint(iq[1]))
      throw std::invalid_argument("tensor '" + name + ".input_quant' must hold (scale > 0, integer zero point in [0, 255])");
    q.static_input = true;
    q.in_scale = iq[0];
    q.in_zp = (int32_t)iq[1];
  }
  return q;
}

// Working memory of one forward call, kept per calling thread and only ever grown.
// Its large buffers live on huge pages (huge_pages.h).
struct Workspace {
  template <class T>
  using Buffer = std::vector<T, HugePageAllocator<T>>;
  Buffer<float> full, cur, nxt, qkv, ctx, ctx_k, resid_k, h1, ffn_f32, sig, att_scratch, a_scale, in_scale;
  Buffer<uint8_t> a_u8, ffn_u8, in_u8;  // in_*: the current rows quantized for the QKV GEMM
  std::vector<int32_t> a_zp, in_zp, pos_cur, pos_nxt, order, kept_src;
  std::vector<int64_t> off_cur, off_nxt, off_group;
  template <class V>
  static void fit(V& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }
};

thread_local Workspace tls_workspace;

struct Timer {
  bool on;
  double* slots;
  double t0 = 0;
  Timer(bool on_, double* slots_) : on(on_), slots(slots_) { if (on) t0 = omp_get_wtime(); }
  void lap(Op op) {
    if (!on) return;
    const double t = omp_get_wtime();
    slots[op] += t - t0;
    t0 = t;
  }
  // The wall time since the last lap, shared out over the ops in proportion to the
  // thread-seconds each took inside a parallel region (`secs`, kNumOps per thread; reset to
  // zero for the next region).
  void split(std::vector<double>& secs) {
    if (!on) return;
    double per_op[kNumOps] = {}, total = 0.0;
    for (size_t i = 0; i < secs.size(); ++i) per_op[i % kNumOps] += secs[i], total += secs[i];
    const double t = omp_get_wtime();
    for (int op = 0; op < kNumOps; ++op) slots[op] += total > 0.0 ? (t - t0) * per_op[op] / total : 0.0;
    t0 = t;
    std::fill(secs.begin(), secs.end(), 0.0);
  }
};

}  // namespace

void check_keep_ratios(const std::vector<float>& r, int64_t layers) {
  if (r.empty()) return;
  if ((int64_t)r.size() != layers)
    throw std::invalid_argument("length configuration has " + std::to_string(r.size()) + " ratios; the model has " +
                                std::to_string(layers) + " layers");
  for (size_t i = 0; i < r.size(); ++i) {
    if (!(r[i] > 0.f && r[i] <= 1.f))
      throw std::invalid_argument("keep ratio " + std::to_string(r[i]) + " of layer " + std::to_string(i) + " is outside (0, 1]");
    if (i && r[i] > r[i - 1])
      throw std::invalid_argument("keep ratios must be non-increasing (layer " + std::to_string(i) + ")");
  }
}

void check_keep_tokens(const std::vector<int64_t>& b, int64_t layers) {
  if (b.empty()) return;
  if ((int64_t)b.size() != layers)
    throw std::invalid_argument("length configuration has " + std::to_string(b.size()) + " token budgets; the model has " +
                                std::to_string(layers) + " layers");
  for (size_t i = 0; i < b.size(); ++i) {
    if (b[i] < 1) throw std::invalid_argument("token budget " + std::to_string(b[i]) + " of layer " + std::to_string(i) + " is below 1");
    if (i && b[i] > b[i - 1])
      throw std::invalid_argument("token budgets must be non-increasing (layer " + std::to_string(i) + ")");
  }
}

std::vector<int64_t> budget_lengths(int64_t n, const std::vector<int64_t>& b, int64_t min_keep) {
  std::vector<int64_t> out;
  int64_t prev = n;
  for (int64_t bi : b) {
    prev = std::min(prev, std::max(min_keep, bi));
    out.push_back(prev);
  }
  return out;
}

std::vector<int64_t> layer_lengths(int64_t n, const std::vector<float>& r, int64_t min_keep) {
  std::vector<int64_t> out;
  int64_t prev = n;
  for (float ri : r) {
    // The 1e-6 guards ratios such as 315/384 against float rounding just above an integer.
    const int64_t want = (int64_t)std::ceil((double)ri * (double)n - 1e-6);
    prev = std::min(prev, std::max(min_keep, want));
    out.push_back(prev);
  }
  return out;
}

Encoder::Encoder(const EncoderConfig& c, const TensorMap& t) : cfg_(c) {
  if (c.hidden < 1 || c.heads < 1 || c.hidden % c.heads || c.intermediate < 1 || c.layers < 1 ||
      c.vocab_size < 1 || c.max_position < 1 || c.type_vocab_size < 1 || !(c.layer_norm_eps > 0.f) || c.min_keep < 1)
    throw std::invalid_argument("invalid encoder architecture (hidden must be a multiple of heads; all sizes >= 1)");
  const int64_t H = c.hidden, I = c.intermediate;
  word_ = copy_f32(t, "embeddings.word", {c.vocab_size, H});
  position_ = copy_f32(t, "embeddings.position", {c.max_position, H});
  token_type_ = copy_f32(t, "embeddings.token_type", {c.type_vocab_size, H});
  emb_ln_g_ = copy_f32(t, "embeddings.ln.weight", {H});
  emb_ln_b_ = copy_f32(t, "embeddings.ln.bias", {H});
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    EncoderLayer L;
    L.qkv = load_linear(t, p + "qkv", 3 * H, H);
    L.out = load_linear(t, p + "out", H, H);
    L.ffn1 = load_linear(t, p + "ffn1", I, H);
    L.ffn2 = load_linear(t, p + "ffn2", H, I);
    L.ln1_g = copy_f32(t, p + "ln1.weight", {H});
    L.ln1_b = copy_f32(t, p + "ln1.bias", {H});
    L.ln2_g = copy_f32(t, p + "ln2.weight", {H});
    L.ln2_b = copy_f32(t, p + "ln2.bias", {H});
    layers_.push_back(std::move(L));
  }
  qa_w_ = copy_f32(t, "qa.weight", {2, H});
  qa_b_ = copy_f32(t, "qa.bias", {2});
}

namespace {

// How `lin`'s GEMM takes its input: u8 with the layer's static scale and zero point, or per
// row (scales and zero points into row_scale, row_zp) when it has none.
U8Output input_quantization(const QLinear& lin, uint8_t* u8, float* row_scale, int32_t* row_zp) {
  U8Output q;
  q.data = u8;
  q.per_row = !lin.static_input;
  q.scale = lin.in_scale;
  q.zp = lin.in_zp;
  q.row_scale = row_scale;
  q.row_zp = row_zp;
  return q;
}

// The activation part of `a` for `lin`'s GEMM over `rows` rows quantized as q says.
void input_args(const QLinear& lin, const U8Output& q, int64_t rows, int64_t cols, GemmArgs& a) {
  a.M = rows;
  a.A = q.data;
  a.lda = cols;
  a.W = lin.weight->view();
  a.bias = lin.bias.data();
  a.a_per_row = q.per_row;
  a.a_scale = q.per_row ? q.row_scale : &lin.in_scale;
  a.a_zp = q.per_row ? q.row_zp : &lin.in_zp;
}

// Quantizes x [rows, cols] for `lin`'s GEMM into u8 (per-row scale and zero point into
// row_scale, row_zp when the layer has no static input quantization) and fills the activation
// part of `a`.
void quantize_input(const KernelTable& K, const QLinear& lin, const float* x, int64_t rows, int64_t cols,
                    uint8_t* u8, float* row_scale, int32_t* row_zp, GemmArgs& a) {
  const U8Output q = input_quantization(lin, u8, row_scale, row_zp);
  if (q.per_row) K.quantize_u8_per_row(x, rows, cols, u8, row_scale, row_zp);
  else K.quantize_u8(x, rows, cols, q.scale, q.zp, u8);
  input_args(lin, q, rows, cols, a);
}

// out = LayerNorm(GEMM a + residual), which closes both halves of a layer (timed as `op`);
// with `next`, also out quantized as the next GEMM's input (made while each row is in L1).
void gemm_residual_layernorm(const KernelTable& K, GemmArgs& a, const float* residual, float* out,
                             const std::vector<float>& gamma, const std::vector<float>& beta, float eps, Op op,
                             Timer& timer, const U8Output* next = nullptr) {
  const int64_t N = a.W.N;
  a.residual = residual;
  a.ldr = N;
  a.out_kind = OutKind::F32;
  a.out = out;
  a.ldo = N;
  K.gemm_u8s8(a);
  timer.lap(op);
  K.layernorm(out, nullptr, gamma.data(), beta.data(), eps, a.M, N, out, next);
  timer.lap(kLayerNorm);
}

// Steps 4-5 of a layer for `rows` rows (row r0 onwards of the layer's kept rows): O-projection
// + residual, LayerNorm, FFN (GELU fused into the first GEMM, whose output goes straight to
// uint8 when the second GEMM's input quantization is static), residual + LayerNorm into
// ws.nxt, and quantized for the next layer's QKV GEMM (`next`) into ws.in_u8. Each buffer is
// used from row r0, so chunks of rows can run on different threads.
void layer_tail(const KernelTable& K, const EncoderLayer& L, const QLinear* next, const EncoderConfig& c,
                const float* ctx, const float* resid, int64_t rows, Workspace& ws, int64_t r0, Timer& timer) {
  const int64_t H = c.hidden, I = c.intermediate;
  uint8_t* u8 = ws.a_u8.data() + r0 * std::max(H, I);
  float* row_scale = ws.a_scale.data() + r0;
  int32_t* row_zp = ws.a_zp.data() + r0;
  float* h1 = ws.h1.data() + r0 * H;
  float* out = ws.nxt.data() + r0 * H;

  GemmArgs a;
  quantize_input(K, L.out, ctx, rows, H, u8, row_scale, row_zp, a);
  timer.lap(kQuantize);
  // The O-projection's LayerNorm also quantizes its output for FFN1 (into the buffers the
  // O-projection has finished reading).
  const U8Output ffn1_in = input_quantization(L.ffn1, u8, row_scale, row_zp);
  gemm_residual_layernorm(K, a, resid, h1, L.ln1_g, L.ln1_b, c.layer_norm_eps, kOProj, timer, &ffn1_in);

  input_args(L.ffn1, ffn1_in, rows, H, a);
  a.residual = nullptr;
  a.gelu = true;
  a.ldo = I;
  GemmArgs f2;
  if (L.ffn2.static_input) {
    uint8_t* ffn = ws.ffn_u8.data() + r0 * I;
    a.out_kind = OutKind::U8;
    a.out = ffn;
    a.out_scale = L.ffn2.in_scale;
    a.out_zp = L.ffn2.in_zp;
    K.gemm_u8s8(a);
    timer.lap(kFFN1);
    input_args(L.ffn2, input_quantization(L.ffn2, ffn, nullptr, nullptr), rows, I, f2);
  } else {
    float* ffn = ws.ffn_f32.data() + r0 * I;
    a.out_kind = OutKind::F32;
    a.out = ffn;
    K.gemm_u8s8(a);
    timer.lap(kFFN1);
    quantize_input(K, L.ffn2, ffn, rows, I, u8, row_scale, row_zp, f2);
    timer.lap(kQuantize);
  }
  const U8Output next_in = next ? input_quantization(*next, ws.in_u8.data() + r0 * H, ws.in_scale.data() + r0,
                                                     ws.in_zp.data() + r0) : U8Output{};
  gemm_residual_layernorm(K, f2, h1, out, L.ln2_g, L.ln2_b, c.layer_norm_eps, kFFN2, timer, next ? &next_in : nullptr);
}

}  // namespace

namespace {

// Every argument of a forward call checked before any work; returns the longest sequence.
int64_t check_forward(const KernelTable& K, const EncoderConfig& c, const int32_t* ids, const int32_t* types,
                      const int64_t* offsets, int64_t B, const std::vector<float>& ratios,
                      const std::vector<int64_t>& tokens, AttentionPrecision attention) {
  const int64_t d = c.hidden / c.heads;
  check_keep_ratios(ratios, c.layers);
  check_keep_tokens(tokens, c.layers);
  if (!ratios.empty() && !tokens.empty()) throw std::invalid_argument("give keep ratios or token budgets, not both");
  if (attention == AttentionPrecision::BF16 && !K.tiles)
    throw std::invalid_argument(std::string("bf16 attention runs on the tile paths (amx, amx_emulated), not on ") + K.name);
  if (attention == AttentionPrecision::BF16 && d % 32 != 0)
    throw std::invalid_argument("bf16 attention needs a head dim that is a multiple of 32");
  if (attention == AttentionPrecision::Int16 && d > kMaxInt16HeadDim)
    throw std::invalid_argument("the int16 attention path supports head dims up to " + std::to_string(kMaxInt16HeadDim));
  if (B < 0 || offsets[0] != 0) throw std::invalid_argument("offsets must start at 0");
  int64_t max_len = 0;
  for (int64_t s = 0; s < B; ++s) {
    const int64_t n = offsets[s + 1] - offsets[s];
    if (n < 1) throw std::invalid_argument("sequence " + std::to_string(s) + " is empty");
    if (n > c.max_position)
      throw std::invalid_argument("sequence " + std::to_string(s) + " has " + std::to_string(n) +
                                  " tokens; the model's maximum is " + std::to_string(c.max_position));
    max_len = std::max(max_len, n);
  }
  for (int64_t t = 0; t < offsets[B]; ++t) {
    if (ids[t] < 0 || ids[t] >= c.vocab_size)
      throw std::invalid_argument("token id " + std::to_string(ids[t]) + " outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (types[t] < 0 || types[t] >= c.type_vocab_size)
      throw std::invalid_argument("token type id " + std::to_string(types[t]) + " out of range");
  }
  return max_len;
}

// Rows per group of sequences whose QKV projection and attention run together (attend).
constexpr int64_t kGroupRows = 384;

// The calling thread's buffers, grown to T rows of B sequences (never shrunk).
void fit_workspace(Workspace& ws, const EncoderConfig& c, int64_t T, int64_t B, int64_t max_len, int workers) {
  const int64_t H = c.hidden, I = c.intermediate;
  for (auto* v : {&ws.full, &ws.cur, &ws.nxt, &ws.ctx, &ws.ctx_k, &ws.resid_k, &ws.h1}) Workspace::fit(*v, T * H);
  Workspace::fit(ws.qkv, std::min(T, std::max(kGroupRows, max_len)) * 3 * H);  // one group's
  Workspace::fit(ws.ffn_f32, T * I);
  Workspace::fit(ws.ffn_u8, T * I);
  Workspace::fit(ws.a_u8, T * std::max(H, I));
  Workspace::fit(ws.a_scale, T);
  Workspace::fit(ws.a_zp, T);
  Workspace::fit(ws.in_u8, T * H);
  Workspace::fit(ws.in_scale, T);
  Workspace::fit(ws.in_zp, T);
  Workspace::fit(ws.sig, T);
  Workspace::fit(ws.pos_cur, T);
  Workspace::fit(ws.pos_nxt, T);
  Workspace::fit(ws.order, T);
  Workspace::fit(ws.kept_src, T);
  Workspace::fit(ws.off_cur, B + 1);
  Workspace::fit(ws.off_nxt, B + 1);
  Workspace::fit(ws.off_group, B + 1);
  Workspace::fit(ws.att_scratch, attention_scratch_floats(max_len, c.heads, H / c.heads, T, workers));
}

// Steps 1-2 of a layer: the QKV projection of the Tc current rows (quantized by the LayerNorm
// that made them), then attention per sequence with each token's significance into ws.sig
// (only when the layer drops tokens: its sums are a pass over every probability). Both run
// on groups of whole sequences of about kGroupRows rows: a group's Q, K and V (fp32, 4.5 KB a
// row; bf16 for bf16 attention) are read by its attention while they are still in the cache
// the projection wrote them to; projecting all rows first sent them through memory (tens of
// MB at batch 32).
void attend(const KernelTable& K, const EncoderLayer& L, const EncoderConfig& c, int64_t Tc, int64_t B, int64_t max_len,
            int workers, AttentionPrecision attention, bool need_significance, Workspace& ws, Timer& timer) {
  const int64_t H = c.hidden, d = H / c.heads;
  const U8Output in = input_quantization(L.qkv, ws.in_u8.data(), ws.in_scale.data(), ws.in_zp.data());
  // Head-major output ([3 * heads][rows][head_dim]) when a head is whole vectors: each
  // attention task then reads its Q, K and V as contiguous blocks instead of 3H-strided rows.
  const bool head_major = d % kMaxVectorFloats == 0;
  int64_t* group_offsets = ws.off_group.data();
  for (int64_t s0 = 0, s1; s0 < B; s0 = s1) {
    const int64_t r0 = ws.off_cur[s0];
    for (s1 = s0 + 1; s1 < B && ws.off_cur[s1 + 1] - r0 <= kGroupRows;) ++s1;
    const int64_t rows = ws.off_cur[s1] - r0;
    GemmArgs qkv;
    input_args(L.qkv, in, rows, H, qkv);
    qkv.A += r0 * H;
    if (qkv.a_per_row) {
      qkv.a_scale += r0;
      qkv.a_zp += r0;
    }
    // bf16 attention reads Q, K and V in bf16: the projection rounds them as it stores them
    // (half the bytes written and read back, no conversion pass in the attention).
    const bool bf16 = attention == AttentionPrecision::BF16;
    qkv.out_kind = bf16 ? OutKind::BF16 : OutKind::F32;
    qkv.out = ws.qkv.data();
    if (head_major) {
      qkv.ldo = d;
      qkv.out_split = d;
      qkv.out_split_stride = rows * d;
    } else {
      qkv.ldo = 3 * H;
    }
    K.gemm_u8s8(qkv);
    timer.lap(kQKV);

    for (int64_t s = s0; s <= s1; ++s) group_offsets[s - s0] = ws.off_cur[s] - r0;
    AttentionArgs att;
    att.qkv = bf16 ? nullptr : ws.qkv.data();
    att.qkv_bf16 = bf16 ? reinterpret_cast<const uint16_t*>(ws.qkv.data()) : nullptr;
    att.ld = head_major ? d : 3 * H;
    att.head_stride = head_major ? rows * d : d;
    att.part_stride = head_major ? c.heads * rows * d : H;
    att.num_seqs = s1 - s0;
    att.offsets = group_offsets;
    att.num_heads = c.heads;
    att.head_dim = d;
    att.context = ws.ctx.data() + r0 * H;
    att.significance = need_significance ? ws.sig.data() + r0 : nullptr;
    att.max_len = max_len;
    att.num_workers = workers;
    att.scratch = ws.att_scratch.data();
    att.precision = attention;
    K.attention(att);
    timer.lap(kAttention);
  }
}

// Step 3: keep the most significant tokens of each sequence (ties: lower position first),
// in position order, into ws.off_nxt / ws.pos_nxt / ws.kept_src. Each dropped row's last
// state (this layer's input) is restored to its original position now; the kept rows are
// gathered by the row chunks. Returns the number of kept rows.
int64_t select_kept(const std::vector<std::vector<int64_t>>& target, int64_t l, int64_t B, int64_t H, int workers,
                    Workspace& ws) {
  int64_t Tk = 0;
  ws.off_nxt[0] = 0;
  for (int64_t s = 0; s < B; ++s) {
    Tk += std::min(ws.off_cur[s + 1] - ws.off_cur[s], target[s][l]);
    ws.off_nxt[s + 1] = Tk;
  }
  const bool drops = Tk < ws.off_cur[B];
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers) if (workers > 1 && B > 1 && drops)
  for (int64_t s = 0; s < B; ++s) {
    const int64_t o = ws.off_cur[s], n = ws.off_cur[s + 1] - o, kept = ws.off_nxt[s + 1] - ws.off_nxt[s];
    if (!drops) {
      std::copy(ws.pos_cur.begin() + o, ws.pos_cur.begin() + o + n, ws.pos_nxt.begin() + ws.off_nxt[s]);
      continue;
    }
    int32_t* idx = ws.order.data() + o;
    std::iota(idx, idx + n, 0);
    if (kept < n) {
      const float* sig = ws.sig.data() + o;
      // A strict weak ordering even if a significance is NaN (a NaN input would make one):
      // NaN ranks below every number, then ties go to the lower position.
      auto key = [sig](int32_t x) { return std::isnan(sig[x]) ? -INFINITY : sig[x]; };
      std::partial_sort(idx, idx + kept, idx + n, [&key](int32_t x, int32_t y) {
        const float kx = key(x), ky = key(y);
        return kx > ky || (kx == ky && x < y);
      });
      std::sort(idx, idx + kept);
    }
    for (int64_t k = 0, j = 0; j < n; ++j) {
      const int64_t src = o + j;
      if (k < kept && idx[k] == j) {
        const int64_t dst = ws.off_nxt[s] + k++;
        ws.kept_src[dst] = (int32_t)src;
        ws.pos_nxt[dst] = ws.pos_cur[src];
      } else {
        std::memcpy(ws.full.data() + (int64_t)ws.pos_cur[src] * H, ws.cur.data() + src * H, sizeof(float) * H);
      }
    }
  }
  return Tk;
}

// Steps 4-5 on the Tk kept rows: the rest of the layer works row by row, so it runs on chunks
// of rows, one chunk per thread at a time, and each chunk's intermediate results stay in that
// core's cache instead of making a round trip through memory between the GEMMs. `drops`: the
// kept rows must be gathered first (else the layer reads ctx and cur in place).
void layer_rows(const KernelTable& K, const EncoderLayer& L, const QLinear* next, const EncoderConfig& c, int64_t Tk,
                bool drops, int workers, bool profile, std::vector<double>& chunk_secs, Workspace& ws) {
  const int64_t H = c.hidden;
  const float* ctx_in = drops ? ws.ctx_k.data() : ws.ctx.data();
  const float* resid_in = drops ? ws.resid_k.data() : ws.cur.data();
  constexpr int64_t kTailRows = 96;  // rows per chunk, at most: ~1 MB of intermediates
  const int64_t chunks = even_pieces(Tk, kTailRows, workers);
  const int64_t chunk = (Tk + chunks - 1) / chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers) if (workers > 1 && chunks > 1)
  for (int64_t ci = 0; ci < chunks; ++ci) {
    const int64_t r0 = ci * chunk, rows = std::min(chunk, Tk - r0);
    if (rows <= 0) continue;
    Timer t(profile, profile ? chunk_secs.data() + omp_get_thread_num() * kNumOps : nullptr);
    for (int64_t k = r0; drops && k < r0 + rows; ++k) {  // gather this chunk's kept rows
      std::memcpy(ws.ctx_k.data() + k * H, ws.ctx.data() + (int64_t)ws.kept_src[k] * H, sizeof(float) * H);
      std::memcpy(ws.resid_k.data() + k * H, ws.cur.data() + (int64_t)ws.kept_src[k] * H, sizeof(float) * H);
    }
    t.lap(kSelect);
    layer_tail(K, L, next, c, ctx_in + r0 * H, resid_in + r0 * H, rows, ws, r0, t);
  }
}

// Embeddings: word + position (within the sequence) + token type, then LayerNorm, which also
// quantizes its output for the first QKV GEMM.
struct Embeddings {
  const float *word, *position, *token_type, *ln_g, *ln_b;
};
void embed(const KernelTable& K, const Embeddings& e, const QLinear& first_qkv, const EncoderConfig& c,
           const int32_t* ids, const int32_t* types, const int64_t* offsets, int64_t B, int workers, Workspace& ws) {
  const int64_t H = c.hidden, T = offsets[B];
#pragma omp parallel for schedule(static) num_threads(workers) if (workers > 1 && T > 64)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t start = *(std::upper_bound(offsets, offsets + B + 1, t) - 1);  // t's sequence
    float* o = ws.cur.data() + t * H;
    const float* w = e.word + (int64_t)ids[t] * H;
    const float* p = e.position + (t - start) * H;
    const float* y = e.token_type + (int64_t)types[t] * H;
    for (int64_t h = 0; h < H; ++h) o[h] = w[h] + p[h] + y[h];
  }
  const U8Output qkv_in = input_quantization(first_qkv, ws.in_u8.data(), ws.in_scale.data(), ws.in_zp.data());
  K.layernorm(ws.cur.data(), nullptr, e.ln_g, e.ln_b, c.layer_norm_eps, T, H, ws.cur.data(), &qkv_in);
  for (int64_t t = 0; t < T; ++t) ws.pos_cur[t] = (int32_t)t;
  std::copy(offsets, offsets + B + 1, ws.off_cur.begin());
}

// Step 6 and the head: the Tc rows that went through every layer go back to their original
// positions (dropped rows were restored when they were dropped); then the QA head (fp32) on
// every position.
void restore_and_head(const float* qa_w, const float* qa_b, int64_t H, int64_t Tc, int64_t T, int workers,
                      Workspace& ws, float* logits, Timer& timer) {
#pragma omp parallel for schedule(static) num_threads(workers) if (workers > 1 && Tc > 64)
  for (int64_t k = 0; k < Tc; ++k)
    std::memcpy(ws.full.data() + (int64_t)ws.pos_cur[k] * H, ws.cur.data() + k * H, sizeof(float) * H);
  timer.lap(kRestore);
#pragma omp parallel for schedule(static) num_threads(workers) if (workers > 1 && T > 64)
  for (int64_t t = 0; t < T; ++t) {
    const float* h = ws.full.data() + t * H;
    float s0 = qa_b[0], s1 = qa_b[1];
    for (int64_t j = 0; j < H; ++j) {
      s0 += h[j] * qa_w[j];
      s1 += h[j] * qa_w[H + j];
    }
    logits[2 * t] = s0;
    logits[2 * t + 1] = s1;
  }
  timer.lap(kHead);
}

}  // namespace

// Sequences are independent (attention and the top-k stay inside a sequence, every other step
// is per row), so a large batch runs as chunks of whole sequences of about `chunk_tokens`
// rows: their activations stay in the caches between the steps of a layer. On an AMX Xeon, 32
// windows of 384 tokens as one chunk took 15% longer per window than in chunks of 1,536
// tokens (bench/results/chunk_tokens.md). The results are the same bits either way.
void Encoder::forward(const int32_t* ids, const int32_t* types, const int64_t* offsets, int64_t B,
                      const std::vector<float>& ratios, bool record_kept, bool profile, ForwardResult& res,
                      AttentionPrecision attention, const std::vector<int64_t>& tokens, int64_t chunk_tokens) const {
  // One kernel path for the whole call: set_isa from another thread must not switch it
  // between ops (bf16 attention's operands, made by a tile path, read by a vector one).
  const KernelTable& K = kernels();
  const int64_t max_len = check_forward(K, cfg_, ids, types, offsets, B, ratios, tokens, attention);
  if (chunk_tokens <= 0) chunk_tokens = kChunkTokens;
  const int64_t T = offsets[B];
  res.logits.assign(T * 2, 0.f);
  res.kept.assign(record_kept ? cfg_.layers : 0, {});
  res.kept_offsets.assign(record_kept ? cfg_.layers : 0, {0});
  std::fill(res.op_seconds, res.op_seconds + kNumOps, 0.0);
  ForwardResult part;
  std::vector<int64_t> rebased;
  for (int64_t s0 = 0, s1; s0 < B; s0 = s1) {
    for (s1 = s0 + 1; s1 < B && offsets[s1 + 1] - offsets[s0] <= chunk_tokens;) ++s1;
    const int64_t t0 = offsets[s0];
    rebased.resize(s1 - s0 + 1);
    for (int64_t s = s0; s <= s1; ++s) rebased[s - s0] = offsets[s] - t0;
    forward_chunk(K, ids + t0, types + t0, rebased.data(), s1 - s0, max_len, ratios, record_kept, profile, part,
                  attention, tokens);
    std::copy(part.logits.begin(), part.logits.end(), res.logits.begin() + 2 * t0);
    for (int op = 0; op < kNumOps; ++op) res.op_seconds[op] += part.op_seconds[op];
    for (size_t l = 0; l < res.kept.size(); ++l) {  // positions into the whole batch
      const int64_t base = res.kept[l].size();
      for (int32_t p : part.kept[l]) res.kept[l].push_back((int32_t)(p + t0));
      for (size_t i = 1; i < part.kept_offsets[l].size(); ++i) res.kept_offsets[l].push_back(part.kept_offsets[l][i] + base);
    }
  }
}

// The forward pass of one chunk, step by step as docs/design.md describes it.
void Encoder::forward_chunk(const KernelTable& K, const int32_t* ids, const int32_t* types, const int64_t* offsets,
                            int64_t B, int64_t max_len, const std::vector<float>& ratios, bool record_kept,
                            bool profile, ForwardResult& res, AttentionPrecision attention,
                            const std::vector<int64_t>& tokens) const {
  const EncoderConfig& c = cfg_;
  const int64_t T = offsets[B];
  res.logits.assign(T * 2, 0.f);
  res.kept.clear();
  res.kept_offsets.clear();
  std::fill(res.op_seconds, res.op_seconds + kNumOps, 0.0);
  if (T == 0) return;

  Workspace& ws = tls_workspace;
  const int workers = thread_count();
  fit_workspace(ws, c, T, B, max_len, workers);
  Timer timer(profile, res.op_seconds);
  embed(K, {word_.data(), position_.data(), token_type_.data(), emb_ln_g_.data(), emb_ln_b_.data()}, layers_[0].qkv, c,
        ids, types, offsets, B, workers, ws);
  timer.lap(kEmbed);

  // Per-sequence target lengths of every layer.
  std::vector<std::vector<int64_t>> target(B);
  for (int64_t s = 0; s < B; ++s)
    target[s] = !ratios.empty()   ? layer_lengths(offsets[s + 1] - offsets[s], ratios, c.min_keep)
                : !tokens.empty() ? budget_lengths(offsets[s + 1] - offsets[s], tokens, c.min_keep)
                                  : std::vector<int64_t>(c.layers, offsets[s + 1] - offsets[s]);

  std::vector<double> chunk_secs(profile ? workers * kNumOps : 0);  // per thread, when profiling
  int64_t Tc = T;
  for (int64_t l = 0; l < c.layers; ++l) {
    bool drops = false;
    for (int64_t s = 0; s < B && !drops; ++s) drops = target[s][l] < ws.off_cur[s + 1] - ws.off_cur[s];
    attend(K, layers_[l], c, Tc, B, max_len, workers, attention, drops, ws, timer);
    const int64_t Tk = select_kept(target, l, B, c.hidden, workers, ws);
    if (record_kept) {
      res.kept.emplace_back(ws.pos_nxt.begin(), ws.pos_nxt.begin() + Tk);
      res.kept_offsets.emplace_back(ws.off_nxt.begin(), ws.off_nxt.begin() + B + 1);
    }
    timer.lap(kSelect);
    layer_rows(K, layers_[l], l + 1 < c.layers ? &layers_[l + 1].qkv : nullptr, c, Tk, Tk < Tc, workers, profile,
               chunk_secs, ws);
    timer.split(chunk_secs);
    std::swap(ws.cur, ws.nxt);
    std::swap(ws.pos_cur, ws.pos_nxt);
    std::swap(ws.off_cur, ws.off_nxt);
    Tc = Tk;
  }
  restore_and_head(qa_w_.data(), qa_b_.data(), c.hidden, Tc, T, workers, ws, res.logits.data(), timer);
}

}  // namespace qrt
