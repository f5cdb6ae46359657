// Seeded noise, bit for bit the Python runtime's (runtime/noise.py): every picture and every use of noise draws
// from its own stream keyed (seed, use).
//
// Place in the data flow: a picture's seed -> NoiseStream(seed, kInitialNoise) -> N(0, 1) latents [1, 4, h, w]
// (scaled by the scheduler's init_noise_sigma) -> denoise, where stochastic steps (euler-a, lcm, ddim and tcd with an
// eta) draw their fresh noise from NoiseStream(seed, kStepNoise).
//
// The recipe: Philox4x64-10 keyed (seed, use), counter from 0 and raised by one before each block of four uint64
// words (numpy's Philox bit generator); each word u -> a uniform in (0, 1]: 1 - (u >> 11) * 2^-53; consecutive
// pairs -> two normals by Box-Muller in double (r = sqrt(-2 ln u1); r cos(2 pi u2), then r sin(2 pi u2)); a draw of
// n values takes ceil(n / 2) pairs and drops the last normal of an odd n; values are rounded to float.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace atrt {

constexpr std::uint64_t kInitialNoise = 0;  // the initial latents of a picture
constexpr std::uint64_t kStepNoise = 1;     // fresh noise of stochastic scheduler steps

using PhiloxCounter = std::array<std::uint64_t, 4>;
using PhiloxKey = std::array<std::uint64_t, 2>;

// The Philox4x64-10 block function: one counter and key -> four words (Random123's philox4x64_R(10, ...); its
// known-answer vectors are checked in tests/test_cpp.py).
PhiloxCounter philox4x64_10(PhiloxCounter counter, PhiloxKey key);

// The raw Philox4x64-10 word stream of one key, as numpy's Philox(key=[k0, k1]).random_raw() yields it.
class Philox {
 public:
  Philox(std::uint64_t key0, std::uint64_t key1);
  std::uint64_t next();

 private:
  void refill();
  PhiloxKey key_;
  PhiloxCounter counter_{};
  PhiloxCounter block_{};
  std::size_t used_ = 4;  // words of block_ already handed out; 4: empty
};

// The N(0, 1) stream of one (seed, use); successive draws continue it.
class NoiseStream {
 public:
  NoiseStream(std::uint64_t seed, std::uint64_t use) : bits_(seed, use) {}
  // The next `count` normals of the stream (as runtime.noise.NoiseStream.standard_normal of that many values).
  std::vector<float> standard_normal(std::size_t count);

 private:
  Philox bits_;
};

}  // namespace atrt
