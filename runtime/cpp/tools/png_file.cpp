// write_png: libpng's write path (see png_file.hpp).
#include "png_file.hpp"

#include <png.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace {

// libpng reports errors by longjmp: everything that must survive one lives in the caller, this function holds
// only plain pointers. Returns false on a libpng error.
bool encode(std::FILE* file, const std::uint8_t* pixels, int width, int height, int channels, png_text* chunks,
            int chunk_count) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_init_io(png, file);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_text(png, info, chunks, chunk_count);
  png_write_info(png, info);
  for (int row = 0; row < height; ++row) {
    png_write_row(png, pixels + static_cast<std::size_t>(row) * static_cast<std::size_t>(width) *
                               static_cast<std::size_t>(channels));
  }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

void write_png(const std::string& path, const std::uint8_t* pixels, int width, int height,
               const std::vector<std::pair<std::string, std::string>>& text, int channels) {
  const std::string temporary = path + ".partial";
  std::vector<png_text> chunks(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    chunks[i] = png_text{};
    chunks[i].compression = PNG_ITXT_COMPRESSION_NONE;  // UTF-8, as Pillow's add_itxt
    chunks[i].key = const_cast<char*>(text[i].first.c_str());  // libpng's struct is not const-correct
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
  }
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (file == nullptr) throw std::runtime_error(path + ": cannot be written");
  const bool ok = encode(file, pixels, width, height, channels, chunks.data(), static_cast<int>(chunks.size()));
  const bool closed = std::fclose(file) == 0;
  std::error_code error;
  if (!ok || !closed) {
    std::filesystem::remove(temporary, error);
    throw std::runtime_error(path + ": cannot be written (PNG encoding failed)");
  }
  std::filesystem::rename(temporary, path, error);
  if (error) throw std::runtime_error(path + ": cannot be written (" + error.message() + ")");
}
