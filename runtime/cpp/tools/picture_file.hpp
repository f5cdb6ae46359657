// The example program's picture input (`edit PICTURE`, `--mask`): a picture file decoded to RGB8 pixels and, when
// it has transparency, an alpha channel, as runtime/source_picture.py `load_picture` reads it with Pillow, pixel for
// pixel (tests/test_cpp_picture_files.py holds the two equal). The library takes pixels, never files: this is the
// host program's part.
//
// Formats, each with its Debian library: PNG (libpng), JPEG and MPO (libjpeg-turbo), WebP (libwebp, the first
// frame of an animation through libwebpdemux's animation decoder, as Pillow), GIF (giflib, the first frame),
// TIFF (libtiff, the first page), AVIF (libavif); and BMP, read here by hand: no Debian library reads it as Pillow
// does (stb_image keeps a 32-bit BI_RGB file's fourth byte as alpha where Pillow drops it, and reads no RLE; the
// image toolkits that read BMP bring their own rules for grey palettes, short palettes and RLE), and Pillow's
// BmpImagePlugin is a few hundred lines of rules: the Windows and OS/2 headers (12, 40, 52, 56,
// 64, 108 and 124 bytes), 1-, 4- and 8-bit palettes, 16 bits (5-5-5, or 5-6-5 bit fields), 24, 32 (BI_RGB: the
// fourth byte dropped; bit fields with an alpha mask: alpha kept), RLE8 and RLE4, top-down. As Pillow: 16-bit
// colour keeps each sample's high byte, 16-bit greyscale is rounded (v * 255 / 65535), a palette's transparency
// becomes alpha, CMYK JPEG is taken as Adobe's inverted CMYK, and the EXIF orientation (JPEG APP1, PNG eXIf, WebP
// EXIF, the TIFF tag; AVIF's irot/imir) is applied so phone photos are upright. Not read, where Pillow reads them:
// an orientation given only in XMP or in a PNG's "Raw profile type exif" text; tiled, planar, YCbCr or
// premultiplied-alpha TIFF (refused in one line). Colour profiles are not applied: pixels are taken as sRGB.
//
// Safety: the file is anyone's input. Its size is checked from the header against max_pixels before any pixel is
// decoded, every library is driven from memory with its errors caught (no library message reaches stderr), every
// read of a BMP is bounds-checked against the file's bytes, and a truncated file fails rather than being padded
// (libjpeg's "premature end" warning is an error here, as the missing data is for Pillow; a BMP whose rows or RLE
// data end early fails, as in Pillow). A progressive JPEG of more than kMaxJpegScans scans is refused: real ones
// have about ten, and thousands of tiny scans can cost minutes.
//
// The EXIF orientation is read here, not with libexif: it is one SHORT in the first IFD of a TIFF structure, read
// with bounds checks in a few lines, and libexif would parse the whole block (maker notes included) for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

constexpr std::int64_t kMaxPicturePixels = std::int64_t{1} << 26;  // runtime/source_picture.py MAX_PIXELS: 64 Mi
constexpr int kMaxJpegScans = 500;

// A decoded picture: [H, W, 3] RGB8 row by row and, when the picture has transparency, [H, W] alpha (255 = opaque).
struct PictureFile {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;    // [H, W, 3]
  std::vector<std::uint8_t> alpha;  // [H, W], or empty: the picture has no transparency
};

// A picture that cannot be read: what() is one line naming the file (as runtime/source_picture.py words it), hint()
// what to do about it.
class PictureError : public std::runtime_error {
 public:
  PictureError(const std::string& message, std::string hint) : std::runtime_error(message), hint_(std::move(hint)) {}
  const std::string& hint() const noexcept { return hint_; }

 private:
  std::string hint_;
};

// The picture in the file at `path`. Throws PictureError: missing, a folder, unreadable, empty, not a picture in a
// format read here, over max_pixels (from its header), zero-size, truncated or corrupt.
PictureFile read_picture(const std::string& path, std::int64_t max_pixels = kMaxPicturePixels);

// The picture in a file's bytes, `label` naming it in errors (the fuzz harness's entry).
PictureFile decode_picture(const std::uint8_t* data, std::size_t size, const std::string& label,
                           std::int64_t max_pixels = kMaxPicturePixels);
