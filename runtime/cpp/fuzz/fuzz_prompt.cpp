// libFuzzer harness: any bytes as a prompt -> Tokenizer::encode (tokenizer.cpp) as a template and as a negative
// prompt, with a small CLIP tokenizer (the tokenizer_json seed: CLIP's byte alphabet, its first merges and the
// special and placeholder tokens), as atrt_tokenize and atrt_draw take anyone's prompt. A CONFIG error is the
// answer to bad bytes; any other exception, a crash, a leak, undefined behaviour or a hang is a finding.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "errors.hpp"
#include "tokenizer.hpp"

namespace {

std::optional<atrt::Tokenizer> tokenizer;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::ifstream in(ATRT_FUZZ_CORPUS "/tokenizer_json/clip-small.json", std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  tokenizer = atrt::Tokenizer::from_json(text.str(), R"({"pad_token": "<|endoftext|>"})", ATRT_FUZZ_CORPUS);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string prompt(reinterpret_cast<const char*>(data), size);
  for (const bool as_template : {true, false}) {
    try {
      tokenizer->encode(prompt, as_template);
    } catch (const atrt::Error&) {  // the one way bad input may end
    }
  }
  return 0;
}
