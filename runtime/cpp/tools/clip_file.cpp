// read_clip_window: libsndfile decoding of a clip's window (see clip_file.hpp).
#include "clip_file.hpp"

#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "audiotoken_rt.h"

namespace fs = std::filesystem;

namespace {

constexpr sf_count_t kUnknownFrames = sf_count_t{1} << 62;  // libsndfile's count for a stream of unknown length
const char* const kReexport = " (hint: the file was cut short or damaged: re-export or re-download it)";

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw std::runtime_error(path + ": " + why);
}

std::string past_end(double start, double seconds) {
  std::ostringstream text;
  text << "--start " << start << " s is past the end of the clip (" << std::round(seconds * 1000) / 1000 << " s long)";
  return text.str();
}

}  // namespace

ClipWindow read_clip_window(const std::string& path, double start) {
  if (!(start >= 0 && std::isfinite(start))) {
    std::ostringstream text;
    text << "--start must be a finite number of seconds >= 0, got " << start;
    refuse(path, text.str());
  }
  std::error_code error;
  if (!fs::exists(path, error)) refuse(path, "no such file");
  if (fs::is_directory(path, error)) refuse(path, "is a directory, expected an audio file");
  if (fs::file_size(path, error) == 0) refuse(path, std::string("file is empty (0 bytes)") + kReexport);
  SF_INFO info{};
  SNDFILE* file = sf_open(fs::absolute(path).c_str(), SFM_READ, &info);
  if (file == nullptr) refuse(path, std::string("not a recognised audio file (") + sf_strerror(nullptr) + ")");
  ClipWindow clip;
  clip.channels = static_cast<std::uint32_t>(info.channels);
  clip.sample_rate = info.samplerate;
  if (info.samplerate < ATRT_MIN_SAMPLE_RATE || info.samplerate > ATRT_MAX_SAMPLE_RATE) {
    sf_close(file);
    refuse(path, "sample rate " + std::to_string(info.samplerate) + " Hz is outside " +
                     std::to_string(ATRT_MIN_SAMPLE_RATE) + ".." + std::to_string(ATRT_MAX_SAMPLE_RATE) + " Hz");
  }
  const sf_count_t total = info.frames;
  const bool known = total < kUnknownFrames;
  const bool mp3 = (info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG;
  const double first_exact = std::nearbyint(start * clip.sample_rate);  // halves to even
  if (first_exact >= static_cast<double>(kUnknownFrames)) {
    sf_close(file);
    refuse(path, past_end(start, static_cast<double>(total) / clip.sample_rate));
  }
  const auto first = static_cast<sf_count_t>(first_exact);
  if (known && total > 0 && total <= first) {
    sf_close(file);
    refuse(path, past_end(start, static_cast<double>(total) / clip.sample_rate));
  }
  const auto wanted =
      static_cast<sf_count_t>(std::ceil((ATRT_CLIP_SECONDS + ATRT_RESAMPLE_MARGIN_SECONDS) * clip.sample_rate));
  const sf_count_t frames = known ? std::min(total - first, wanted) : wanted;
  if (static_cast<std::uint64_t>(std::max<sf_count_t>(frames, 0)) * clip.channels > kMaxWindowSamples) {
    sf_close(file);
    refuse(path, "its window holds " + std::to_string(frames) + " frames of " + std::to_string(clip.channels) +
                     " channels, more than " + std::to_string(kMaxWindowSamples) +
                     " samples (hint: decode it to fewer channels first)");
  }
  if (first > 0 && sf_seek(file, first, SEEK_SET) < 0) {
    sf_close(file);
    refuse(path, std::string("cannot seek to the window (") + sf_strerror(file) + ")");
  }
  clip.samples.resize(static_cast<std::size_t>(std::max<sf_count_t>(frames, 0)) * clip.channels);
  const sf_count_t got = frames > 0 ? sf_readf_float(file, clip.samples.data(), frames) : 0;
  sf_close(file);
  clip.samples.resize(static_cast<std::size_t>(got) * clip.channels);
  if (known && !mp3 && got < frames) {
    std::ostringstream why;
    why << "file is truncated: decoding stopped at frame " << first + got << " of the " << total
        << " frames its header promises" << kReexport;
    refuse(path, why.str());
  }
  if (first > 0 && got == 0) refuse(path, "--start lies past the end of the clip");
  return clip;
}
