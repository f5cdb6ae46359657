// Mixes of sounds (see mix.hpp).
#include "mix.hpp"

#include <cmath>
#include <string>

#include "errors.hpp"
#include "pairwise_sum.hpp"
#include "python_text.hpp"

namespace atrt {

std::vector<double> mix_weights(const std::vector<double>& weights) {
  bool finite = true;
  for (double w : weights) finite = finite && std::isfinite(w);
  const double sum = pairwise_sum(weights.data(), weights.size());
  if (weights.empty() || !finite || !(sum > 0)) {
    std::string listed;
    for (double w : weights) listed += (listed.empty() ? "" : ", ") + python::format_g(w);
    fail(ATRT_CONFIG_ERROR,
         "mix weights " + (listed.empty() ? std::string("(none)") : listed) +
             " must be finite and sum to a positive number",
         "e.g. --mix dog.wav:0.7,rain.wav:0.3");
  }
  std::vector<double> normalised;
  for (double w : weights) normalised.push_back(w / sum);
  return normalised;
}

std::vector<float> mix_tokens(const std::vector<double>& weights, const std::vector<std::vector<float>>& tokens) {
  if (tokens.empty() || weights.size() != tokens.size()) {
    fail(ATRT_INTERNAL_ERROR, "mix_tokens: " + std::to_string(weights.size()) + " weights for " +
                                  std::to_string(tokens.size()) + " tokens");
  }
  std::vector<float> mixed(tokens[0].size(), 0.0f);
  for (std::size_t k = 0; k < tokens.size(); ++k) {
    if (tokens[k].size() != mixed.size()) {
      fail(ATRT_INTERNAL_ERROR, "mix_tokens: token " + std::to_string(k) + " holds " +
                                    std::to_string(tokens[k].size()) + " values, the first " +
                                    std::to_string(mixed.size()));
    }
    const auto weight = static_cast<float>(weights[k]);
    for (std::size_t d = 0; d < mixed.size(); ++d) mixed[d] += weight * tokens[k][d];
  }
  return mixed;
}

}  // namespace atrt
