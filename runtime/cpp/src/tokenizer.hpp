// The prompt tokenizer: a template with <*> -> CLIP input ids [77], the same ids as runtime/tokenizer.py (the
// `tokenizers` library on the bundle's tokenizer.json), written natively from what that file describes:
//   1. added tokens: those not normalized (<|startoftext|>, <|endoftext|>) are split out of the raw text;
//   2. normalizer: NFC, every run of whitespace -> one space, lowercase;
//   3. added tokens that are normalized (<*>, <2>..<4>) are split out of the normalized text;
//   4. pre-tokenizer: CLIP's pattern 's|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+ keeps its matches
//      and drops the rest (whitespace) (its <|startoftext|> and <|endoftext|> alternatives never match in
//      `tokenizers`); then byte-level: each UTF-8 byte becomes one character of GPT-2's byte alphabet;
//   5. BPE: a word's characters, the last with "</w>", merged pair by pair, lowest merge rank first (leftmost
//      among equal ranks), then looked up in the vocabulary;
//   6. post-processor: <|startoftext|> ids <|endoftext|>; padded with the pad token (tokenizer_config.json).
// Unicode data (NFC, general categories, lowercase) come from utf8proc.
//
// Place in the data flow: atrt_draw -> encode_prompt -> Tokenizer::encode(template) -> text_encoder engine, which
// puts the audio token where the id is the placeholder id.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "audiotoken_rt.h"

namespace atrt {

struct AddedToken {
  std::string content;
  std::int64_t id = 0;
  bool normalized = false;
};

class Tokenizer {
 public:
  // Reads folder/tokenizer.json and folder/tokenizer_config.json; BUNDLE error when they are unreadable or
  // describe a tokenizer other than CLIP's.
  static Tokenizer from_folder(const std::string& folder);
  // The same from the two files' text; `source` names them in messages (the fuzz harnesses call it directly).
  static Tokenizer from_json(const std::string& tokenizer_json, const std::string& config_json,
                             const std::string& source);

  // Prompt -> ids [77]. With require_placeholder the prompt must hold <*> (or <1>) exactly once, as a template.
  // CONFIG error for more than ATRT_MAX_PROMPT_BYTES bytes, invalid UTF-8, more than 77 tokens.
  std::vector<std::int64_t> encode(const std::string& prompt, bool require_placeholder) const;
  // The ids between BOS and EOS included, unpadded and unchecked (what `tokenizers` returns).
  std::vector<std::int64_t> raw_ids(const std::string& prompt) const;

  std::int64_t placeholder_id() const { return placeholder_id_; }
  std::int64_t pad_id() const { return pad_id_; }
  int slot_count() const { return slot_count_; }  // <*>, <2>, <3>, <4>: how many of them, in order, it holds

 private:
  void encode_piece(const std::string& normalized, std::vector<std::int64_t>& ids) const;
  void encode_word(const std::string& word, std::vector<std::int64_t>& ids) const;

  std::unordered_map<std::string, std::int64_t> vocab_;
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::int64_t>> merges_;  // (a, b) -> (rank, merged)
  std::vector<AddedToken> added_;
  std::string suffix_ = "</w>";
  int slot_count_ = 0;
  std::int64_t unk_id_ = -1, bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, placeholder_id_ = 0;
};

// A one-sound template must hold <*> (or <1>) exactly once and no other numbered placeholder: CONFIG error.
void check_template(const std::string& prompt);
// A prompt of several sounds (compose): <1>..<sounds> (<*> counts as <1>) each at least once, no other number, and
// no more sounds than the bundle's `slot_count` token slots. CONFIG error, runtime/tokenizer.py check_slots' text.
void check_slots(const std::string& prompt, int sounds, int slot_count);
// Whether a prompt holds a sound's place: <*> or <n>.
bool holds_slot(const std::string& prompt);
// A prompt for an error message: quoted, cut to 60 characters.
std::string quoted(const std::string& prompt);

}  // namespace atrt
