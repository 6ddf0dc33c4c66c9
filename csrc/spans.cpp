#include "spans.h"

#include <algorithm>
#include <numeric>

namespace qrt {

namespace {

// Positions of the k largest logits[i * 2 + column], best first, ties: lower position.
std::vector<int64_t> top_positions(const float* logits, int64_t n, int column, int k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  const int64_t m = std::min<int64_t>(k, n);
  std::partial_sort(idx.begin(), idx.begin() + m, idx.end(), [&](int64_t a, int64_t b) {
    const float la = logits[2 * a + column], lb = logits[2 * b + column];
    return la > lb || (la == lb && a < b);
  });
  idx.resize(static_cast<size_t>(m));
  return idx;
}

}  // namespace

std::vector<SpanCandidate> span_candidates(const float* logits, const int64_t* char_spans, int64_t n, int n_best,
                                           int max_answer_len) {
  std::vector<SpanCandidate> out;
  const std::vector<int64_t> starts = top_positions(logits, n, 0, n_best), ends = top_positions(logits, n, 1, n_best);
  for (int64_t s : starts) {
    if (char_spans[2 * s] < 0) continue;
    for (int64_t e : ends) {
      const int64_t length = e - s + 1;
      if (char_spans[2 * e] < 0 || length < 1 || length > max_answer_len) continue;
      out.push_back({static_cast<double>(logits[2 * s]) + static_cast<double>(logits[2 * e + 1]), char_spans[2 * s],
                     char_spans[2 * e + 1]});
    }
  }
  std::sort(out.begin(), out.end(), [](const SpanCandidate& a, const SpanCandidate& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.start != b.start ? a.start < b.start : a.end < b.end;
  });
  return out;
}

}  // namespace qrt
