// Samples -> the audio encoder's waveform: the recipe of runtime/audio.py `prepare_waveform`, so the C++ and the
// Python runtime hear the same thing. The window first: from `start` seconds in, 10 s and the resampler's 0.1 s
// margin (nothing past it is read, checked or resampled, so the work is bounded whatever the clip's length);
// then the channels downmixed (channel 0, their mean, or channel 1), resampled to 16 kHz with soxr at high
// quality (as python-soxr's `resample`: one resampler, input fed in 48000-output-sample chunks, then flushed),
// clipped to [-1, 1), loop-tiled to exactly 160 000 samples. The rate must lie in 4-384 kHz, as in Python.
//
// Place in the data flow: atrt_encode_audio -> prepare_waveform -> [160000] floats -> audio_encoder engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "audiotoken_rt.h"
#include "contract.hpp"

namespace atrt {

constexpr double kMinSampleRate = ATRT_MIN_SAMPLE_RATE;  // Hz (the public header's, runtime/audio.py's)
constexpr double kMaxSampleRate = ATRT_MAX_SAMPLE_RATE;
// input frames of the window at `sample_rate`: ceil((10 s + 0.1 s) * rate), as runtime/audio.py _window_samples
std::uint64_t window_frames(double sample_rate);

enum class Downmix { kFirst = 0, kMean = 1, kSecond = 2 };

// AUDIO error for no samples, non-finite samples, a bad rate or channel count, or a start past the end;
// CONFIG error for a bad downmix or start.
std::vector<float> prepare_waveform(const float* samples, std::uint64_t frames, std::uint32_t channels,
                                    double sample_rate, double start, int downmix, const std::string& name);

// python-soxr's `resample(x, in_rate, out_rate, "HQ")` of one channel.
std::vector<float> resample_hq(const std::vector<float>& x, double in_rate, double out_rate);

// A waveform's energy, the mean square of its samples in double (numpy's np.mean(np.square(x, dtype=float64)), to
// the bit): generate --stereo weighs each side's 10 s window by it (regions.hpp stereo_boxes). 0 for no samples.
double mean_square(const std::vector<float>& waveform);

}  // namespace atrt
