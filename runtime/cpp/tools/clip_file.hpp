// The example program's audio input: a clip file decoded with libsndfile, the 10 s window that begins `start`
// seconds in plus a 0.1 s margin for the resampler (ATRT_CLIP_SECONDS + ATRT_RESAMPLE_MARGIN_SECONDS), as
// runtime/audio.py `load_audio` reads it (the library then downmixes, resamples and loop-tiles those samples exactly
// as `prepare_waveform` does). A file is anyone's input: its rate must lie in ATRT_MIN_SAMPLE_RATE..
// ATRT_MAX_SAMPLE_RATE and its window hold at most kMaxWindowSamples samples over all channels, checked before
// anything is allocated or decoded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

// 256 MiB of float: 10.1 s of 64 channels at 96 kHz
constexpr std::uint64_t kMaxWindowSamples = std::uint64_t{1} << 26;

struct ClipWindow {
  std::vector<float> samples;  // frames x channels, interleaved
  std::uint32_t channels = 1;
  double sample_rate = 0;
  std::uint64_t frames() const { return channels ? samples.size() / channels : 0; }
};

// std::runtime_error with a one-line message naming the file when it is missing, empty, not audio, cut short, of a
// rate out of range or too many channels, or when `start` lies past its end.
ClipWindow read_clip_window(const std::string& path, double start);
