// libFuzzer harness: any bytes as a --layout -> parse_layout (regions.cpp, with python_text.cpp's reading of the
// text: lower case, float(), the quoting of its errors), then region_weights of the boxes at a small latent size,
// with and without a background, as compose takes anyone's layout. A CONFIG error is the answer to bad bytes; any
// other exception, a crash, a leak, undefined behaviour or a hang is a finding.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "errors.hpp"
#include "regions.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string layout(reinterpret_cast<const char*>(data), size);
  std::vector<atrt::Box> boxes;
  try {
    boxes = atrt::parse_layout(layout);
  } catch (const atrt::Error&) {  // the one way bad input may end
    return 0;
  }
  if (boxes.empty() || boxes.size() > static_cast<std::size_t>(atrt::kMaxRegions)) std::abort();
  for (const bool background : {true, false}) {
    try {
      const std::vector<float> weights = atrt::region_weights(boxes, 7, 5, background);
      for (float w : weights) {
        if (!std::isfinite(w) || w < 0.0f || w > 1.0f) std::abort();  // weights, not NaN
      }
    } catch (const atrt::Error&) {  // boxes leaving pixels to no sound, without a background
    }
  }
  return 0;
}
