// The example program's audio input: a clip file decoded with libsndfile, the 10 s window that begins `start`
// seconds in plus a 0.1 s margin for the resampler, as runtime/audio.py `load_audio` reads it (the library then
// downmixes, resamples and loop-tiles those samples exactly as `prepare_waveform` does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct ClipWindow {
  std::vector<float> samples;  // frames x channels, interleaved
  std::uint32_t channels = 1;
  double sample_rate = 0;
  std::uint64_t frames() const { return channels ? samples.size() / channels : 0; }
};

// std::runtime_error with a one-line message naming the file when it is missing, empty, not audio, cut short,
// or when `start` lies past its end.
ClipWindow read_clip_window(const std::string& path, double start);
