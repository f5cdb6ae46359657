// The user's own picture (and mask) for edit: fitting them to the engines' frame, their engine tensors, and putting
// the result back, as runtime/source_picture.py computes them (tests/test_cpp_edit_pieces.py holds the two equal,
// byte for byte).
//
// Place in the data flow of edit (SDEdit: the picture is encoded, noised to a strength, then denoised with the
// sound's prompt): pixels (RGB8 and an optional alpha, from the caller: the library reads no picture files) ->
// mask_from_pixels -> Framing::fit -> Framing::to_engine, Framing::mask_to_engine -> to_engine_image, latent_mask
// -> VAE encoder -> noise (schedulers.hpp add_noise) -> denoise -> decode -> RGB8 frame -> Framing::from_engine ->
// composite -> the picture at its own size, its alpha put back.
//
// Fitting ("fit, reflect the margins"): the picture is scaled uniformly to fit inside the engines' fixed frame, its
// long side (relative to the frame's aspect) filling it, centred; the margins mirror the content at its edges (numpy
// "reflect", then "edge" for what a margin needs beyond one mirror image). from_engine crops the margins away and
// scales the content back to the picture's size. Resizing is Lanczos for pictures, as Pillow's
// Image.resize(LANCZOS) does it (separable, support 3, each pass rounded to 8 bits with Pillow's fixed-point
// coefficients: the same bytes), and nearest for masks (the pixel under each output pixel's centre, in integers).
// Engine tensors: to_engine_image is diffusers' preprocessing (x / 255 * 2 - 1, [3, h, w]); latent_mask is
// torch.nn.functional.interpolate(mode="nearest") of the binarised mask (source index floor(i * float32(in / out))).
// composite keeps every black (keep) pixel of the mask exactly the user's, the edit showing through the white region
// with a feathered edge inside it (chessboard distance, grown by 3x3 erosions).
//
// Written here: Pillow's resampler is Python's (no C library gives its bytes; libswscale and stb_image_resize
// round differently), and the rest is a few lines of index arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace atrt {

constexpr std::int64_t kMaxPicturePixels = std::int64_t{1} << 26;  // runtime/source_picture.py MAX_PIXELS: 64 Mi

// A picture as [H, W, 3] RGB8 (row by row) and, when it has transparency, [H, W] alpha (255 = opaque).
struct Pixels {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;    // [H, W, 3]
  std::vector<std::uint8_t> alpha;  // [H, W], or empty: opaque
};

// CONFIG error, runtime/source_picture.py's text naming `label`, for a picture of no pixels or of more than
// `max_pixels` (checked from a file's header, before decoding).
void check_picture_size(std::int64_t width, std::int64_t height, const std::string& label,
                        std::int64_t max_pixels = kMaxPicturePixels);

// A mask read as runtime/source_picture.py load_mask reads it: grey as Pillow's convert("L"), times alpha (a
// transparent pixel counts as black), >= 50% grey may change (1), darker is kept (0); a mask of another size than
// the picture's (width x height) is stretched to it (nearest) and `note` says so. CONFIG error naming `label` when
// no pixel may change, or when its white parts vanish in the stretch.
struct Mask {
  std::vector<float> may_change;  // [H, W] in {0, 1}, at the picture's size
  std::string note;               // what was done to fit it, for the user; empty when nothing was
};
Mask mask_from_pixels(const Pixels& mask, int width, int height, const std::string& name, const std::string& label);

// Where a picture sits in the engines' frame: scaled to fit, centred, margins mirrored. Sizes are width, height.
struct Framing {
  int picture_w = 0, picture_h = 0;  // the user's picture
  int engine_w = 0, engine_h = 0;    // the engines' frame
  int content_w = 0, content_h = 0;  // the picture scaled to fit inside the frame
  int left = 0, top = 0;             // the content's place in the frame; the rest is margin

  // Scale the picture uniformly to fit inside the frame, its long side filling it (the other side rounded, at
  // least 1), and centre it. INTERNAL error for a size below 1.
  static Framing fit(int picture_w, int picture_h, int engine_w, int engine_h);
  // The picture [H, W, 3] -> the frame [h, w, 3]: Lanczos resize, margins mirrored.
  std::vector<std::uint8_t> to_engine(const std::vector<std::uint8_t>& rgb) const;
  // A mask [H, W] in {0, 1} -> the frame [h, w]: nearest resize, margins 0 (keep).
  std::vector<float> mask_to_engine(const std::vector<float>& may_change) const;
  // The edited frame [h, w, 3] -> [H, W, 3]: margins cropped, Lanczos resize back to the picture's size.
  std::vector<std::uint8_t> from_engine(const std::vector<std::uint8_t>& edited) const;
};

// [in_h, in_w, channels] uint8 -> [out_h, out_w, channels] as Pillow's resize(LANCZOS) (a copy at the same size).
std::vector<std::uint8_t> resize_lanczos(const std::vector<std::uint8_t>& pixels, int in_w, int in_h, int channels,
                                         int out_w, int out_h);
// [in_h, in_w] -> [out_h, out_w], each output pixel the input pixel under its centre: floor((i + 0.5) * in / out).
std::vector<float> resize_nearest(const std::vector<float>& values, int in_w, int in_h, int out_w, int out_h);
// A frame [h, w, 3] uint8 -> the VAE encoder's input [3, h, w] float32 in [-1, 1] (x / 255 * 2 - 1, in float32).
std::vector<float> to_engine_image(const std::vector<std::uint8_t>& rgb, int width, int height);
// A frame's mask [h, w] -> [lh, lw] in {0, 1}: binarised (>= 0.5), then torch's nearest interpolation.
std::vector<float> latent_mask(const std::vector<float>& may_change, int width, int height, int latent_w,
                               int latent_h);
// The edit's weight [H, W] for a mask's white pixels (`white`: 1 may change): min(d / feather, 1), d a white pixel's
// chessboard distance to the nearest black one (1 next to it; the picture's outside counts as white), 0 on black;
// `white` itself at feather 0.
std::vector<float> feathered_weight(const std::vector<std::uint8_t>& white, int width, int height, int feather);
// The final picture's RGB [H, W, 3]: `edited` where the mask lets it change, the source's pixels elsewhere, with
// a feathered edge (runtime/source_picture.py composite); without a mask (`may_change` null), `edited` itself. The
// source's alpha, when it has one, goes with it unchanged (Pixels::alpha). INTERNAL error for a negative feather.
std::vector<std::uint8_t> composite(const std::vector<std::uint8_t>& edited, const Pixels& source,
                                    const std::vector<float>* may_change, int feather);

}  // namespace atrt
