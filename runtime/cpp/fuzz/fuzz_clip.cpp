// libFuzzer harness: any bytes as an audio file -> the example program's reader, read_clip_window
// (tools/clip_file.cpp: libsndfile, the 10 s window, the rate, channel and truncation checks), then the window
// through prepare_waveform (waveform.cpp) as audiotoken-rt-cpp generate hands it to the library. Its one-line
// std::runtime_error or the library's AUDIO error is the answer to bad bytes; any other exception, a crash, a leak
// or undefined behaviour is a finding (tests/test_cpp.py, `just fuzz`).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "clip_file.hpp"
#include "errors.hpp"
#include "waveform.hpp"

namespace fs = std::filesystem;

namespace {

fs::path folder;  // made once per process, removed at a normal exit

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string name = (fs::temp_directory_path() / "atrt-fuzz-clip-XXXXXX").string();  // $TMPDIR: the test's folder
  if (mkdtemp(name.data()) == nullptr) std::abort();
  folder = name;
  std::atexit([] {
    std::error_code error;
    fs::remove_all(folder, error);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path path = folder / "clip";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  const int downmix = static_cast<int>(size % 3);  // first, mean, second: each input picks one
  try {
    const ClipWindow clip = read_clip_window(path.string(), size % 2 ? 0.0 : 0.01);
    atrt::prepare_waveform(clip.samples.data(), clip.frames(), clip.channels, clip.sample_rate, 0.0, downmix,
                           path.string());
  } catch (const atrt::Error&) {  // the two ways bad input may end
  } catch (const std::runtime_error&) {
  }
  return 0;
}
