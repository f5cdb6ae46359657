// read_picture: each format's Debian library driven from memory, then Pillow's conversions and the EXIF
// orientation (see picture_file.hpp).
//
// libpng and libjpeg report errors by longjmp: each step that may raise one is a function holding only plain
// pointers (nothing with a destructor lives between its setjmp and the library's longjmp), and the decoder's state
// lives in the caller, released by a destructor once the step has returned.
#include "picture_file.hpp"

#include <jpeglib.h>
// jpeglib.h first: jerror.h uses its types
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

const char* const kHintReexport =
    "the file was cut short or damaged (interrupted copy or download?): re-export or re-download it";
const char* const kHintScaleDown = "scale it down first (the engines work at about 512x512)";

[[noreturn]] void refuse(const std::string& message, const std::string& hint) { throw PictureError(message, hint); }

[[noreturn]] void corrupt(const std::string& label, const std::string& detail) {
  refuse(label + ": cannot decode the picture (" + detail + "): the file is truncated or corrupt", kHintReexport);
}

// runtime/source_picture.py _check_size, word for word: a zero-size picture, or one over max_pixels.
void check_size(const std::string& label, std::int64_t width, std::int64_t height, std::int64_t max_pixels) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width < 1 || height < 1) refuse(label + ": the picture is " + size + " pixels: it is empty", kHintReexport);
  if (width * height > max_pixels) {
    char pixels[32], limit[32];
    std::snprintf(pixels, sizeof pixels, "%.3g", static_cast<double>(width * height) / 1e6);  // Python's :.3g
    std::snprintf(limit, sizeof limit, "%.3g", static_cast<double>(max_pixels) / 1e6);
    refuse(label + ": the picture is " + size + " (" + pixels + " megapixels), over the limit of " + limit +
               " megapixels",
           kHintScaleDown);
  }
}

std::size_t area(int width, int height) { return static_cast<std::size_t>(width) * static_cast<std::size_t>(height); }

// Round a 16-bit sample to 8 bits as runtime/source_picture.py does (round(v * 255 / 65535), halves up).
std::uint8_t round16(std::uint32_t value) { return static_cast<std::uint8_t>((value * 2 + 257) / 514); }

// --- EXIF orientation -------------------------------------------------------------------------------------------

// The Orientation tag (0x0112) of the first IFD of an EXIF block (a TIFF structure, after an optional "Exif\0\0"),
// as Pillow's getexif reads it: one BYTE, SHORT or LONG; the last such entry wins; 1 (upright) when absent or
// unreadable. Every read is bounds-checked against `size`.
int exif_orientation(const std::uint8_t* data, std::size_t size) {
  if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
    data += 6;
    size -= 6;
  }
  if (size < 8) return 1;
  bool little;
  if (data[0] == 'I' && data[1] == 'I') {
    little = true;
  } else if (data[0] == 'M' && data[1] == 'M') {
    little = false;
  } else {
    return 1;
  }
  auto u16 = [&](std::size_t at) -> std::uint32_t {
    return little ? static_cast<std::uint32_t>(data[at] | data[at + 1] << 8)
                  : static_cast<std::uint32_t>(data[at] << 8 | data[at + 1]);
  };
  auto u32 = [&](std::size_t at) -> std::uint32_t {
    return little ? (u16(at) | u16(at + 2) << 16) : (u16(at) << 16 | u16(at + 2));
  };
  if (u16(2) != 42) return 1;
  const std::size_t ifd = u32(4);
  if (ifd > size - 2) return 1;
  const std::size_t entries = u16(ifd);
  int orientation = 1;
  for (std::size_t i = 0; i < entries; ++i) {
    const std::size_t entry = ifd + 2 + 12 * i;
    if (entry > size - 12) break;
    if (u16(entry) != 0x0112 || u32(entry + 4) != 1) continue;
    const std::uint32_t type = u16(entry + 2);
    if (type == 1) orientation = data[entry + 8];                           // BYTE
    if (type == 3) orientation = static_cast<int>(u16(entry + 8));          // SHORT
    if (type == 4) orientation = static_cast<int>(u32(entry + 8) & 0xffff);  // LONG (2..8 matter)
  }
  return orientation;
}

// ImageOps.exif_transpose: orientation 2..8 flips and turns the picture upright; any other value leaves it.
void apply_orientation(PictureFile& picture, int orientation) {
  if (orientation < 2 || orientation > 8) return;
  const int w = picture.width, h = picture.height;
  const bool swaps = orientation >= 5;  // transpose, rotate 270, transverse, rotate 90: width and height swap
  const int out_w = swaps ? h : w;
  PictureFile out;
  out.width = out_w;
  out.height = swaps ? w : h;
  out.rgb.resize(picture.rgb.size());
  out.alpha.resize(picture.alpha.size());
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      int to_x = x, to_y = y;  // where the source pixel (x, y) goes
      switch (orientation) {
        case 2: to_x = w - 1 - x; break;                     // FLIP_LEFT_RIGHT
        case 3: to_x = w - 1 - x; to_y = h - 1 - y; break;   // ROTATE_180
        case 4: to_y = h - 1 - y; break;                     // FLIP_TOP_BOTTOM
        case 5: to_x = y; to_y = x; break;                   // TRANSPOSE
        case 6: to_x = h - 1 - y; to_y = x; break;           // ROTATE_270 (a quarter turn clockwise)
        case 7: to_x = h - 1 - y; to_y = w - 1 - x; break;   // TRANSVERSE
        default: to_x = y; to_y = w - 1 - x; break;          // 8: ROTATE_90 (a quarter turn counter-clockwise)
      }
      const std::size_t from = static_cast<std::size_t>(y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x);
      const std::size_t to =
          static_cast<std::size_t>(to_y) * static_cast<std::size_t>(out_w) + static_cast<std::size_t>(to_x);
      std::memcpy(&out.rgb[3 * to], &picture.rgb[3 * from], 3);
      if (!out.alpha.empty()) out.alpha[to] = picture.alpha[from];
    }
  }
  picture = std::move(out);
}

// Split interleaved RGBA rows into the picture's RGB and alpha.
void split_rgba(const std::vector<std::uint8_t>& rgba, PictureFile& picture) {
  const std::size_t pixels = area(picture.width, picture.height);
  picture.rgb.resize(3 * pixels);
  picture.alpha.resize(pixels);
  for (std::size_t k = 0; k < pixels; ++k) {
    std::memcpy(&picture.rgb[3 * k], &rgba[4 * k], 3);
    picture.alpha[k] = rgba[4 * k + 3];
  }
}

// --- PNG (libpng) -----------------------------------------------------------------------------------------------

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0, at = 0;
  char message[200] = "";
  bool grey16 = false;  // 16-bit greyscale: kept at 16 bits here, rounded as Pillow's I;16 is
  int channels = 0;     // after the transforms: 2 (grey16, bytes), 3 (RGB) or 4 (RGBA)
  std::uint32_t width = 0, height = 0;
  ~PngDecoder() { png_destroy_read_struct(&png, &info, nullptr); }
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* decoder = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(decoder->message, sizeof decoder->message, "%s", message);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // ancillary-chunk trouble: skipped by libpng, as by Pillow

void png_read_memory(png_structp png, png_bytep out, size_t count) {
  auto* decoder = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (count > decoder->size - decoder->at) png_error(png, "the file ends early");
  std::memcpy(out, decoder->data + decoder->at, count);
  decoder->at += count;
}

// The header, and the transforms to Pillow's 8-bit RGB(A): palette and low-bit grey expanded, tRNS to alpha,
// 16-bit colour cut to its high byte, grey to RGB. 16-bit grey (Pillow's I;16, which ignores tRNS) stays as is.
bool png_header(PngDecoder* d) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  png_set_read_fn(d->png, d, png_read_memory);
  png_read_info(d->png, d->info);
  d->width = png_get_image_width(d->png, d->info);
  d->height = png_get_image_height(d->png, d->info);
  const int colour = png_get_color_type(d->png, d->info);
  const int depth = png_get_bit_depth(d->png, d->info);
  d->grey16 = colour == PNG_COLOR_TYPE_GRAY && depth == 16;
  if (!d->grey16) {
    png_set_expand(d->png);
    png_set_strip_16(d->png);
    png_set_gray_to_rgb(d->png);
  }
  png_set_interlace_handling(d->png);
  png_read_update_info(d->png, d->info);
  d->channels = d->grey16 ? 2 : png_get_channels(d->png, d->info);
  return d->channels == 2 || d->channels == 3 || d->channels == 4;
}

bool png_pixels(PngDecoder* d, png_bytepp rows) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  png_read_image(d->png, rows);
  return true;
}

// The chunks after the pixels (an eXIf may come there). Pillow reads them too but stops quietly at the file's end.
bool png_tail(PngDecoder* d) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  png_read_end(d->png, d->info);
  return true;
}

int png_orientation(PngDecoder* d) {
  png_uint_32 size = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(d->png, d->info, &size, &exif) == 0 || exif == nullptr) return 1;
  return exif_orientation(exif, size);
}

PictureFile read_png(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  PngDecoder d;
  d.data = data;
  d.size = size;
  d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d, png_on_error, png_on_warning);
  if (d.png != nullptr) d.info = png_create_info_struct(d.png);
  if (d.png == nullptr || d.info == nullptr) refuse(label + ": not enough memory to decode the picture", kHintScaleDown);
  if (!png_header(&d)) corrupt(label, d.message[0] ? d.message : "an unsupported PNG layout");
  check_size(label, d.width, d.height, max_pixels);
  PictureFile picture;
  picture.width = static_cast<int>(d.width);
  picture.height = static_cast<int>(d.height);
  const std::size_t stride = static_cast<std::size_t>(d.width) * static_cast<std::size_t>(d.channels);
  std::vector<std::uint8_t> pixels(stride * d.height);
  std::vector<png_bytep> rows(d.height);
  for (std::uint32_t row = 0; row < d.height; ++row) rows[row] = pixels.data() + stride * row;
  if (!png_pixels(&d, rows.data())) corrupt(label, d.message);
  const int orientation = png_tail(&d) ? png_orientation(&d) : 1;
  const std::size_t count = area(picture.width, picture.height);
  if (d.grey16) {
    picture.rgb.resize(3 * count);
    for (std::size_t k = 0; k < count; ++k) {
      const std::uint8_t grey = round16(static_cast<std::uint32_t>(pixels[2 * k] << 8 | pixels[2 * k + 1]));
      std::fill_n(&picture.rgb[3 * k], 3, grey);
    }
  } else if (d.channels == 4) {
    split_rgba(pixels, picture);
  } else {
    picture.rgb = std::move(pixels);
  }
  apply_orientation(picture, orientation);
  return picture;
}

// --- JPEG (libjpeg-turbo) ---------------------------------------------------------------------------------------

struct JpegDecoder {
  jpeg_decompress_struct info{};
  jpeg_error_mgr errors{};
  jpeg_progress_mgr progress{};
  std::jmp_buf jump{};
  char message[JMSG_LENGTH_MAX] = "";
  bool created = false;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&info);
  }
};

JpegDecoder* jpeg_decoder(j_common_ptr info) { return static_cast<JpegDecoder*>(info->client_data); }

void jpeg_on_error(j_common_ptr info) {
  JpegDecoder* decoder = jpeg_decoder(info);
  info->err->format_message(info, decoder->message);
  std::longjmp(decoder->jump, 1);
}

// Warnings pass silently (as in Pillow), but for the data's premature end: Pillow finds the file truncated there.
void jpeg_on_message(j_common_ptr info, int level) {
  if (level == -1 && info->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(info);
}

void jpeg_on_progress(j_common_ptr info) {
  auto* decompress = reinterpret_cast<j_decompress_ptr>(info);
  if (decompress->input_scan_number > kMaxJpegScans) {
    JpegDecoder* decoder = jpeg_decoder(info);
    std::snprintf(decoder->message, sizeof decoder->message, "more than %d progressive scans", kMaxJpegScans);
    std::longjmp(decoder->jump, 1);
  }
}

// The header, APP1 (EXIF) kept, and the output colour space: grey, RGB, or CMYK for CMYK and YCCK files.
bool jpeg_header(JpegDecoder* d, const std::uint8_t* data, std::size_t size) {
  if (setjmp(d->jump)) return false;
  jpeg_create_decompress(&d->info);
  d->created = true;
  jpeg_mem_src(&d->info, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&d->info, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&d->info, TRUE);
  switch (d->info.jpeg_color_space) {
    case JCS_GRAYSCALE: d->info.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK:
    case JCS_YCCK: d->info.out_color_space = JCS_CMYK; break;
    case JCS_RGB:
    case JCS_YCbCr: d->info.out_color_space = JCS_RGB; break;
    default: std::snprintf(d->message, sizeof d->message, "%d colour components", d->info.num_components); return false;
  }
  return true;
}

bool jpeg_pixels(JpegDecoder* d, std::uint8_t* out, std::size_t stride) {
  if (setjmp(d->jump)) return false;
  jpeg_start_decompress(&d->info);
  while (d->info.output_scanline < d->info.output_height) {
    JSAMPROW row = out + stride * d->info.output_scanline;
    jpeg_read_scanlines(&d->info, &row, 1);
  }
  jpeg_finish_decompress(&d->info);
  return true;
}

int jpeg_orientation(const JpegDecoder& d) {
  for (jpeg_saved_marker_ptr marker = d.info.marker_list; marker != nullptr; marker = marker->next) {
    if (marker->marker == JPEG_APP0 + 1 && marker->data_length >= 6 && std::memcmp(marker->data, "Exif\0\0", 6) == 0) {
      return exif_orientation(marker->data, marker->data_length);  // the first EXIF block, as Pillow's
    }
  }
  return 1;
}

// Pillow's cmyk2rgb: each of C, M, Y against K, rounded in its fixed point (MULDIV255).
std::uint8_t cmyk_channel(std::uint8_t colour, std::uint8_t black) {
  const int kept = 255 - black;
  const int product = colour * kept + 128;
  return static_cast<std::uint8_t>(std::clamp(kept - (((product >> 8) + product) >> 8), 0, 255));
}

PictureFile read_jpeg(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  JpegDecoder d;
  d.info.err = jpeg_std_error(&d.errors);
  d.errors.error_exit = jpeg_on_error;
  d.errors.emit_message = jpeg_on_message;
  d.progress.progress_monitor = jpeg_on_progress;
  d.info.progress = &d.progress;
  d.info.client_data = &d;
  if (!jpeg_header(&d, data, size)) corrupt(label, d.message);
  check_size(label, d.info.image_width, d.info.image_height, max_pixels);
  const int orientation = jpeg_orientation(d);  // now: the saved markers go with the decoder's image memory
  const int components = d.info.out_color_space == JCS_RGB ? 3 : d.info.out_color_space == JCS_CMYK ? 4 : 1;
  PictureFile picture;
  picture.width = static_cast<int>(d.info.image_width);
  picture.height = static_cast<int>(d.info.image_height);
  const std::size_t count = area(picture.width, picture.height);
  std::vector<std::uint8_t> pixels(count * static_cast<std::size_t>(components));
  if (!jpeg_pixels(&d, pixels.data(), static_cast<std::size_t>(picture.width) * static_cast<std::size_t>(components))) {
    corrupt(label, d.message);
  }
  if (components == 3) {
    picture.rgb = std::move(pixels);
  } else {
    picture.rgb.resize(3 * count);
    for (std::size_t k = 0; k < count; ++k) {
      if (components == 1) {
        std::fill_n(&picture.rgb[3 * k], 3, pixels[k]);
      } else {  // Pillow reads CMYK JPEG as Adobe's inverted CMYK ("CMYK;I"), then cmyk2rgb
        const std::uint8_t* cmyk = &pixels[4 * k];
        const auto black = static_cast<std::uint8_t>(255 - cmyk[3]);
        for (int c = 0; c < 3; ++c) picture.rgb[3 * k + static_cast<std::size_t>(c)] =
            cmyk_channel(static_cast<std::uint8_t>(255 - cmyk[c]), black);
      }
    }
  }
  apply_orientation(picture, orientation);
  return picture;
}

// --- the formats, told apart by their first bytes as Pillow's plugins do ----------------------------------------

enum class Format { kNone, kPng, kJpeg, kGif, kBmp, kTiff, kWebp, kAvif };

Format sniff(const std::uint8_t* data, std::size_t size) {
  auto starts = [&](const char* magic, std::size_t length, std::size_t at = 0) {
    return size >= at + length && std::memcmp(data + at, magic, length) == 0;
  };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return Format::kPng;
  if (starts("\xff\xd8\xff", 3)) return Format::kJpeg;
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return Format::kGif;
  if (starts("BM", 2)) return Format::kBmp;
  if (starts("II*\0", 4) || starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4)) return Format::kTiff;
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return Format::kWebp;
  if (starts("ftyp", 4, 4) && (starts("avif", 4, 8) || starts("avis", 4, 8) || starts("mif1", 4, 8) ||
                               starts("msf1", 4, 8))) {
    return Format::kAvif;
  }
  return Format::kNone;
}

}  // namespace

PictureFile decode_picture(const std::uint8_t* data, std::size_t size, const std::string& label,
                           std::int64_t max_pixels) {
  switch (sniff(data, size)) {
    case Format::kPng: return read_png(data, size, label, max_pixels);
    case Format::kJpeg: return read_jpeg(data, size, label, max_pixels);
    default: break;
  }
  refuse(label + ": not a picture in a format read here (PNG, JPEG, WebP, AVIF, GIF, BMP or TIFF), or damaged beyond "
                 "recognition",
         "save or convert it as PNG or JPEG");
}

PictureFile read_picture(const std::string& path, std::int64_t max_pixels) {
  std::error_code error;
  if (!fs::exists(path, error)) refuse(path + ": no such file", "check the path and the working directory");
  if (fs::is_directory(path, error)) refuse(path + ": is a directory, expected a picture file", "pass one picture file");
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  const std::streamoff length = file ? static_cast<std::streamoff>(file.tellg()) : -1;
  std::vector<std::uint8_t> data(length > 0 ? static_cast<std::size_t>(length) : 0);
  if (file && length > 0) file.seekg(0).read(reinterpret_cast<char*>(data.data()), length);
  if (!file || length < 0) {
    refuse(path + ": cannot read the file (" + std::strerror(errno) + ")", "make the file readable");
  }
  if (data.empty()) refuse(path + ": file is empty (0 bytes)", kHintReexport);
  return decode_picture(data.data(), data.size(), path, max_pixels);
}
