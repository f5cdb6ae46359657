// libFuzzer harness: any bytes as a bundle's tokenizer.json -> Tokenizer::from_json (tokenizer.cpp), then, for a
// file it accepts, prompts through it (templates, contractions, numbers, CJK, emoji, the special tokens), as
// atrt_open and atrt_draw use it. A BUNDLE or CONFIG error is the answer to bad bytes; any other exception, a
// crash, a leak or undefined behaviour is a finding (tests/test_cpp.py, `just fuzz`).
#include <cstdint>
#include <string>

#include "errors.hpp"
#include "tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const char* const kPrompts[] = {"a photo of <*>, 4k",
                                         "it's 42 dogs' barking!!",
                                         "<|startoftext|>x<|endoftext|>",
                                         "東京 🐶 naïve <2> <*>",
                                         "  \t\n ",
                                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaa <*>"};
  try {
    const atrt::Tokenizer tokenizer = atrt::Tokenizer::from_json(
        std::string(reinterpret_cast<const char*>(data), size), R"({"pad_token": "<|endoftext|>"})", "fuzz");
    for (const char* prompt : kPrompts) {
      try {
        tokenizer.encode(prompt, false);
      } catch (const atrt::Error&) {
      }
    }
  } catch (const atrt::Error&) {  // the one way bad input may end
  }
  return 0;
}
