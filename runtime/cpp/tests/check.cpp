// audiotoken-rt-cpp-check: the test driver of tests/test_cpp.py (built, never installed). It runs the library's
// parts on inputs the Python tests write, and prints what the Python runtime is compared with:
//   noise SEED USE COUNT                 the float32 bit patterns of NoiseStream(SEED, USE), hex, one per line
//   tokenize TOKENIZER_DIR               stdin: one JSON string per line -> the raw ids (BOS ... EOS) as a JSON
//                                        array per line, or {"error": message}
//   schedule NAME STEPS SEED CONFIG IN OUT   a full scheduler loop on a stand-in model (eps = 0.9 * input +
//                                        offset_i): IN holds the initial noise [n] then offsets [T, n] (float32);
//                                        OUT gets the timesteps [T] (float64) then the latents after each step
//                                        [T, n] (float32)
//   bad-input BUNDLE                     bad input through the C API (bad_input.c): one line per case
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "noise.hpp"
#include "schedulers.hpp"
#include "tokenizer.hpp"

extern "C" int run_bad_input(const char* bundle);

namespace {

int noise(std::uint64_t seed, std::uint64_t use, std::size_t count) {
  for (float value : atrt::NoiseStream(seed, use).standard_normal(count)) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    std::printf("%08x\n", bits);
  }
  return 0;
}

int tokenize(const std::string& folder) {
  const atrt::Tokenizer tokenizer = atrt::Tokenizer::from_folder(folder);
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::json out;
    try {
      out = tokenizer.raw_ids(nlohmann::json::parse(line).get<std::string>());
    } catch (const atrt::Error& e) {
      out = {{"error", e.what()}};
    }
    std::cout << out.dump() << "\n";
  }
  return 0;
}

int schedule(const std::string& name, int steps, std::uint64_t seed, const std::string& config_path,
             const std::string& in_path, const std::string& out_path) {
  std::ifstream config_file(config_path);
  const nlohmann::json config = nlohmann::json::parse(config_file);
  const auto scheduler = atrt::make_scheduler(name, config, steps);
  const std::size_t count = scheduler->timesteps().size();
  std::ifstream in(in_path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t n = bytes.size() / sizeof(float) / (count + 1);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  std::vector<float> latents(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(n));
  const auto sigma = static_cast<float>(scheduler->init_noise_sigma());
  for (float& value : latents) value = value * sigma;
  atrt::NoiseStream step_noise(seed, atrt::kStepNoise);
  atrt::History history;
  std::vector<float> input(n), eps(n), trajectory;
  for (std::size_t i = 0; i < count; ++i) {
    scheduler->scale_model_input(latents.data(), input.data(), n, i);
    const float* offset = values.data() + (i + 1) * n;
    for (std::size_t k = 0; k < n; ++k) eps[k] = 0.9f * input[k] + offset[k];
    scheduler->step(eps.data(), i, latents.data(), n, history, &step_noise);
    trajectory.insert(trajectory.end(), latents.begin(), latents.end());
  }
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(scheduler->timesteps().data()),
            static_cast<std::streamsize>(count * sizeof(double)));
  out.write(reinterpret_cast<const char*>(trajectory.data()),
            static_cast<std::streamsize>(trajectory.size() * sizeof(float)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 4 && args[0] == "noise") {
      return noise(std::stoull(args[1]), std::stoull(args[2]), std::stoull(args[3]));
    }
    if (args.size() == 2 && args[0] == "tokenize") return tokenize(args[1]);
    if (args.size() == 7 && args[0] == "schedule") {
      return schedule(args[1], std::stoi(args[2]), std::stoull(args[3]), args[4], args[5], args[6]);
    }
    if (args.size() == 2 && args[0] == "bad-input") return run_bad_input(args[1].c_str());
  } catch (const atrt::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return 1;
  }
  std::fprintf(stderr, "usage: audiotoken-rt-cpp-check noise|tokenize|schedule|bad-input ... (see check.cpp)\n");
  return 2;
}
