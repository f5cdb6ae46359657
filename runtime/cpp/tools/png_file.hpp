// The example program's pictures as PNG files (libpng): written with text chunks recording how each was drawn
// ("audiotoken:seed" and so on, as runtime/picture.py save_png writes them), atomically (a temporary file in the
// same folder, then a rename); read (edit's picture and mask) with libpng's simplified API, 8 bits per channel.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

// std::runtime_error naming the file when it cannot be written. `channels`: 3 (RGB8) or 4 (RGBA8).
void write_png(const std::string& path, const std::uint8_t* pixels, int width, int height,
               const std::vector<std::pair<std::string, std::string>>& text, int channels = 3);

struct PngPicture {
  int width = 0, height = 0;
  int channels = 3;                 // 3: RGB8; 4: RGBA8 (the file has alpha or a transparent colour)
  std::vector<std::uint8_t> pixels;  // [H, W, channels]
};

// A PNG file as RGB8, or RGBA8 where it has transparency (grey and palette expanded; 16-bit samples scaled to 8
// by libpng). std::runtime_error, one line naming the file, when it is missing, not a PNG, damaged, or of more
// than `max_pixels` pixels (checked from its header, before decoding).
PngPicture read_png(const std::string& path, std::int64_t max_pixels);
