// SQuAD answer-span post-processing of one window: the step after the encoder, in native
// code because the numpy version pays ~10 array calls on caches the encoder just evicted.
#pragma once

#include <cstdint>
#include <vector>

namespace qrt {

struct SpanCandidate {
  double score;        // start logit + end logit
  int64_t start, end;  // character offsets into the context
};

// The n_best start and end tokens (highest logits, ties: lower position), paired into spans
// inside the context (char_spans[i, 0] >= 0) with 1 <= length <= max_answer_len tokens; best
// first (ties: earlier start, then earlier end). logits and char_spans are [n, 2].
std::vector<SpanCandidate> span_candidates(const float* logits, const int64_t* char_spans, int64_t n, int n_best,
                                           int max_answer_len);

}  // namespace qrt
