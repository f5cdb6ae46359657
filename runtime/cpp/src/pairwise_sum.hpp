// numpy's pairwise summation (np.sum / np.mean of a contiguous float64 array): blocks of up to 128 values summed in
// eight interleaved partial sums, longer runs split in two at a multiple of 8. Sums the C++ side must give to the
// bit, as the Python runtime's (a mix's weights, a channel's energy), use it instead of a plain loop. Written here
// from numpy's published algorithm (pairwise_sum in its loops_utils); no library gives numpy's order of additions.
#pragma once

#include <cstddef>

namespace atrt {

inline double pairwise_sum(const double* values, std::size_t n) {
  if (n < 8) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += values[i];
    return sum;
  }
  if (n <= 128) {
    double partial[8];
    for (std::size_t j = 0; j < 8; ++j) partial[j] = values[j];
    std::size_t i = 8;
    for (; i < n - n % 8; i += 8) {
      for (std::size_t j = 0; j < 8; ++j) partial[j] += values[i + j];
    }
    double sum = ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
                 ((partial[4] + partial[5]) + (partial[6] + partial[7]));
    for (; i < n; ++i) sum += values[i];
    return sum;
  }
  std::size_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(values, half) + pairwise_sum(values + half, n - half);
}

}  // namespace atrt
