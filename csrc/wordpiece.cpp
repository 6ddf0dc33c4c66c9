#include "wordpiece.h"

#include <algorithm>

namespace qrt {

namespace {

// The ASCII classes of BertNormalizer + BertPreTokenizer. \t \n \r become spaces; other
// control characters would be deleted by the normalizer, which shifts offsets: declined.
enum class CharClass { Word, Space, Punct, Unsupported };

CharClass classify(unsigned char c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return CharClass::Space;
  if (c < 32 || c >= 127) return CharClass::Unsupported;
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
    return CharClass::Punct;
  return CharClass::Word;
}

}  // namespace

WordPiece::WordPiece(const std::vector<std::string>& vocab, int32_t unk_id, int32_t cls_id, int32_t sep_id,
                     int max_input_chars_per_word)
    : unk_(unk_id), cls_(cls_id), sep_(sep_id), max_chars_(static_cast<size_t>(max_input_chars_per_word)) {
  vocab_.reserve(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) vocab_.emplace(vocab[i], static_cast<int32_t>(i));
}

// Greedy longest-match-first; a word with a piece missing from the vocabulary, or longer than
// max_chars_, becomes one [UNK] spanning the whole word (as WordPiece does).
void WordPiece::add_word(std::string_view word, int64_t begin, std::vector<int32_t>& ids,
                         std::vector<int64_t>& spans) const {
  const size_t n = word.size(), first = ids.size();
  if (n <= max_chars_) {
    std::string key;
    size_t start = 0;
    while (start < n) {
      size_t end = n;
      int32_t found = -1;
      for (; end > start; --end) {
        key.assign(start > 0 ? "##" : "");
        key.append(word.substr(start, end - start));
        auto it = vocab_.find(key);
        if (it != vocab_.end()) { found = it->second; break; }
      }
      if (found < 0) break;
      ids.push_back(found);
      spans.push_back(begin + static_cast<int64_t>(start));
      spans.push_back(begin + static_cast<int64_t>(end));
      start = end;
    }
    if (start == n) return;
  }
  ids.resize(first);
  spans.resize(2 * first);
  ids.push_back(unk_);
  spans.push_back(begin);
  spans.push_back(begin + static_cast<int64_t>(n));
}

bool WordPiece::tokenize(std::string_view text, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const {
  std::string word;  // the current word, lowercased
  int64_t begin = 0;
  auto flush = [&] {
    if (!word.empty()) add_word(word, begin, ids, spans);
    word.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (classify(c)) {
      case CharClass::Unsupported: return false;
      case CharClass::Space: flush(); break;
      case CharClass::Punct:
        flush();
        word.push_back(static_cast<char>(c));
        begin = static_cast<int64_t>(i);
        flush();
        break;
      case CharClass::Word:
        if (word.empty()) begin = static_cast<int64_t>(i);
        word.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c));
        break;
    }
  }
  flush();
  return true;
}

std::optional<std::vector<TokenWindow>> WordPiece::windows(std::string_view question, std::string_view context,
                                                           int max_seq_len, int doc_stride, int max_query_len) const {
  std::vector<int32_t> q_ids, c_ids;
  std::vector<int64_t> q_spans, c_spans;
  if (!tokenize(question, q_ids, q_spans) || !tokenize(context, c_ids, c_spans)) return std::nullopt;
  const int64_t q = static_cast<int64_t>(q_ids.size()), n = static_cast<int64_t>(c_ids.size());
  const int64_t room = max_seq_len - q - 3;  // context tokens per window
  if (q > max_query_len || room <= 0 || (n > room && doc_stride >= room)) return std::nullopt;

  // Windows start every room - doc_stride tokens until one reaches the end of the context,
  // the overflow rule of `tokenizers` (consecutive windows share doc_stride tokens).
  std::vector<TokenWindow> out;
  for (int64_t start = 0;; start += room - doc_stride) {
    const int64_t stop = std::min(start + room, n);
    TokenWindow w;
    const size_t len = static_cast<size_t>(q + (stop - start) + 3);
    w.ids.reserve(len);
    w.ids.push_back(cls_);
    w.ids.insert(w.ids.end(), q_ids.begin(), q_ids.end());
    w.ids.push_back(sep_);
    w.ids.insert(w.ids.end(), c_ids.begin() + start, c_ids.begin() + stop);
    w.ids.push_back(sep_);
    w.type_ids.assign(len, 1);
    std::fill(w.type_ids.begin(), w.type_ids.begin() + q + 2, 0);
    w.spans.assign(2 * len, -1);
    std::copy(c_spans.begin() + 2 * start, c_spans.begin() + 2 * stop, w.spans.begin() + 2 * (q + 2));
    out.push_back(std::move(w));
    if (stop == n) break;
  }
  return out;
}

}  // namespace qrt
