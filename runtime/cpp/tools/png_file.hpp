// The example program's output: RGB8 pictures as PNG files (libpng) with text chunks recording how each was
// drawn ("audiotoken:seed" and so on, as runtime/picture.py save_png writes them), written atomically: a
// temporary file in the same folder, then a rename.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

// std::runtime_error naming the file when it cannot be written.
void write_png(const std::string& path, const std::uint8_t* rgb, int width, int height,
               const std::vector<std::pair<std::string, std::string>>& text);
