// CLIP BPE from tokenizer.json, natively (the recipe is in tokenizer.hpp); parity with the Python tokenizer is
// tested on a corpus of prompts (tests/test_cpp.py).
#include "tokenizer.hpp"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "contract.hpp"
#include "errors.hpp"
#include "json_integer.hpp"

using nlohmann::json;

namespace atrt {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ATRT_BUNDLE_ERROR, path + ": cannot be read", "re-export the bundle");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void append_utf8(std::string& out, utf8proc_int32_t code) {
  utf8proc_uint8_t bytes[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(code, bytes);
  out.append(reinterpret_cast<const char*>(bytes), static_cast<std::size_t>(n));
}

// The code points of valid UTF-8 text (CONFIG error otherwise: a C caller may pass any bytes).
std::vector<utf8proc_int32_t> code_points(const std::string& text) {
  std::vector<utf8proc_int32_t> points;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t at = 0, size = static_cast<utf8proc_ssize_t>(text.size());
  while (at < size) {
    utf8proc_int32_t code = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + at, size - at, &code);
    if (n <= 0) fail(ATRT_CONFIG_ERROR, "prompt is not valid UTF-8 (at byte " + std::to_string(at) + ")",
                     "pass prompts as UTF-8 text");
    points.push_back(code);
    at += n;
  }
  return points;
}

// Oniguruma's \s on Unicode text (the `tokenizers` regexes): tab to carriage return, NEL, and the separators.
bool is_space(utf8proc_int32_t c) {
  if ((c >= 0x09 && c <= 0x0D) || c == 0x85) return true;
  const utf8proc_category_t category = utf8proc_category(c);
  return category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL || category == UTF8PROC_CATEGORY_ZP;
}

bool is_letter(utf8proc_int32_t c) {
  const utf8proc_category_t category = utf8proc_category(c);
  return category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
}

bool is_number(utf8proc_int32_t c) {
  const utf8proc_category_t category = utf8proc_category(c);
  return category >= UTF8PROC_CATEGORY_ND && category <= UTF8PROC_CATEGORY_NO;
}

// NFC, whitespace runs -> " ", lowercase (full mapping: U+0130 lowercases to "i" + combining dot above).
std::string normalize(const std::string& text) {
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> composed(
      utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str())), &std::free);
  if (!composed) fail(ATRT_CONFIG_ERROR, "prompt is not valid UTF-8", "pass prompts as UTF-8 text");
  std::string out;
  bool in_space = false;
  for (utf8proc_int32_t c : code_points(reinterpret_cast<const char*>(composed.get()))) {
    if (is_space(c)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
      continue;
    }
    in_space = false;
    if (c == 0x130) {
      out += "i\xCC\x87";
    } else {
      append_utf8(out, utf8proc_tolower(c));
    }
  }
  return out;
}

// GPT-2's byte alphabet: printable bytes stand for themselves, the others for 256, 257, ... in byte order.
std::vector<std::string> byte_alphabet() {
  std::vector<std::string> alphabet(256);
  utf8proc_int32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    append_utf8(alphabet[static_cast<std::size_t>(b)], printable ? b : next++);
  }
  return alphabet;
}

std::uint64_t pair_key(std::int64_t a, std::int64_t b) {
  return (static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint64_t>(b);
}

// Splits `text` around the added tokens in `tokens` (leftmost match, longest among those starting there):
// calls piece(text) for the text between and token(id) for each match.
template <typename Piece, typename Token>
void split_added(const std::string& text, const std::vector<const AddedToken*>& tokens, Piece piece, Token token) {
  std::size_t start = 0, at = 0;
  while (at < text.size()) {
    const AddedToken* best = nullptr;
    for (const AddedToken* candidate : tokens) {
      if (text.compare(at, candidate->content.size(), candidate->content) == 0 &&
          (best == nullptr || candidate->content.size() > best->content.size())) {
        best = candidate;
      }
    }
    if (best == nullptr) {
      ++at;
      continue;
    }
    if (at > start) piece(text.substr(start, at - start));
    token(best->id);
    at += best->content.size();
    start = at;
  }
  if (start < text.size()) piece(text.substr(start));
}

void require(bool ok, const std::string& folder, const std::string& what) {
  if (!ok) {
    fail(ATRT_BUNDLE_ERROR, folder + "/tokenizer.json: " + what + "; this runtime reads CLIP's BPE tokenizer",
         "re-export the bundle");
  }
}

}  // namespace

Tokenizer Tokenizer::from_folder(const std::string& folder) {
  return from_json(read_text(folder + "/tokenizer.json"), read_text(folder + "/tokenizer_config.json"), folder);
}

Tokenizer Tokenizer::from_json(const std::string& tokenizer_json, const std::string& config_json,
                               const std::string& folder) {
  Tokenizer t;
  json spec, config;
  try {
    spec = json::parse(tokenizer_json);
    config = json::parse(config_json);
  } catch (const json::exception& e) {
    fail(ATRT_BUNDLE_ERROR, folder + ": cannot read tokenizer.json / tokenizer_config.json (" + e.what() + ")",
         "re-export the bundle");
  }
  try {
    const json& model = spec.at("model");
    require(model.at("type") == "BPE", folder, "model type is not BPE");
    require(model.value("continuing_subword_prefix", json("")).is_null() ||
                model.value("continuing_subword_prefix", json("")) == "",
            folder, "a continuing_subword_prefix is set");
    require(model.value("byte_fallback", false) == false && model.value("dropout", json()).is_null(), folder,
            "byte fallback or dropout is set");
    // (`value`, never a const operator[]: on a key the object lacks, that reads out of bounds; found by fuzzing)
    const json suffix = model.value("end_of_word_suffix", json(""));
    t.suffix_ = suffix.is_string() ? suffix.get<std::string>() : "";
    // ids fit pair_key
    for (const auto& [token, id] : model.at("vocab").items()) {
      t.vocab_[token] = json_integer<std::uint32_t>(id);
    }
    std::uint32_t rank = 0;
    for (const auto& merge : model.at("merges")) {
      std::string a, b;
      if (merge.is_array()) {
        a = merge.at(0).get<std::string>();
        b = merge.at(1).get<std::string>();
      } else {  // the older "a b" form
        const std::string text = merge.get<std::string>();
        const std::size_t space = text.find(' ');
        require(space != std::string::npos, folder, "a merge is not 'a b'");
        a = text.substr(0, space);
        b = text.substr(space + 1);
      }
      auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), merged = t.vocab_.find(a + b);
      require(ia != t.vocab_.end() && ib != t.vocab_.end() && merged != t.vocab_.end(), folder,
              "merge '" + a + " " + b + "' names tokens missing from the vocabulary");
      t.merges_.emplace(pair_key(ia->second, ib->second), std::make_pair(rank++, merged->second));
    }
    if (model.contains("unk_token") && model.at("unk_token").is_string()) {
      auto unk = t.vocab_.find(model.at("unk_token").get<std::string>());
      if (unk != t.vocab_.end()) t.unk_id_ = unk->second;
    }
    for (const auto& added : spec.at("added_tokens")) {
      require(!added.value("lstrip", false) && !added.value("rstrip", false) && !added.value("single_word", false),
              folder, "an added token strips or is single-word");
      AddedToken token{added.at("content").get<std::string>(), json_integer<std::uint32_t>(added.at("id")),
                       added.value("normalized", false)};
      t.vocab_[token.content] = token.id;
      t.added_.push_back(token);
    }
    // the pipeline this file must describe: CLIP's, as the exporter writes it
    const json& normalizer = spec.at("normalizer");
    require(normalizer.at("type") == "Sequence" && normalizer.at("normalizers").size() == 3 &&
                normalizer.at("normalizers")[0].at("type") == "NFC" &&
                normalizer.at("normalizers")[1].at("type") == "Replace" &&
                normalizer.at("normalizers")[1].at("content") == " " &&
                normalizer.at("normalizers")[2].at("type") == "Lowercase",
            folder, "its normalizer is not NFC, whitespace, lowercase");
    const json& pre = spec.at("pre_tokenizer");
    require(pre.at("type") == "Sequence" && pre.at("pretokenizers").size() == 2 &&
                pre.at("pretokenizers")[0].at("type") == "Split" &&
                pre.at("pretokenizers")[1].at("type") == "ByteLevel",
            folder, "its pre-tokenizer is not CLIP's split then byte-level");
    const std::string pattern = pre.at("pretokenizers")[0].at("pattern").at("Regex").get<std::string>();
    require(pattern == "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
                       "[^\\s\\p{L}\\p{N}]+",
            folder, "its split pattern is not CLIP's");
    const json& post = spec.at("post_processor");
    require(post.at("type") == "RobertaProcessing", folder, "its post-processor is not BOS ... EOS");
    t.bos_id_ = json_integer<std::uint32_t>(post.at("cls").at(1));
    t.eos_id_ = json_integer<std::uint32_t>(post.at("sep").at(1));
  } catch (const json::exception& e) {
    fail(ATRT_BUNDLE_ERROR, folder + "/tokenizer.json: lacks or mistypes a field (" + e.what() + ")",
         "re-export the bundle");
  }
  auto placeholder = t.vocab_.find(kPlaceholder);
  if (placeholder == t.vocab_.end()) {
    fail(ATRT_BUNDLE_ERROR, folder + ": the tokenizer has no <*> token", "re-export the bundle");
  }
  t.placeholder_id_ = placeholder->second;
  for (const char* slot : kSlotPlaceholders) {
    if (!t.vocab_.count(slot)) break;
    ++t.slot_count_;
  }
  std::string pad = "<|endoftext|>";
  if (config.is_object() && config.contains("pad_token")) {
    const json& value = config["pad_token"];
    if (value.is_string()) pad = value.get<std::string>();
    if (value.is_object() && value.contains("content") && value.at("content").is_string()) pad = value.at("content");
  }
  auto pad_entry = t.vocab_.find(pad);
  if (pad_entry == t.vocab_.end()) {
    fail(ATRT_BUNDLE_ERROR, folder + ": pad token '" + pad + "' is not in the vocabulary", "re-export the bundle");
  }
  t.pad_id_ = pad_entry->second;
  return t;
}

void Tokenizer::encode_word(const std::string& word, std::vector<std::int64_t>& ids) const {
  static const std::vector<std::string> alphabet = byte_alphabet();
  std::vector<std::int64_t> symbols;
  for (std::size_t i = 0; i < word.size(); ++i) {
    std::string symbol = alphabet[static_cast<unsigned char>(word[i])];
    if (i + 1 == word.size()) symbol += suffix_;
    auto found = vocab_.find(symbol);
    if (found == vocab_.end()) {
      if (unk_id_ < 0) fail(ATRT_CONFIG_ERROR, "prompt holds a character the vocabulary lacks", "");
      symbols.push_back(unk_id_);
    } else {
      symbols.push_back(found->second);
    }
  }
  for (;;) {  // merge the lowest-ranked adjacent pair (the leftmost among equals) until none is left
    std::size_t best_at = 0;
    std::uint32_t best_rank = UINT32_MAX;
    std::int64_t best_id = 0;
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto merge = merges_.find(pair_key(symbols[i], symbols[i + 1]));
      if (merge != merges_.end() && merge->second.first < best_rank) {
        best_rank = merge->second.first;
        best_id = merge->second.second;
        best_at = i;
      }
    }
    if (best_rank == UINT32_MAX) break;
    symbols[best_at] = best_id;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

void Tokenizer::encode_piece(const std::string& text, std::vector<std::int64_t>& ids) const {
  // CLIP's split pattern, alternatives tried in order at each position; unmatched characters (whitespace) dropped
  const std::vector<utf8proc_int32_t> points = code_points(text);
  std::vector<std::size_t> offsets;  // byte offset of each code point, and the end
  {
    std::size_t at = 0;
    for (utf8proc_int32_t c : points) {
      offsets.push_back(at);
      utf8proc_uint8_t bytes[4];
      at += static_cast<std::size_t>(utf8proc_encode_char(c, bytes));
    }
    offsets.push_back(at);
  }
  // The pattern's first two alternatives, <|startoftext|> and <|endoftext|>, never match as `tokenizers` runs it
  // (in normalized text "<|endoftext|>" splits into "<|", "endoftext", "|>"), so they are left out here.
  static const char* const kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  std::size_t i = 0;
  while (i < points.size()) {
    std::size_t end = i;  // one past the match, in code points
    for (const char* contraction : kContractions) {
      if (end == i && text.compare(offsets[i], std::strlen(contraction), contraction) == 0) {
        end = i + std::strlen(contraction);
      }
    }
    if (end == i && is_letter(points[i])) {
      while (end < points.size() && is_letter(points[end])) ++end;
    } else if (end == i && is_number(points[i])) {
      end = i + 1;
    } else if (end == i && !is_space(points[i])) {
      while (end < points.size() && !is_space(points[end]) && !is_letter(points[end]) && !is_number(points[end])) {
        ++end;
      }
    }
    if (end == i) {  // whitespace: not part of any word
      ++i;
      continue;
    }
    encode_word(text.substr(offsets[i], offsets[end] - offsets[i]), ids);
    i = end;
  }
}

std::vector<std::int64_t> Tokenizer::raw_ids(const std::string& prompt) const {
  std::vector<const AddedToken*> raw_tokens, normalized_tokens;
  for (const auto& token : added_) (token.normalized ? normalized_tokens : raw_tokens).push_back(&token);
  std::vector<std::int64_t> ids = {bos_id_};
  auto token = [&](std::int64_t id) { ids.push_back(id); };
  split_added(
      prompt, raw_tokens,
      [&](const std::string& raw) {
        split_added(normalize(raw), normalized_tokens, [&](const std::string& piece) { encode_piece(piece, ids); },
                    token);
      },
      token);
  ids.push_back(eos_id_);
  return ids;
}

std::vector<std::int64_t> Tokenizer::encode(const std::string& prompt, bool require_placeholder) const {
  if (prompt.size() > ATRT_MAX_PROMPT_BYTES) {  // before any work: BPE's cost grows with the square of a word's length
    fail(ATRT_CONFIG_ERROR,
         "prompt is " + std::to_string(prompt.size()) + " bytes long; it may hold at most " +
             std::to_string(ATRT_MAX_PROMPT_BYTES) + " bytes",
         "CLIP reads at most 77 tokens (about 300-400 bytes of English): shorten it");
  }
  if (require_placeholder) check_template(prompt);
  std::string numbered = prompt;  // <1> is the same token as <*>
  for (std::size_t at = 0; (at = numbered.find("<1>", at)) != std::string::npos; at += 3) {
    numbered.replace(at, 3, kPlaceholder);
  }
  std::vector<std::int64_t> ids = raw_ids(numbered);
  if (ids.size() > static_cast<std::size_t>(kTextLength)) {
    fail(ATRT_CONFIG_ERROR,
         "prompt " + quoted(prompt) + " is " + std::to_string(ids.size()) + " tokens long; CLIP takes at most " +
             std::to_string(kTextLength),
         "shorten the prompt");
  }
  ids.resize(static_cast<std::size_t>(kTextLength), pad_id_);
  return ids;
}

std::string quoted(const std::string& prompt) {
  const std::vector<utf8proc_int32_t> points = [&] {
    try {
      return code_points(prompt);
    } catch (const Error&) {
      return std::vector<utf8proc_int32_t>{};
    }
  }();
  if (points.size() <= 60) return "'" + prompt + "'";
  std::string head;
  for (std::size_t i = 0; i < 60; ++i) append_utf8(head, points[i]);
  return "'" + head + "'... (" + std::to_string(points.size()) + " characters)";
}

namespace {

// The <*> and <n> places in a prompt, as "*" or the digits
std::vector<std::string> slots(const std::string& prompt) {
  std::vector<std::string> found;
  for (std::size_t at = 0; at < prompt.size(); ++at) {
    if (prompt[at] != '<') continue;
    std::size_t end = at + 1;
    if (end < prompt.size() && prompt[end] == '*') {
      ++end;
    } else {
      while (end < prompt.size() && std::isdigit(static_cast<unsigned char>(prompt[end]))) ++end;
      if (end == at + 1) continue;
    }
    if (end < prompt.size() && prompt[end] == '>') {
      found.push_back(prompt.substr(at + 1, end - at - 1));
      at = end;
    }
  }
  return found;
}

}  // namespace

bool holds_slot(const std::string& prompt) { return !slots(prompt).empty(); }

void check_template(const std::string& prompt) {
  int count = 0;
  std::vector<std::string> others;
  for (const std::string& slot : slots(prompt)) {
    if (slot == "*" || slot == "1") {
      ++count;
    } else {
      others.push_back(slot);
    }
  }
  if (count != 1 || !others.empty()) {
    const std::string found =
        count != 1 ? "<*> " + std::to_string(count) + " times" : "<" + others[0] + ">, which needs several sounds";
    fail(ATRT_CONFIG_ERROR, "prompt template " + quoted(prompt) + " holds " + found + "; it needs <*> exactly once",
         "e.g. 'a photo of <*>, 4k, high resolution'; several sounds in one picture: audiotoken-rt compose");
  }
}


namespace {

// A slot's number as Python's int() of its digits writes it: leading zeros dropped ("*" is 1).
std::string slot_number(const std::string& slot) {
  if (slot == "*") return "1";
  const std::size_t first = slot.find_first_not_of('0');
  return first == std::string::npos ? "0" : slot.substr(first);
}

// Numbers written without leading zeros, compared as integers of any length.
bool number_less(const std::string& a, const std::string& b) {
  return a.size() != b.size() ? a.size() < b.size() : a < b;
}

}  // namespace

void check_slots(const std::string& prompt, int sounds, int slot_count) {
  if (sounds > slot_count) {
    fail(ATRT_CONFIG_ERROR,
         std::to_string(sounds) + " sounds, but this bundle's text engine holds " + std::to_string(slot_count) +
             " token slot" + (slot_count != 1 ? "s" : ""),
         slot_count == 1 ? "re-export the bundle with this audiotoken-rt (4 slots)"
                         : "use at most " + std::to_string(slot_count) + " sounds");
  }
  std::vector<std::string> used;
  for (const std::string& slot : slots(prompt)) used.push_back(slot_number(slot));
  const std::string most = std::to_string(sounds);
  std::string stray;
  for (const std::string& n : used) {
    const bool in_range = n != "0" && !number_less(most, n);
    if (!in_range && (stray.empty() || number_less(n, stray))) stray = n;
  }
  const std::string plural = sounds != 1 ? "s" : "";
  if (!stray.empty()) {
    fail(ATRT_CONFIG_ERROR,
         "prompt " + quoted(prompt) + " holds <" + stray + "> but only " + most + " sound" + plural + " " +
             (sounds != 1 ? "were" : "was") + " given",
         "give one clip per numbered placeholder, in order");
  }
  for (int n = 1; n <= sounds; ++n) {
    if (std::find(used.begin(), used.end(), std::to_string(n)) == used.end()) {
      fail(ATRT_CONFIG_ERROR, "prompt " + quoted(prompt) + " has no <" + std::to_string(n) + "> for sound " +
                                  std::to_string(n),
           "write each sound's place in the prompt: e.g. 'a photo of <1> next to <2>'");
    }
  }
}

}  // namespace atrt
