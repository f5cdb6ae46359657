// The example program's pictures as PNG files (libpng): written with text chunks recording how each was drawn
// ("audiotoken:seed" and so on, as runtime/picture.py save_png writes them), atomically (a temporary file in the
// same folder, then a rename). Pictures are read by picture_file.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

// std::runtime_error naming the file when it cannot be written. `channels`: 3 (RGB8) or 4 (RGBA8).
void write_png(const std::string& path, const std::uint8_t* pixels, int width, int height,
               const std::vector<std::pair<std::string, std::string>>& text, int channels = 3);
