// Philox4x64-10 and Box-Muller: the portable noise of runtime/noise.py, in C++ (see noise.hpp for the recipe).
// Philox constants and round structure: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011).
#include "noise.hpp"

#include <cmath>

namespace atrt {
namespace {

constexpr std::uint64_t kMultiplier0 = 0xD2E7470EE14C6C93ULL;
constexpr std::uint64_t kMultiplier1 = 0xCA5A826395121157ULL;
constexpr std::uint64_t kWeyl0 = 0x9E3779B97F4A7C15ULL;  // golden ratio
constexpr std::uint64_t kWeyl1 = 0xBB67AE8584CAA73BULL;  // sqrt(3) - 1
constexpr int kRounds = 10;

// The high and low 64 bits of a 64 x 64 -> 128-bit product, from 32-bit halves (portable, no __int128).
inline void multiply_wide(std::uint64_t a, std::uint64_t b, std::uint64_t& high, std::uint64_t& low) {
  const std::uint64_t a_lo = a & 0xFFFFFFFFULL, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFULL, b_hi = b >> 32;
  const std::uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
  const std::uint64_t middle = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFULL) + lo_hi;  // cannot overflow
  low = (middle << 32) | (lo_lo & 0xFFFFFFFFULL);
  high = hi_hi + (hi_lo >> 32) + (middle >> 32);
}

}  // namespace

PhiloxCounter philox4x64_10(PhiloxCounter x, PhiloxKey key) {
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    std::uint64_t high0 = 0, low0 = 0, high1 = 0, low1 = 0;
    multiply_wide(kMultiplier0, x[0], high0, low0);
    multiply_wide(kMultiplier1, x[2], high1, low1);
    x = {high1 ^ x[1] ^ key[0], low1, high0 ^ x[3] ^ key[1], low0};
  }
  return x;
}

Philox::Philox(std::uint64_t key0, std::uint64_t key1) : key_{key0, key1} {}

void Philox::refill() {
  // the counter is raised before each block: the first block is the counter (1, 0, 0, 0)
  for (auto& word : counter_) {
    if (++word != 0) break;
  }
  block_ = philox4x64_10(counter_, key_);
  used_ = 0;
}

std::uint64_t Philox::next() {
  if (used_ == block_.size()) refill();
  return block_[used_++];
}

std::vector<float> NoiseStream::standard_normal(std::size_t count) {
  std::vector<float> values;
  values.reserve(count + 1);
  constexpr double kTwoPi = 2.0 * 3.14159265358979311599796346854;  // 2 * (pi rounded to double), as numpy's
  constexpr double kUlp53 = 1.0 / 9007199254740992.0;                 // 2^-53
  while (values.size() < count) {
    const double u1 = 1.0 - static_cast<double>(bits_.next() >> 11) * kUlp53;  // (0, 1]
    const double u2 = 1.0 - static_cast<double>(bits_.next() >> 11) * kUlp53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = kTwoPi * u2;
    values.push_back(static_cast<float>(radius * std::cos(angle)));
    values.push_back(static_cast<float>(radius * std::sin(angle)));
  }
  values.resize(count);  // an odd count drops the pair's second normal
  return values;
}

}  // namespace atrt
