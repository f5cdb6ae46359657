// read_picture: each format's Debian library driven from memory (BMP read by hand, after Pillow's BmpImagePlugin),
// then Pillow's conversions and the EXIF orientation (see picture_file.hpp).
//
// libpng and libjpeg report errors by longjmp: each step that may raise one is a function holding only plain
// pointers (nothing with a destructor lives between its setjmp and the library's longjmp), and the decoder's state
// lives in the caller, released by a destructor once the step has returned.
#include "picture_file.hpp"

#include <avif/avif.h>
#include <gif_lib.h>
#include <jpeglib.h>
// jpeglib.h first: jerror.h uses its types
#include <jerror.h>
#include <png.h>
#include <tiffio.h>
#include <webp/demux.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

namespace fs = std::filesystem;

namespace {

const char* const kHintReexport =
    "the file was cut short or damaged (interrupted copy or download?): re-export or re-download it";
const char* const kHintScaleDown = "scale it down first (the engines work at about 512x512)";

[[noreturn]] void refuse(const std::string& message, const std::string& hint) { throw PictureError(message, hint); }

// runtime/source_picture.py's words for a file Pillow does not identify.
[[noreturn]] void unrecognised(const std::string& label) {
  refuse(label + ": not a picture in a format read here (PNG, JPEG, WebP, AVIF, GIF, BMP or TIFF), or damaged beyond "
                 "recognition",
         "save or convert it as PNG or JPEG");
}

[[noreturn]] void corrupt(const std::string& label, const std::string& detail) {
  refuse(label + ": cannot decode the picture (" + detail + "): the file is truncated or corrupt", kHintReexport);
}

// runtime/source_picture.py _check_size, word for word: a zero-size picture, or one over max_pixels.
void check_size(const std::string& label, std::int64_t width, std::int64_t height, std::int64_t max_pixels) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width < 1 || height < 1) refuse(label + ": the picture is " + size + " pixels: it is empty", kHintReexport);
  if (width > max_pixels / height) {  // width * height > max_pixels, without overflow (BMP sizes reach 2**32 each)
    char pixels[32], limit[32];
    // Python's :.3g of width * height / 1e6: the product rounded once to a double, as Python's int to float
    std::snprintf(pixels, sizeof pixels, "%.3g", static_cast<double>(width) * static_cast<double>(height) / 1e6);
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
  if (d.png == nullptr || d.info == nullptr) {
    refuse(label + ": not enough memory to decode the picture", kHintScaleDown);
  }
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

// --- WebP (libwebp) ---------------------------------------------------------------------------------------------

// As Pillow: the first frame through the animation decoder (a still picture is an animation of one frame), over
// a transparent canvas, RGBA not premultiplied; alpha kept when the file's feature flags say it has some.
PictureFile read_webp(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  const WebPData bytes{data, size};
  const std::unique_ptr<WebPDemuxer, void (*)(WebPDemuxer*)> demux(WebPDemux(&bytes), WebPDemuxDelete);
  if (!demux) corrupt(label, "not a complete WebP file");
  const std::uint32_t width = WebPDemuxGetI(demux.get(), WEBP_FF_CANVAS_WIDTH);
  const std::uint32_t height = WebPDemuxGetI(demux.get(), WEBP_FF_CANVAS_HEIGHT);
  const bool has_alpha = (WebPDemuxGetI(demux.get(), WEBP_FF_FORMAT_FLAGS) & ALPHA_FLAG) != 0;
  check_size(label, width, height, max_pixels);
  int orientation = 1;
  WebPChunkIterator exif;
  if (WebPDemuxGetChunk(demux.get(), "EXIF", 1, &exif)) {
    orientation = exif_orientation(exif.chunk.bytes, exif.chunk.size);
    WebPDemuxReleaseChunkIterator(&exif);
  }
  WebPAnimDecoderOptions options;
  if (!WebPAnimDecoderOptionsInit(&options)) corrupt(label, "libwebp's version does not match its headers");
  options.color_mode = MODE_RGBA;
  options.use_threads = 0;
  const std::unique_ptr<WebPAnimDecoder, void (*)(WebPAnimDecoder*)> decoder(WebPAnimDecoderNew(&bytes, &options),
                                                                             WebPAnimDecoderDelete);
  std::uint8_t* frame = nullptr;
  int timestamp = 0;
  if (!decoder || !WebPAnimDecoderGetNext(decoder.get(), &frame, &timestamp)) {
    corrupt(label, "the WebP data does not decode");
  }
  PictureFile picture;
  picture.width = static_cast<int>(width);
  picture.height = static_cast<int>(height);
  split_rgba(std::vector<std::uint8_t>(frame, frame + 4 * area(picture.width, picture.height)), picture);
  if (!has_alpha) picture.alpha.clear();
  apply_orientation(picture, orientation);
  return picture;
}

// --- GIF (giflib) -----------------------------------------------------------------------------------------------

struct GifInput {
  const std::uint8_t* data;
  std::size_t size, at;
};

int gif_read_memory(GifFileType* gif, GifByteType* out, int count) {
  auto* input = static_cast<GifInput*>(gif->UserData);
  const std::size_t taken = std::min(static_cast<std::size_t>(std::max(count, 0)), input->size - input->at);
  std::memcpy(out, input->data + input->at, taken);
  input->at += taken;
  return static_cast<int>(taken);
}

void gif_close(GifFileType* gif) {
  int error = 0;
  DGifCloseFile(gif, &error);
}

// As Pillow's GifImagePlugin reads the first frame: the canvas is the logical screen (grown to hold the frame),
// filled with the frame's transparent index, else index 0; the frame's colour table, else the global one (none, or
// a grey ramp: the indices are grey levels); the transparent index (of the graphic control extension before the
// frame) becomes alpha.
PictureFile read_gif(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  GifInput input{data, size, 0};
  int error = 0;
  const std::unique_ptr<GifFileType, void (*)(GifFileType*)> gif(DGifOpen(&input, gif_read_memory, &error), gif_close);
  if (!gif) corrupt(label, GifErrorString(error));
  auto failed = [&]() { corrupt(label, GifErrorString(gif->Error) ? GifErrorString(gif->Error) : "GIF error"); };
  int transparent = -1;
  for (;;) {
    GifRecordType record;
    if (DGifGetRecordType(gif.get(), &record) == GIF_ERROR) failed();
    if (record == TERMINATE_RECORD_TYPE) corrupt(label, "no picture in the GIF");
    if (record == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* block = nullptr;
      if (DGifGetExtension(gif.get(), &code, &block) == GIF_ERROR) failed();
      if (code == GRAPHICS_EXT_FUNC_CODE && block != nullptr && block[0] >= 4) {
        transparent = (block[1] & 1) ? block[4] : -1;
      }
      while (block != nullptr) {
        if (DGifGetExtensionNext(gif.get(), &block) == GIF_ERROR) failed();
      }
      continue;
    }
    if (record != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif.get()) == GIF_ERROR) failed();
    const GifImageDesc& frame = gif->Image;
    const int width = std::max(gif->SWidth, frame.Left + frame.Width);
    const int height = std::max(gif->SHeight, frame.Top + frame.Height);
    check_size(label, width, height, max_pixels);
    std::vector<GifPixelType> indices(area(width, height),
                                      static_cast<GifPixelType>(transparent >= 0 ? transparent : 0));
    std::vector<GifPixelType> line(static_cast<std::size_t>(frame.Width));
    auto read_row = [&](int row) {
      if (DGifGetLine(gif.get(), line.data(), frame.Width) == GIF_ERROR) failed();
      std::copy(line.begin(), line.end(),
                indices.begin() +
                    static_cast<std::ptrdiff_t>(area(width, frame.Top + row) + static_cast<std::size_t>(frame.Left)));
    };
    if (frame.Interlace) {
      for (const auto& [first, step] : {std::pair{0, 8}, std::pair{4, 8}, std::pair{2, 4}, std::pair{1, 2}}) {
        for (int row = first; row < frame.Height; row += step) read_row(row);
      }
    } else {
      for (int row = 0; row < frame.Height; ++row) read_row(row);
    }
    const ColorMapObject* colours = frame.ColorMap != nullptr ? frame.ColorMap : gif->SColorMap;
    PictureFile picture;
    picture.width = width;
    picture.height = height;
    picture.rgb.resize(3 * indices.size());
    if (transparent >= 0) picture.alpha.resize(indices.size());
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const int index = indices[k];
      std::uint8_t* rgb = &picture.rgb[3 * k];
      if (colours != nullptr && index < colours->ColorCount) {
        rgb[0] = colours->Colors[index].Red;
        rgb[1] = colours->Colors[index].Green;
        rgb[2] = colours->Colors[index].Blue;
      } else {
        std::fill_n(rgb, 3, static_cast<std::uint8_t>(index));
      }
      if (transparent >= 0) picture.alpha[k] = index == transparent ? 0 : 255;
    }
    return picture;
  }
}

// --- TIFF (libtiff) ---------------------------------------------------------------------------------------------

struct TiffInput {
  const std::uint8_t* data;
  std::size_t size;
  toff_t at;
  char message[256];
};

tmsize_t tiff_read(thandle_t handle, void* out, tmsize_t count) {
  auto* input = static_cast<TiffInput*>(handle);
  if (count < 0 || input->at >= input->size) return 0;
  const std::size_t taken =
      std::min(static_cast<std::size_t>(count), static_cast<std::size_t>(input->size - input->at));
  std::memcpy(out, input->data + input->at, taken);
  input->at += taken;
  return static_cast<tmsize_t>(taken);
}
tmsize_t tiff_write(thandle_t, void*, tmsize_t) { return 0; }
toff_t tiff_seek(thandle_t handle, toff_t offset, int whence) {
  auto* input = static_cast<TiffInput*>(handle);
  const toff_t base = whence == SEEK_CUR ? input->at : whence == SEEK_END ? input->size : 0;
  if (offset > std::numeric_limits<toff_t>::max() - base) return static_cast<toff_t>(-1);
  input->at = base + offset;
  return input->at;
}
int tiff_close(thandle_t) { return 0; }
toff_t tiff_size(thandle_t handle) { return static_cast<TiffInput*>(handle)->size; }
int tiff_on_error(TIFF*, void* handle, const char*, const char* format, va_list arguments) {
  auto* input = static_cast<TiffInput*>(handle);
  if (input->message[0] == '\0') std::vsnprintf(input->message, sizeof input->message, format, arguments);
  return 1;
}
int tiff_on_warning(TIFF*, void*, const char*, const char*, va_list) { return 1; }

// The first page, the layouts Pillow writes and most tools do, in contiguous samples: greyscale (1, 8 bits, with an
// extra alpha sample; 16 bits, rounded), RGB (8 or 16 bits, 16 cut to the high byte as Pillow's RGB;16), RGBA with
// unassociated alpha, palette (1..8 bits; its 16-bit entries cut to the high byte, as Pillow does) and CMYK
// (8 bits, as stored: not inverted). Others (tiled, planar, YCbCr, premultiplied alpha, 32-bit) are refused.
PictureFile read_tiff(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  TiffInput input{data, size, 0, ""};
  const std::unique_ptr<TIFFOpenOptions, void (*)(TIFFOpenOptions*)> options(TIFFOpenOptionsAlloc(),
                                                                             TIFFOpenOptionsFree);
  if (!options) refuse(label + ": not enough memory to decode the picture", kHintScaleDown);
  TIFFOpenOptionsSetErrorHandlerExtR(options.get(), tiff_on_error, &input);
  TIFFOpenOptionsSetWarningHandlerExtR(options.get(), tiff_on_warning, nullptr);
  TIFFOpenOptionsSetMaxSingleMemAlloc(options.get(), tmsize_t{1} << 30);
  const std::unique_ptr<TIFF, void (*)(TIFF*)> tiff(
      TIFFClientOpenExt(label.c_str(), "rm", &input, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size, nullptr,
                        nullptr, options.get()),
      TIFFClose);
  auto failed = [&](const char* what) { corrupt(label, input.message[0] ? input.message : what); };
  if (!tiff) failed("not a readable TIFF");
  std::uint32_t width = 0, height = 0;
  std::uint16_t bits = 1, samples = 1, photometric = 0, planar = PLANARCONFIG_CONTIG, orientation = 1;
  std::uint16_t extra_count = 0;
  std::uint16_t* extra_types = nullptr;
  TIFFGetField(tiff.get(), TIFFTAG_IMAGEWIDTH, &width);
  TIFFGetField(tiff.get(), TIFFTAG_IMAGELENGTH, &height);
  TIFFGetFieldDefaulted(tiff.get(), TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(tiff.get(), TIFFTAG_SAMPLESPERPIXEL, &samples);
  TIFFGetFieldDefaulted(tiff.get(), TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tiff.get(), TIFFTAG_EXTRASAMPLES, &extra_count, &extra_types);
  if (!TIFFGetField(tiff.get(), TIFFTAG_PHOTOMETRIC, &photometric)) failed("no photometric interpretation");
  TIFFGetField(tiff.get(), TIFFTAG_ORIENTATION, &orientation);
  check_size(label, width, height, max_pixels);
  const int extra = extra_count > 0 && extra_types != nullptr ? extra_types[0] : -1;  // -1: none given
  const bool grey = photometric == PHOTOMETRIC_MINISBLACK || photometric == PHOTOMETRIC_MINISWHITE;
  const bool inverted = photometric == PHOTOMETRIC_MINISWHITE;
  const bool alpha_sample = extra != EXTRASAMPLE_UNSPECIFIED && extra != EXTRASAMPLE_ASSOCALPHA;
  const bool readable =
      !TIFFIsTiled(tiff.get()) && (planar == PLANARCONFIG_CONTIG || samples == 1) &&
      ((grey && samples == 1 && (bits == 1 || bits == 8 || (bits == 16 && !inverted))) ||
       (grey && samples == 2 && bits == 8 && extra != EXTRASAMPLE_ASSOCALPHA) ||
       (photometric == PHOTOMETRIC_RGB && (samples == 3 || (samples == 4 && extra != EXTRASAMPLE_ASSOCALPHA)) &&
        (bits == 8 || bits == 16)) ||
       (photometric == PHOTOMETRIC_PALETTE && samples == 1 && bits <= 8) ||
       (photometric == PHOTOMETRIC_SEPARATED && samples == 4 && bits == 8));
  if (!readable) {
    refuse(label + ": a TIFF of a layout not read here (photometric " + std::to_string(photometric) + ", " +
               std::to_string(samples) + " samples of " + std::to_string(bits) + " bits" +
               (TIFFIsTiled(tiff.get()) ? ", tiled" : "") + ")",
           "save or convert it as PNG or JPEG");
  }
  std::uint16_t *reds = nullptr, *greens = nullptr, *blues = nullptr;
  if (photometric == PHOTOMETRIC_PALETTE && !TIFFGetField(tiff.get(), TIFFTAG_COLORMAP, &reds, &greens, &blues)) {
    failed("a palette TIFF without its colour map");
  }
  PictureFile picture;
  picture.width = static_cast<int>(width);
  picture.height = static_cast<int>(height);
  const bool has_alpha = (samples == 2 || (samples == 4 && photometric == PHOTOMETRIC_RGB)) && alpha_sample;
  picture.rgb.resize(3 * area(picture.width, picture.height));
  if (has_alpha) picture.alpha.resize(area(picture.width, picture.height));
  const tmsize_t line_size = TIFFScanlineSize(tiff.get());
  if (line_size <= 0) failed("no scanlines");
  std::vector<std::uint8_t> line(static_cast<std::size_t>(line_size));
  const std::size_t bytes_per_sample = bits == 16 ? 2 : 1;
  for (std::uint32_t row = 0; row < height; ++row) {
    if (TIFFReadScanline(tiff.get(), line.data(), row, 0) < 0) failed("a strip does not decode");
    for (std::uint32_t x = 0; x < width; ++x) {
      const std::size_t k = static_cast<std::size_t>(row) * width + x;
      std::uint8_t* rgb = &picture.rgb[3 * k];
      auto sample = [&](std::size_t s) -> std::uint32_t {  // the x-th pixel's sample s, at 8 or 16 bits
        const std::size_t at = (static_cast<std::size_t>(x) * samples + s) * bytes_per_sample;
        if (bits != 16) return line[at];
        std::uint16_t value;  // libtiff gives 16-bit samples in the machine's byte order
        std::memcpy(&value, &line[at], 2);
        return value;
      };
      auto packed = [&](int depth) -> std::uint32_t {  // the x-th value of `depth` bits, most significant first
        const std::size_t bit = static_cast<std::size_t>(x) * static_cast<std::size_t>(depth);
        const auto shift = static_cast<unsigned>(8 - depth) - static_cast<unsigned>(bit % 8);
        return (std::uint32_t{line[bit / 8]} >> shift) & ((1u << static_cast<unsigned>(depth)) - 1);
      };
      if (photometric == PHOTOMETRIC_PALETTE) {
        const std::uint32_t index = packed(bits);
        rgb[0] = static_cast<std::uint8_t>(reds[index] >> 8);
        rgb[1] = static_cast<std::uint8_t>(greens[index] >> 8);
        rgb[2] = static_cast<std::uint8_t>(blues[index] >> 8);
      } else if (photometric == PHOTOMETRIC_SEPARATED) {
        const auto black = static_cast<std::uint8_t>(sample(3));
        for (std::size_t c = 0; c < 3; ++c) rgb[c] = cmyk_channel(static_cast<std::uint8_t>(sample(c)), black);
      } else if (photometric == PHOTOMETRIC_RGB) {
        for (std::size_t c = 0; c < 3; ++c) rgb[c] = static_cast<std::uint8_t>(bits == 16 ? sample(c) >> 8 : sample(c));
        if (has_alpha) picture.alpha[k] = static_cast<std::uint8_t>(bits == 16 ? sample(3) >> 8 : sample(3));
      } else {
        std::uint8_t level = bits == 1    ? static_cast<std::uint8_t>(packed(1) * 255)
                             : bits == 16 ? round16(sample(0))
                                          : static_cast<std::uint8_t>(sample(0));
        if (inverted) level = static_cast<std::uint8_t>(255 - level);
        std::fill_n(rgb, 3, level);
        if (has_alpha) picture.alpha[k] = static_cast<std::uint8_t>(sample(1));
      }
    }
  }
  apply_orientation(picture, orientation);
  return picture;
}

// --- AVIF (libavif) ---------------------------------------------------------------------------------------------

// The EXIF orientation of an AVIF's irot (turns anti-clockwise) and imir (libavif 0.11's mode: 0, top and bottom
// exchanged; 1, left and right) properties, as Pillow takes it (they override an EXIF orientation).
int avif_orientation(const avifImage& image) {
  const bool turned = (image.transformFlags & AVIF_TRANSFORM_IROT) != 0;
  const bool mirrored = (image.transformFlags & AVIF_TRANSFORM_IMIR) != 0;
  const int turns = turned ? image.irot.angle % 4 : 0;
  const int axis = image.imir.mode;
  static constexpr int kPlain[4] = {1, 8, 3, 6};                          // 0, 90, 180, 270 degrees anti-clockwise
  static constexpr int kMirrored[2][4] = {{4, 5, 2, 7}, {2, 7, 4, 5}};  // then mirrored, mode 0 or 1
  return mirrored ? kMirrored[axis & 1][turns] : kPlain[turns];
}

PictureFile read_avif(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  const std::unique_ptr<avifDecoder, void (*)(avifDecoder*)> decoder(avifDecoderCreate(), avifDecoderDestroy);
  if (!decoder) refuse(label + ": not enough memory to decode the picture", kHintScaleDown);
  decoder->maxThreads = 1;
  decoder->ignoreXMP = AVIF_TRUE;
  avifResult result = avifDecoderSetIOMemory(decoder.get(), data, size);
  if (result == AVIF_RESULT_OK) result = avifDecoderParse(decoder.get());
  if (result != AVIF_RESULT_OK) corrupt(label, avifResultToString(result));
  check_size(label, decoder->image->width, decoder->image->height, max_pixels);
  result = avifDecoderNextImage(decoder.get());
  if (result != AVIF_RESULT_OK) corrupt(label, avifResultToString(result));
  avifRGBImage rgba;
  avifRGBImageSetDefaults(&rgba, decoder->image);
  rgba.format = AVIF_RGB_FORMAT_RGBA;
  rgba.depth = 8;
  PictureFile picture;
  picture.width = static_cast<int>(decoder->image->width);
  picture.height = static_cast<int>(decoder->image->height);
  std::vector<std::uint8_t> pixels(4 * area(picture.width, picture.height));
  rgba.pixels = pixels.data();
  rgba.rowBytes = 4 * decoder->image->width;
  result = avifImageYUVToRGB(decoder->image, &rgba);
  if (result != AVIF_RESULT_OK) corrupt(label, avifResultToString(result));
  split_rgba(pixels, picture);
  if (decoder->image->alphaPlane == nullptr) picture.alpha.clear();
  apply_orientation(picture, avif_orientation(*decoder->image));
  return picture;
}

// --- BMP (by hand: see picture_file.hpp) ------------------------------------------------------------------------
//
// Pillow's BmpImagePlugin, rule for rule: the layouts it reads, how it reads each, and what it refuses (in its
// words, so that the one-line errors are Python's).

constexpr std::uint32_t kBmpRaw = 0, kBmpRle8 = 1, kBmpRle4 = 2, kBmpBitfields = 3;

std::uint32_t le16(const std::uint8_t* at) { return static_cast<std::uint32_t>(at[0] | at[1] << 8); }
std::uint32_t le32(const std::uint8_t* at) { return le16(at) | le16(at + 2) << 16; }

// What a BMP's pixel values are, after Pillow's mode and raw mode for the file.
enum class BmpPixels {
  kPalette,     // "P": 1-, 4- or 8-bit indices into the palette; black past its end
  kGrey,        // "L": the palette is the grey ramp (entry i is (i, i, i)): 8-bit values taken as greys
  kBlackWhite,  // "1": the palette is black (and white): 1-bit values, or bytes (RLE) where non-zero is white
  kRgb555,      // "BGR;15": 16 bits, 5 each, each scaled by 255 / 31 (truncated)
  kRgb565,      // "BGR;16": 16 bits, 5-6-5
  kBgr,         // 24 bits: B, G, R
  kBytes32,     // 32 bits: R, G, B (and alpha) each in a byte of its own, as `channel` says
};

struct BmpLayout {
  std::uint32_t width = 0, height = 0;
  bool top_down = false;          // a negative height: the first row stored is the top one
  std::uint32_t bits = 0;         // per pixel as stored: each row takes ((width * bits + 31) / 32) * 4 bytes
  std::uint32_t compression = 0;  // kBmpRaw, kBmpRle8 or kBmpRle4 (bit fields become `pixels` and `channel`)
  BmpPixels pixels = BmpPixels::kBgr;
  std::uint32_t raw_bits = 0;        // per pixel as Pillow's raw decoder reads a row (for "1" and "L": 1 and 8)
  int channel[4] = {2, 1, 0, -1};    // kBytes32: the byte of R, G, B and alpha in a pixel (-1: no alpha)
  std::uint64_t pixels_at = 0;       // the pixel data's offset in the file (may lie past its end: truncated)
  const std::uint8_t* palette = nullptr;  // kPalette: `entries` B, G, R(, X) entries of `entry_size` bytes
  std::size_t entries = 0, entry_size = 4;
};

// The layouts of 32-bit bit fields Pillow reads (masks R, G, B, alpha) and the byte each channel is in.
struct BmpMasks32 {
  std::uint32_t mask[4];
  int channel[4];
};
constexpr BmpMasks32 kBmpMasks32[] = {
    {{0xFF0000, 0xFF00, 0xFF, 0}, {2, 1, 0, -1}},                  // BGRX
    {{0xFF000000, 0xFF0000, 0xFF00, 0}, {3, 2, 1, -1}},            // XBGR
    {{0xFF000000, 0xFF00, 0xFF, 0}, {3, 1, 0, -1}},                // BGXR
    {{0xFF000000, 0xFF0000, 0xFF00, 0xFF}, {3, 2, 1, 0}},          // ABGR
    {{0xFF, 0xFF00, 0xFF0000, 0xFF000000}, {0, 1, 2, 3}},          // RGBA
    {{0xFF0000, 0xFF00, 0xFF, 0xFF000000}, {2, 1, 0, 3}},          // BGRA
    {{0xFF000000, 0xFF00, 0xFF, 0xFF0000}, {3, 1, 0, 2}},          // BGAR
    {{0, 0, 0, 0}, {2, 1, 0, 3}},                                  // no masks: taken as BGRA
};

// The header (file header, info header of 12, 40, 52, 56, 64, 108 or 124 bytes, bit-field masks, palette), as
// Pillow's BmpImageFile._open reads it: its OSErrors become "cannot decode" lines, what makes Pillow's open fail
// otherwise (too short to hold the sizes it reads, a zero width or height) is "not a picture".
BmpLayout bmp_layout(const std::uint8_t* data, std::size_t size, const std::string& label) {
  if (size < 18) unrecognised(label);  // the 14-byte file header and the info header's size
  const std::uint32_t offset = le32(data + 10);
  const std::uint32_t header_size = le32(data + 14);
  if (header_size > 4 && size - 18 < header_size - 4) corrupt(label, "Truncated File Read");
  const std::uint8_t* header = data + 18;  // the info header after its size
  std::size_t at = 14 + std::size_t{header_size};  // where the reading goes on: bit-field masks, palette
  BmpLayout layout;
  std::uint32_t colours = 0;  // palette entries: the header's count, or 0 for 2**bits
  std::uint32_t masks[4] = {0, 0, 0, 0};
  if (header_size == 12) {  // OS/2 1.x and Windows 2 core header: 16-bit sizes, 3-byte palette entries
    layout.width = le16(header);
    layout.height = le16(header + 2);
    layout.bits = le16(header + 6);
    layout.compression = kBmpRaw;
    layout.entry_size = 3;
  } else if (header_size == 40 || header_size == 52 || header_size == 56 || header_size == 64 || header_size == 108 ||
             header_size == 124) {
    layout.top_down = header[7] == 0xFF;  // as Pillow: a height whose top byte is 0xFF is negative
    layout.width = le32(header);
    layout.height = layout.top_down ? 0u - le32(header + 4) : le32(header + 4);  // 2**32 - h: its magnitude
    layout.bits = le16(header + 10);
    layout.compression = le32(header + 12);
    colours = le32(header + 28);
    if (layout.compression == kBmpBitfields) {
      if (header_size >= 52) {  // the masks are in the header; alpha's too from 56 bytes on
        for (int c = 0; c < (header_size >= 56 ? 4 : 3); ++c) masks[c] = le32(header + 36 + 4 * c);
      } else {  // 40 bytes: three masks follow the header (Pillow: struct.error, not identified, when cut)
        if (size - at < 12) unrecognised(label);
        for (int c = 0; c < 3; ++c) masks[c] = le32(data + at + 4 * static_cast<std::size_t>(c));
        at += 12;
      }
    }
  } else {
    corrupt(label, "Unsupported BMP header type (" + std::to_string(header_size) + ")");
  }
  const std::uint32_t bits = layout.bits;
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32) {
    corrupt(label, "Unsupported BMP pixel depth (" + std::to_string(bits) + ")");
  }
  if (colours == 0) colours = bits <= 8 ? 1u << bits : 0;
  layout.pixels = bits == 16 ? BmpPixels::kRgb555 : bits == 24 ? BmpPixels::kBgr : BmpPixels::kBytes32;
  if (layout.compression == kBmpBitfields) {
    bool known = false;
    if (bits == 32) {
      for (const BmpMasks32& layout32 : kBmpMasks32) {
        if (std::equal(masks, masks + 4, layout32.mask)) {
          std::copy(layout32.channel, layout32.channel + 4, layout.channel);
          known = true;
        }
      }
    } else if (bits == 24) {
      known = masks[0] == 0xFF0000 && masks[1] == 0xFF00 && masks[2] == 0xFF;
    } else if (bits == 16) {
      const bool rgb565 = masks[0] == 0xF800 && masks[1] == 0x7E0 && masks[2] == 0x1F;
      known = rgb565 || (masks[0] == 0x7C00 && masks[1] == 0x3E0 && masks[2] == 0x1F);
      if (rgb565) layout.pixels = BmpPixels::kRgb565;
    }
    if (!known) corrupt(label, "Unsupported BMP bitfields layout");
    layout.compression = kBmpRaw;
  } else if (layout.compression != kBmpRaw && layout.compression != kBmpRle8 && layout.compression != kBmpRle4) {
    corrupt(label, "Unsupported BMP compression (" + std::to_string(layout.compression) + ")");
  }
  layout.raw_bits = bits;
  if (bits <= 8) {  // a palette: Pillow drops it when it is black and white, or the grey ramp
    if (colours > 65536) corrupt(label, "Unsupported BMP Palette size (" + std::to_string(colours) + ")");
    const std::size_t wanted = layout.entry_size * colours;
    const std::size_t stored = std::min(wanted, size - at);  // a short palette is read as far as it goes
    auto entry_is = [&](std::size_t index, std::uint8_t level) {
      const std::uint8_t* entry = data + at + index * layout.entry_size;
      return index * layout.entry_size + 3 <= stored && entry[0] == level && entry[1] == level && entry[2] == level;
    };
    bool grey = true;
    for (std::size_t index = 0; index < colours && grey; ++index) {
      grey = entry_is(index, colours == 2 ? static_cast<std::uint8_t>(index * 255) : static_cast<std::uint8_t>(index));
    }
    if (grey) {
      layout.pixels = colours <= 2 ? BmpPixels::kBlackWhite : BmpPixels::kGrey;
      layout.raw_bits = colours <= 2 ? 1 : 8;  // whatever the stored depth, as Pillow's raw modes "1" and "L"
    } else {
      layout.pixels = BmpPixels::kPalette;
      layout.palette = data + at;
      layout.entries = stored / layout.entry_size;
    }
    at += stored;
  }
  // The pixels: at the file header's offset (past the palette when it points at the palette's start), or, when
  // that is 0, where the header's reading ended.
  std::uint64_t pixels_at = offset;
  if (offset == 14 + std::uint64_t{header_size} && bits <= 8) pixels_at += std::uint64_t{layout.entry_size} * colours;
  layout.pixels_at = offset != 0 ? pixels_at : at;
  if (layout.width == 0 || layout.height == 0) unrecognised(label);  // Pillow: "not identified by this driver"
  return layout;
}

// Pillow's BmpRleDecoder, step for step, quirks included (a run past the row's end is cut, an absolute run is not
// and runs into the next row, a delta moves on through the output, padding is to an even file offset): `count`
// one-byte pixel values at most, in file row order, from the RLE8 or RLE4 data at `at`.
std::vector<std::uint8_t> bmp_rle(const std::uint8_t* data, std::size_t size, std::uint64_t at, std::uint32_t width,
                                  std::size_t count, bool rle4) {
  std::vector<std::uint8_t> out;
  out.reserve(count);
  std::uint64_t x = 0;  // Pillow's column, which absolute runs carry past the row's end
  auto left = [&]() -> std::uint64_t { return at < size ? size - at : 0; };
  while (out.size() < count) {
    if (left() < 2) break;
    const std::uint32_t run = data[at], code = data[at + 1];
    at += 2;
    if (run != 0) {  // a run of one byte (RLE4: of two alternating values)
      std::uint64_t n = x + run > width ? (x < width ? width - x : 0) : run;
      n = std::min<std::uint64_t>(n, count - out.size());
      for (std::uint64_t i = 0; i < n; ++i) {
        out.push_back(static_cast<std::uint8_t>(!rle4 ? code : i % 2 == 0 ? code >> 4 : code & 15));
      }
      x += n;
    } else if (code == 0) {  // end of line: the row is filled with 0
      while (out.size() % width != 0) out.push_back(0);
      x = 0;
    } else if (code == 1) {  // end of the bitmap
      break;
    } else if (code == 2) {  // delta: (right, up) skipped as right + up * width zeros
      if (left() < 2) break;
      const std::uint64_t skipped = data[at] + std::uint64_t{data[at + 1]} * width;
      at += 2;
      out.resize(out.size() + static_cast<std::size_t>(std::min<std::uint64_t>(count - out.size(), skipped)), 0);
      x = out.size() % width;
    } else {  // absolute: `code` values as they are
      const std::size_t n = std::min<std::size_t>(count - out.size(), code);
      const std::uint64_t wanted = rle4 ? (n + 1) / 2 : n;
      const std::uint64_t got = std::min(wanted, left());
      for (std::uint64_t i = 0; i < got; ++i) {
        const std::uint8_t byte = data[at + i];
        if (!rle4) {
          out.push_back(byte);
        } else {
          out.push_back(static_cast<std::uint8_t>(byte >> 4));
          if (2 * i + 1 < n) out.push_back(static_cast<std::uint8_t>(byte & 15));
        }
      }
      at += got;
      if (got < wanted || out.size() == count) break;
      x += code;
      if (at % 2 != 0) ++at;
    }
  }
  return out;
}

PictureFile read_bmp(const std::uint8_t* data, std::size_t size, const std::string& label, std::int64_t max_pixels) {
  const BmpLayout layout = bmp_layout(data, size, label);
  check_size(label, layout.width, layout.height, max_pixels);
  if (layout.entries > 256) corrupt(label, "invalid palette size");
  const bool rle = layout.compression != kBmpRaw;
  const BmpPixels kind = layout.pixels;
  const bool indexed = kind == BmpPixels::kPalette || kind == BmpPixels::kGrey || kind == BmpPixels::kBlackWhite;
  if (rle && !indexed) corrupt(label, "unknown raw mode for given image mode");  // RLE of 16, 24 or 32 bits
  PictureFile picture;
  picture.width = static_cast<int>(layout.width);
  picture.height = static_cast<int>(layout.height);
  const std::size_t width = layout.width, height = layout.height;
  picture.rgb.resize(3 * area(picture.width, picture.height));
  const bool has_alpha = kind == BmpPixels::kBytes32 && layout.channel[3] >= 0;
  if (has_alpha) picture.alpha.resize(area(picture.width, picture.height));
  auto indexed_pixel = [&](std::uint32_t value, std::uint8_t* rgb) {  // a palette index, grey or black and white
    if (kind == BmpPixels::kPalette) {
      if (value >= layout.entries) {  // past the palette's end: black, as Pillow's palette is there
        std::fill_n(rgb, 3, 0);
        return;
      }
      const std::uint8_t* entry = layout.palette + value * layout.entry_size;  // B, G, R
      for (int c = 0; c < 3; ++c) rgb[c] = entry[2 - c];
    } else {
      std::fill_n(rgb, 3, kind == BmpPixels::kGrey ? static_cast<std::uint8_t>(value) : value != 0 ? 255 : 0);
    }
  };
  auto row_of = [&](std::size_t stored_row) { return layout.top_down ? stored_row : height - 1 - stored_row; };
  if (rle) {
    const std::vector<std::uint8_t> values =
        bmp_rle(data, size, layout.pixels_at, layout.width, width * height, layout.compression == kBmpRle4);
    if (values.size() < width * height) corrupt(label, "not enough image data");
    for (std::size_t r = 0; r < height; ++r) {
      for (std::size_t x = 0; x < width; ++x) {
        indexed_pixel(values[r * width + x], &picture.rgb[3 * (row_of(r) * width + x)]);
      }
    }
    return picture;
  }
  const std::uint64_t row_bytes = (std::uint64_t{layout.width} * layout.raw_bits + 7) / 8;  // read of each row
  const std::uint64_t stride = ((std::uint64_t{layout.width} * layout.bits + 31) >> 3) & ~std::uint64_t{3};
  if (row_bytes > stride) corrupt(label, "codec configuration error when reading image file");
  if (layout.pixels_at > size || size - layout.pixels_at < row_bytes ||
      (size - layout.pixels_at - row_bytes) / stride < height - 1) {  // the last row's padding may be missing
    corrupt(label, "image file is truncated");
  }
  for (std::size_t r = 0; r < height; ++r) {
    const std::uint8_t* row = data + layout.pixels_at + r * stride;
    for (std::size_t x = 0; x < width; ++x) {
      const std::size_t k = row_of(r) * width + x;
      std::uint8_t* rgb = &picture.rgb[3 * k];
      switch (kind) {
        case BmpPixels::kPalette:
        case BmpPixels::kGrey:
        case BmpPixels::kBlackWhite: {
          const std::size_t bit = x * layout.raw_bits;  // most significant first
          const auto shift = static_cast<unsigned>(8 - layout.raw_bits - bit % 8);
          indexed_pixel((row[bit / 8] >> shift) & ((1u << layout.raw_bits) - 1), rgb);
          break;
        }
        case BmpPixels::kRgb555:
        case BmpPixels::kRgb565: {
          const std::uint32_t value = le16(row + 2 * x);
          const bool green6 = kind == BmpPixels::kRgb565;
          const std::uint32_t green_max = green6 ? 63 : 31;
          rgb[0] = static_cast<std::uint8_t>((value >> (green6 ? 11 : 10) & 31) * 255 / 31);
          rgb[1] = static_cast<std::uint8_t>((value >> 5 & green_max) * 255 / green_max);
          rgb[2] = static_cast<std::uint8_t>((value & 31) * 255 / 31);
          break;
        }
        case BmpPixels::kBgr:
          for (int c = 0; c < 3; ++c) rgb[c] = row[3 * x + 2 - static_cast<std::size_t>(c)];
          break;
        case BmpPixels::kBytes32:
          for (int c = 0; c < 3; ++c) rgb[c] = row[4 * x + static_cast<std::size_t>(layout.channel[c])];
          if (has_alpha) picture.alpha[k] = row[4 * x + static_cast<std::size_t>(layout.channel[3])];
          break;
      }
    }
  }
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
    case Format::kWebp: return read_webp(data, size, label, max_pixels);
    case Format::kGif: return read_gif(data, size, label, max_pixels);
    case Format::kTiff: return read_tiff(data, size, label, max_pixels);
    case Format::kAvif: return read_avif(data, size, label, max_pixels);
    case Format::kBmp: return read_bmp(data, size, label, max_pixels);
    case Format::kNone: break;
  }
  unrecognised(label);
}

PictureFile read_picture(const std::string& path, std::int64_t max_pixels) {
  std::error_code error;
  if (!fs::exists(path, error)) refuse(path + ": no such file", "check the path and the working directory");
  if (fs::is_directory(path, error)) {
    refuse(path + ": is a directory, expected a picture file", "pass one picture file");
  }
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
