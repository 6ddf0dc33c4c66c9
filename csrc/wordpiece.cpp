#include "wordpiece.h"

#include <algorithm>
#include <stdexcept>

namespace qrt {

namespace {

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The code point starting at text[i], advancing i; UINT32_MAX on malformed UTF-8.
char32_t next_code_point(std::string_view text, size_t& i) {
  const unsigned char c = static_cast<unsigned char>(text[i++]);
  if (c < 0x80) return c;
  const int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
  if (extra < 0 || i + extra > text.size()) return UINT32_MAX;
  char32_t cp = c & (0x3F >> extra);
  for (int k = 0; k < extra; ++k) {
    const unsigned char b = static_cast<unsigned char>(text[i++]);
    if ((b & 0xC0) != 0x80) return UINT32_MAX;
    cp = (cp << 6) | (b & 0x3F);
  }
  return cp;
}

}  // namespace

void WordPiece::Word::push(char32_t cp, int64_t orig) {
  byte_of.push_back(static_cast<uint32_t>(bytes.size()));
  origin.push_back(orig);
  append_utf8(bytes, cp);
}

WordPiece::WordPiece(const std::vector<std::string>& vocab, int32_t unk_id, int32_t cls_id, int32_t sep_id,
                     int max_input_chars_per_word, const std::vector<uint32_t>& code_points,
                     const std::vector<std::u32string>& normalized, const std::vector<std::string>& classes)
    : unk_(unk_id), cls_(cls_id), sep_(sep_id), max_chars_(static_cast<size_t>(max_input_chars_per_word)) {
  vocab_.reserve(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) vocab_.emplace(vocab[i], static_cast<int32_t>(i));
  if (normalized.size() != code_points.size() || classes.size() != code_points.size())
    throw std::invalid_argument("code_points, normalized and classes must have the same length");
  const uint32_t top = code_points.empty() ? 0 : *std::max_element(code_points.begin(), code_points.end());
  table_.resize(static_cast<size_t>(top) + 1);
  for (size_t j = 0; j < code_points.size(); ++j) {
    if (classes[j].size() != normalized[j].size())
      throw std::invalid_argument("classes must give one class per normalized character");
    Entry& e = table_[code_points[j]];
    e.first = static_cast<int32_t>(chars_.size());
    e.count = static_cast<int32_t>(normalized[j].size());
    for (size_t k = 0; k < normalized[j].size(); ++k) {
      const char c = classes[j][k];
      if (c != 'w' && c != 's' && c != 'i') throw std::invalid_argument("character classes are 'w', 's' or 'i'");
      chars_.push_back({normalized[j][k], c == 'w' ? CharClass::Word : c == 's' ? CharClass::Space : CharClass::Isolated});
    }
  }
}

// Greedy longest-match-first over characters; a word with a piece missing from the vocabulary,
// or longer than max_chars_, becomes one [UNK] spanning the whole word (as WordPiece does).
void WordPiece::add_word(const Word& word, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const {
  const size_t n = word.origin.size(), first = ids.size();
  auto byte_at = [&](size_t ch) { return ch == n ? word.bytes.size() : word.byte_of[ch]; };
  if (n <= max_chars_) {
    std::string key;
    size_t start = 0;
    while (start < n) {
      size_t end = n;
      int32_t found = -1;
      for (; end > start; --end) {
        key.assign(start > 0 ? "##" : "");
        key.append(word.bytes, byte_at(start), byte_at(end) - byte_at(start));
        auto it = vocab_.find(key);
        if (it != vocab_.end()) { found = it->second; break; }
      }
      if (found < 0) break;
      ids.push_back(found);
      spans.push_back(word.origin[start]);
      spans.push_back(word.origin[end - 1] + 1);
      start = end;
    }
    if (start == n) return;
  }
  ids.resize(first);
  spans.resize(2 * first);
  ids.push_back(unk_);
  spans.push_back(word.origin.front());
  spans.push_back(word.origin.back() + 1);
}

bool WordPiece::tokenize(std::string_view text, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const {
  Word word;
  auto flush = [&] {
    if (!word.origin.empty()) add_word(word, ids, spans);
    word.clear();
  };
  int64_t index = 0;  // character (code point) index into the original text
  for (size_t i = 0; i < text.size(); ++index) {
    const char32_t cp = next_code_point(text, i);
    if (cp >= table_.size() || table_[cp].first < 0) return false;
    const Entry& e = table_[cp];
    for (int32_t k = 0; k < e.count; ++k) {
      const NormalizedChar& c = chars_[static_cast<size_t>(e.first + k)];
      if (c.cls == CharClass::Word) {
        word.push(c.cp, index);
        continue;
      }
      flush();
      if (c.cls == CharClass::Isolated) {
        word.push(c.cp, index);
        flush();
      }
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
