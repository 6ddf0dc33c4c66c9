// The length-adaptive BERT encoder + QA head (docs/design.md, "The encoder"), INT8 GEMMs,
// packed (never padded) batches, drop-and-restore with per-sequence top-k.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "packed_weight.h"

namespace qrt {

struct KernelTable;  // dispatch.h

struct EncoderConfig {
  int64_t hidden = 384, heads = 12, intermediate = 1536, layers = 6;
  int64_t vocab_size = 30522, max_position = 512, type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;
  int64_t min_keep = 2;  // LAT's minimum layer length
};

// A borrowed tensor (the caller keeps the memory alive during construction only).
struct TensorView {
  const void* data = nullptr;
  std::string dtype;  // "float32", "int8"
  std::vector<int64_t> shape;
};
using TensorMap = std::map<std::string, TensorView>;

// One INT8 linear layer: packed weights, fp32 bias, and the static quantization of its
// input (scale, zero point) or, when absent, per-row quantization at run time.
struct QLinear {
  std::unique_ptr<PackedWeight> weight;
  std::vector<float> bias;
  bool static_input = false;
  float in_scale = 1.f;
  int32_t in_zp = 0;
};

struct EncoderLayer {
  QLinear qkv, out, ffn1, ffn2;
  std::vector<float> ln1_g, ln1_b, ln2_g, ln2_b;
};

enum Op { kEmbed, kQuantize, kQKV, kAttention, kSelect, kOProj, kFFN1, kFFN2, kLayerNorm, kRestore, kHead, kNumOps };
extern const char* const kOpNames[kNumOps];

// Tokens per chunk of a forward call (Encoder::forward; bench/chunk_tokens.py).
constexpr int64_t kChunkTokens = 1536;

struct ForwardResult {
  std::vector<float> logits;                  // [T, 2]: start, end
  std::vector<std::vector<int32_t>> kept;     // per layer: kept positions (token indices into the batch)
  std::vector<std::vector<int64_t>> kept_offsets;  // per layer: [num_seqs + 1] into kept[l]
  double op_seconds[kNumOps] = {};
};

class Encoder {
 public:
  // Validates every tensor's name, dtype and shape against the config (throws
  // std::invalid_argument naming the tensor), copies and packs them.
  Encoder(const EncoderConfig& config, const TensorMap& tensors);
  const EncoderConfig& config() const { return cfg_; }

  // ids, types: [T] int32; offsets: [num_seqs + 1], sequence s owns rows
  // [offsets[s], offsets[s+1]); keep_ratios: [layers] non-increasing in (0, 1], or keep_tokens:
  // [layers] non-increasing budgets >= 1, or both empty for the full model. Thread-safe:
  // working memory is per calling thread.
  // attention: the arithmetic of QK^T and PV (kernels.h AttentionPrecision). chunk_tokens:
  // whole sequences run in chunks of at most this many tokens (or one longer sequence); 0:
  // kChunkTokens. The results do not depend on it.
  void forward(const int32_t* ids, const int32_t* types, const int64_t* offsets, int64_t num_seqs,
               const std::vector<float>& keep_ratios, bool record_kept, bool profile,
               ForwardResult& result, AttentionPrecision attention = AttentionPrecision::F32,
               const std::vector<int64_t>& keep_tokens = {}, int64_t chunk_tokens = 0) const;

 private:
  // `kernels`: the path of the whole call (forward reads it once).
  void forward_chunk(const KernelTable& kernels, const int32_t* ids, const int32_t* types, const int64_t* offsets,
                     int64_t num_seqs, int64_t max_len, const std::vector<float>& keep_ratios, bool record_kept,
                     bool profile, ForwardResult& result, AttentionPrecision attention,
                     const std::vector<int64_t>& keep_tokens) const;

  EncoderConfig cfg_;
  std::vector<float> word_, position_, token_type_, emb_ln_g_, emb_ln_b_;
  std::vector<EncoderLayer> layers_;
  std::vector<float> qa_w_, qa_b_;
};

// Per-layer keep counts of one sequence of length n: l_i = min(l_{i-1}, max(min_keep, ceil(r_i * n))).
std::vector<int64_t> layer_lengths(int64_t n, const std::vector<float>& keep_ratios, int64_t min_keep);
// The same under token budgets (the paper's form): l_i = min(l_{i-1}, max(min_keep, b_i)), so a
// sequence shorter than a layer's budget loses nothing there.
std::vector<int64_t> budget_lengths(int64_t n, const std::vector<int64_t>& keep_tokens, int64_t min_keep);
void check_keep_ratios(const std::vector<float>& keep_ratios, int64_t layers);
void check_keep_tokens(const std::vector<int64_t>& keep_tokens, int64_t layers);

}  // namespace qrt
