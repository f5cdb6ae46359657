// libFuzzer harness: any bytes as a clip handed to atrt_encode_audio -> prepare_waveform (waveform.cpp): the
// channel count, sample rate, start and downmix taken from the bytes' head (rates spanning the bounds, NaN, Inf
// and negatives included), the samples from the rest. An AUDIO or CONFIG error is the answer to bad input;
// any other exception, a crash, a leak or undefined behaviour is a finding (tests/test_cpp.py, `just fuzz`).
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "errors.hpp"
#include "waveform.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider head(data, size);
  static const double kRates[] = {16000.0, 44100.0, 4000.0, 384000.0, 3999.999, 384000.5, 8000.0, 22050.0,
                                  1.0, 0.0, -16000.0, std::numeric_limits<double>::quiet_NaN(),
                                  std::numeric_limits<double>::infinity(), 96000.0, 11025.0, 48000.0};
  const auto channels = head.ConsumeIntegralInRange<std::uint32_t>(0, 1025);
  const double rate = head.ConsumeBool() ? head.PickValueInArray(kRates) : head.ConsumeFloatingPoint<double>();
  const double start = head.ConsumeBool() ? head.ConsumeFloatingPointInRange<double>(0.0, 2.0)
                                          : head.ConsumeFloatingPoint<double>();
  const int downmix = head.ConsumeIntegralInRange<int>(-1, 3);
  const std::vector<std::uint8_t> rest = head.ConsumeRemainingBytes<std::uint8_t>();
  std::vector<float> samples(rest.size() / sizeof(float));
  if (!samples.empty()) std::memcpy(samples.data(), rest.data(), samples.size() * sizeof(float));
  const std::uint64_t frames = channels ? samples.size() / channels : samples.size();
  try {
    atrt::prepare_waveform(samples.data(), frames, channels, rate, start, downmix, "fuzz");
  } catch (const atrt::Error&) {  // the one way bad input may end
  }
  return 0;
}
