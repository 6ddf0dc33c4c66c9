// BERT WordPiece tokenization into QA windows, the fast path of the runtime's tokenization.
// It reproduces the Hugging Face `tokenizers` pipeline the models ship with (BertNormalizer,
// BertPreTokenizer, WordPiece "##", [CLS] q [SEP] c [SEP], only-second truncation with
// stride) for the characters of a table the caller builds (qualam_rt/squad.py: what the
// normalizer makes of each code point and how the pre-tokenizer classes the result). Text with
// a character outside the table is declined and the caller uses `tokenizers` itself.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qrt {

struct TokenWindow {
  std::vector<int32_t> ids, type_ids;
  std::vector<int64_t> spans;  // [n, 2] context character spans, -1 outside the context
};

// How the pre-tokenizer treats a normalized character.
enum class CharClass : uint8_t { Word, Space, Isolated };  // Isolated: punctuation and CJK, one token each

class WordPiece {
 public:
  // vocab[i] is the token with id i. Code point code_points[j] normalizes to normalized[j] (may
  // be empty: deleted), whose characters have the classes classes[j] ('w', 's' or 'i' each).
  WordPiece(const std::vector<std::string>& vocab, int32_t unk_id, int32_t cls_id, int32_t sep_id,
            int max_input_chars_per_word, const std::vector<uint32_t>& code_points,
            const std::vector<std::u32string>& normalized, const std::vector<std::string>& classes);

  // Token ids and [begin, end) character spans of UTF-8 `text`; false if a character is not in
  // the table (or the text is not valid UTF-8).
  bool tokenize(std::string_view text, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const;

  // The windows of one (question, context) pair; nullopt when the text is not supported or the
  // question is over max_query_len tokens (the caller's general path handles both).
  std::optional<std::vector<TokenWindow>> windows(std::string_view question, std::string_view context,
                                                  int max_seq_len, int doc_stride, int max_query_len) const;

 private:
  struct NormalizedChar {
    char32_t cp;
    CharClass cls;
  };
  struct Entry {
    int32_t first = -1;  // into chars_; -1: not in the table
    int32_t count = 0;
  };
  // A word being built: UTF-8 bytes, the byte offset and original character index of each char.
  struct Word {
    std::string bytes;
    std::vector<uint32_t> byte_of;
    std::vector<int64_t> origin;
    void clear() { bytes.clear(); byte_of.clear(); origin.clear(); }
    void push(char32_t cp, int64_t orig);
  };

  void add_word(const Word& word, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const;

  std::unordered_map<std::string, int32_t> vocab_;
  int32_t unk_, cls_, sep_;
  size_t max_chars_;
  std::vector<Entry> table_;  // indexed by code point
  std::vector<NormalizedChar> chars_;
};

}  // namespace qrt
