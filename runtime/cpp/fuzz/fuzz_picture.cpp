// libFuzzer harness: any bytes as a picture file -> the example program's reader, decode_picture
// (tools/picture_file.cpp: format sniffing, then libpng, libjpeg-turbo, libwebp, giflib, libtiff, libavif or the BMP
// reader written there, the size check, Pillow's conversions and the EXIF orientation). Its one-line PictureError
// is the answer to bad bytes; any other exception, a crash, a leak or undefined behaviour in our code is a finding
// (tests/test_cpp.py, `just fuzz`). The limit is 2**20 pixels here, so that an input cannot spend the run's memory
// on one big picture.
#include <cstdint>

#include "picture_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const PictureFile picture = decode_picture(data, size, "picture", std::int64_t{1} << 20);
    const auto pixels = static_cast<std::size_t>(picture.width) * static_cast<std::size_t>(picture.height);
    if (picture.rgb.size() != 3 * pixels || (!picture.alpha.empty() && picture.alpha.size() != pixels)) {
      __builtin_trap();  // a picture whose buffers disagree with its size
    }
  } catch (const PictureError&) {
  }
  return 0;
}
