// BERT WordPiece tokenization of ASCII text into QA windows, the fast path of the runtime's
// tokenization. It reproduces the Hugging Face `tokenizers` pipeline the models ship with
// (BertNormalizer lowercase, BertPreTokenizer, WordPiece "##", [CLS] q [SEP] c [SEP],
// only-second truncation with stride) for text it can handle exactly: printable ASCII plus
// \t \n \r. Anything else is declined and the caller uses `tokenizers` itself.
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

class WordPiece {
 public:
  // vocab[i] is the token with id i.
  WordPiece(const std::vector<std::string>& vocab, int32_t unk_id, int32_t cls_id, int32_t sep_id,
            int max_input_chars_per_word);

  // Token ids and [begin, end) character spans of `text`; nullopt if the text has a character
  // outside the supported set.
  bool tokenize(std::string_view text, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const;

  // The windows of one (question, context) pair; nullopt when the text is not supported or the
  // question is over max_query_len tokens (the caller's general path handles both).
  std::optional<std::vector<TokenWindow>> windows(std::string_view question, std::string_view context,
                                                  int max_seq_len, int doc_stride, int max_query_len) const;

 private:
  void add_word(std::string_view word, int64_t begin, std::vector<int32_t>& ids, std::vector<int64_t>& spans) const;

  std::unordered_map<std::string, int32_t> vocab_;
  int32_t unk_, cls_, sep_;
  size_t max_chars_;
};

}  // namespace qrt
