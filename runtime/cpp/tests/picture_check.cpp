// Test driver of the example program's picture reader (tools/picture_file.cpp), for
// tests/test_cpp_picture_files.py: `audiotoken-rt-cpp-picture-check OUT_DIR MAX_PIXELS FILE...` reads each FILE
// with read_picture and answers one JSON line each, in order: {"width", "height", "alpha"} with the pixels in
// OUT_DIR/<index>.rgb ([H, W, 3]) and OUT_DIR/<index>.alpha ([H, W], when the picture has transparency), or
// {"error", "hint"}. One process reads the whole corpus (a sanitized start costs more than a picture).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "picture_file.hpp"

namespace {

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
      out += escaped;
    } else {
      out += c;  // UTF-8 passes through; other bytes are the test's to avoid
    }
  }
  return out + "\"";
}

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR MAX_PIXELS FILE...\n", argv[0]);
    return 2;
  }
  const std::string out_dir = argv[1];
  const std::int64_t max_pixels = std::strtoll(argv[2], nullptr, 10);
  for (int i = 3; i < argc; ++i) {
    const std::string index = std::to_string(i - 3);
    try {
      const PictureFile picture = read_picture(argv[i], max_pixels);
      write_bytes(out_dir + "/" + index + ".rgb", picture.rgb);
      if (!picture.alpha.empty()) write_bytes(out_dir + "/" + index + ".alpha", picture.alpha);
      std::printf("{\"width\": %d, \"height\": %d, \"alpha\": %s}\n", picture.width, picture.height,
                  picture.alpha.empty() ? "false" : "true");
    } catch (const PictureError& e) {
      std::printf("{\"error\": %s, \"hint\": %s}\n", json_string(e.what()).c_str(), json_string(e.hint()).c_str());
    }
  }
  return 0;
}
