// prepare_waveform: samples of any rate and channel count -> [160000] floats at 16 kHz (see waveform.hpp).
#include "waveform.hpp"

#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "errors.hpp"
#include "pairwise_sum.hpp"

namespace atrt {
namespace {

constexpr std::uint32_t kMaxChannels = 1024;  // libsndfile's own limit
static_assert(ATRT_CLIP_SECONDS == kClipSeconds, "audiotoken_rt.h's ATRT_CLIP_SECONDS is not runtime/contract.py's");
const float kMaxBelowOne = std::nextafter(1.0f, 0.0f);  // 1 - 2^-24: the top of [-1, 1) in float

std::string seconds_text(double value) {
  std::ostringstream text;
  text << value;
  if (text.str().find_first_of(".en") == std::string::npos) text << ".0";
  return text.str();
}

}  // namespace

std::vector<float> resample_hq(const std::vector<float>& x, double in_rate, double out_rate) {
  soxr_error_t error = nullptr;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  soxr_t resampler = soxr_create(in_rate, out_rate, 1, &error, &io, &quality, nullptr);
  if (error != nullptr) fail(ATRT_AUDIO_ERROR, std::string("cannot resample: ") + error);
  const std::size_t in_size = x.size();
  const auto out_size = static_cast<std::size_t>(static_cast<double>(in_size) * out_rate / in_rate + 1);
  const auto chunk = static_cast<std::size_t>(48000 * in_rate / out_rate);
  std::vector<float> y(out_size, 0.0f);
  std::size_t produced = 0, done = 0;
  for (std::size_t at = 0; at < in_size && error == nullptr; at += chunk) {
    error = soxr_process(resampler, x.data() + at, std::min(chunk, in_size - at), nullptr, y.data() + produced,
                         out_size - produced, &done);
    produced += done;
  }
  if (error == nullptr) {  // flush what the filter still holds
    error = soxr_process(resampler, nullptr, 0, nullptr, y.data() + produced, out_size - produced, &done);
    produced += done;
  }
  soxr_delete(resampler);
  if (error != nullptr) fail(ATRT_AUDIO_ERROR, std::string("cannot resample: ") + error);
  y.resize(produced);
  return y;
}

std::uint64_t window_frames(double sample_rate) {
  return static_cast<std::uint64_t>(std::ceil((ATRT_CLIP_SECONDS + ATRT_RESAMPLE_MARGIN_SECONDS) * sample_rate));
}

std::vector<float> prepare_waveform(const float* samples, std::uint64_t frames, std::uint32_t channels,
                                    double sample_rate, double start, int downmix, const std::string& name) {
  if (downmix < 0 || downmix > 2) {
    fail(ATRT_CONFIG_ERROR,
         "downmix must be one of 'first', 'mean', 'second' (0, 1, 2), got " + std::to_string(downmix),
         "\"first\" keeps channel 0 like the official inference; \"mean\" averages the channels; \"second\" keeps "
         "channel 1");
  }
  if (!(start >= 0 && std::isfinite(start))) {
    fail(ATRT_CONFIG_ERROR, name + ": --start must be a finite number of seconds >= 0, got " + seconds_text(start),
         "the 10 s window begins this many seconds into the clip; 0 reads its first 10 s");
  }
  if (!(sample_rate >= kMinSampleRate && sample_rate <= kMaxSampleRate)) {  // NaN fails too
    fail(ATRT_AUDIO_ERROR,
         name + ": sample rate " + seconds_text(sample_rate) + " Hz is outside " +
             std::to_string(ATRT_MIN_SAMPLE_RATE) + ".." + std::to_string(ATRT_MAX_SAMPLE_RATE) + " Hz",
         "resample the clip, e.g. `ffmpeg -i CLIP -ar 16000 clip.wav`; pass the samples' true rate");
  }
  if (channels < 1 || channels > kMaxChannels) {
    fail(ATRT_AUDIO_ERROR, name + ": expected 1 to " + std::to_string(kMaxChannels) + " interleaved channels, got " +
                               std::to_string(channels));
  }
  if (frames == 0) fail(ATRT_AUDIO_ERROR, name + ": holds no audio samples (0 frames)", "re-export the clip");
  if (samples == nullptr) {
    fail(ATRT_INVALID_ARGUMENT, name + ": samples is NULL for " + std::to_string(frames) + " frames");
  }
  if (frames > UINT64_MAX / sizeof(float) / channels) {  // frames * channels floats would not fit in memory
    fail(ATRT_AUDIO_ERROR, name + ": " + std::to_string(frames) + " frames of " + std::to_string(channels) +
                               " channels is more than memory can hold");
  }
  const double first_exact = std::nearbyint(start * sample_rate);  // Python's round(): halves to even
  if (first_exact >= static_cast<double>(frames)) {
    std::ostringstream length;
    length << std::round(static_cast<double>(frames) / sample_rate * 1000) / 1000;
    fail(ATRT_AUDIO_ERROR,
         name + ": --start " + seconds_text(start) + " s is past the end of the clip (" + length.str() + " s long)",
         "choose a start inside the clip, or 0 for its first 10 s");
  }
  const auto first = static_cast<std::uint64_t>(first_exact);
  const std::uint64_t kept = std::min(frames - first, window_frames(sample_rate));  // the window and the margin
  const float* from = samples + first * channels;
  std::uint64_t bad = 0;
  for (std::uint64_t i = 0; i < kept * channels; ++i) if (!std::isfinite(from[i])) ++bad;
  if (bad) {
    fail(ATRT_AUDIO_ERROR,
         name + ": " + std::to_string(bad) + " of " + std::to_string(kept * channels) +
             " samples are not finite (NaN or Inf)",
         "the clip is corrupt or was written by a buggy tool: re-export it");
  }
  std::vector<float> mono(static_cast<std::size_t>(kept));  // [kept]
  const std::uint32_t pick = downmix == 0 ? 0 : std::min<std::uint32_t>(1, channels - 1);
  for (std::uint64_t i = 0; i < kept; ++i) {
    const float* frame = from + i * channels;
    if (downmix == 1 && channels > 1) {
      float sum = 0.0f;
      for (std::uint32_t c = 0; c < channels; ++c) sum += frame[c];
      mono[static_cast<std::size_t>(i)] = sum / static_cast<float>(channels);
    } else {
      mono[static_cast<std::size_t>(i)] = frame[pick];
    }
  }
  if (sample_rate != kSampleRate) {
    const std::size_t before = mono.size();
    mono = resample_hq(mono, sample_rate, kSampleRate);  // [kept * 16000 / rate]
    if (mono.empty()) {
      fail(ATRT_AUDIO_ERROR, name + ": " + std::to_string(before) + " samples at " + seconds_text(sample_rate) +
                                 " Hz are too few to resample to 16 kHz");
    }
  }
  for (float& value : mono) value = std::min(std::max(value, -1.0f), kMaxBelowOne);
  std::vector<float> waveform(static_cast<std::size_t>(kNSamples));
  for (std::size_t i = 0; i < waveform.size(); ++i) waveform[i] = mono[i % mono.size()];  // loop-tiled
  return waveform;
}

double mean_square(const std::vector<float>& waveform) {
  if (waveform.empty()) return 0.0;
  std::vector<double> squares(waveform.size());
  for (std::size_t i = 0; i < waveform.size(); ++i) {
    const auto value = static_cast<double>(waveform[i]);
    squares[i] = value * value;  // exact: a float's square fits a double's mantissa
  }
  return pairwise_sum(squares.data(), squares.size()) / static_cast<double>(squares.size());
}

}  // namespace atrt
