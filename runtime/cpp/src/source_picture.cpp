// The user's picture for edit: fitting, engine tensors, compositing (see source_picture.hpp). Pillow's Lanczos
// resampler is written from its published algorithm (Resample.c: precompute_coeffs, normalize_coeffs_8bpc and the
// two 8-bit passes): behaviour, not code. Float arithmetic is float32 where numpy's is, so the results are its bytes.
#include "source_picture.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "errors.hpp"

namespace atrt {
namespace {

const char* const kHintReexport =
    "the file was cut short or damaged (interrupted copy or download?): re-export or re-download it";

// format(value, ".3g")
std::string three_digits(double value) {
  char buffer[32];
  const auto done = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::general, 3);
  return std::string(buffer, done.ptr);
}

std::size_t area(int width, int height) { return static_cast<std::size_t>(width) * static_cast<std::size_t>(height); }

void expect(std::size_t got, std::size_t want, const char* what) {
  if (got != want) {
    fail(ATRT_INTERNAL_ERROR, std::string(what) + ": expected " + std::to_string(want) + " values, got " +
                                  std::to_string(got));
  }
}

// --- Pillow's Lanczos resampling --------------------------------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's fixed-point coefficients for 8-bit pictures
constexpr double kLanczosSupport = 3.0;

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos(double x) { return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0; }

// One axis of a resize: for each output pixel the first input pixel it reads, how many, and their fixed-point weights
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> weights;  // [out, ksize]
};

Coefficients coefficients(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = kLanczosSupport * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  std::vector<double> k(static_cast<std::size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);  // truncated, as C's (int)
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = lanczos((x + xmin - center + 0.5) * ss);
      k[static_cast<std::size_t>(x)] = w;
      ww += w;
    }
    for (int x = 0; x < c.ksize; ++x) {
      double w = x < xmax ? k[static_cast<std::size_t>(x)] : 0.0;
      if (x < xmax && ww != 0.0) w /= ww;
      const double fixed = w * (1 << kPrecisionBits);
      c.weights.push_back(static_cast<std::int32_t>(w < 0 ? -0.5 + fixed : 0.5 + fixed));
    }
    c.first.push_back(xmin);
    c.count.push_back(std::max(xmax, 0));
  }
  return c;
}

std::uint8_t clip8(std::int32_t value) {
  const std::int32_t shifted = value >> kPrecisionBits;  // arithmetic shift, as Pillow's lookup index
  return static_cast<std::uint8_t>(std::clamp(shifted, 0, 255));
}

// One pass along rows (horizontal) or columns (vertical) of [rows, cols, channels]
std::vector<std::uint8_t> resample_pass(const std::vector<std::uint8_t>& in, int in_w, int in_h, int channels,
                                        int out_w, int out_h, const Coefficients& c, bool horizontal) {
  std::vector<std::uint8_t> out(area(out_w, out_h) * static_cast<std::size_t>(channels));
  const auto at = [&](int x, int y, int ch) {
    return in[(static_cast<std::size_t>(y) * static_cast<std::size_t>(in_w) + static_cast<std::size_t>(x)) *
                  static_cast<std::size_t>(channels) +
              static_cast<std::size_t>(ch)];
  };
  (void)in_h;
  for (int y = 0; y < out_h; ++y) {
    for (int x = 0; x < out_w; ++x) {
      const int index = horizontal ? x : y;
      const std::int32_t* k = c.weights.data() + static_cast<std::size_t>(index) * static_cast<std::size_t>(c.ksize);
      const int first = c.first[static_cast<std::size_t>(index)], count = c.count[static_cast<std::size_t>(index)];
      for (int ch = 0; ch < channels; ++ch) {
        std::int32_t sum = 1 << (kPrecisionBits - 1);
        for (int j = 0; j < count; ++j) {
          const std::uint8_t v = horizontal ? at(first + j, y, ch) : at(x, first + j, ch);
          sum += static_cast<std::int32_t>(v) * k[j];
        }
        out[(static_cast<std::size_t>(y) * static_cast<std::size_t>(out_w) + static_cast<std::size_t>(x)) *
                static_cast<std::size_t>(channels) +
            static_cast<std::size_t>(ch)] = clip8(sum);
      }
    }
  }
  return out;
}

// numpy "reflect" padding by up to size - 1, then "edge" beyond: the content index a frame index reads
int reflected(int q, int size, int before, int after) {
  const int mirrored_before = std::min(before, size - 1), mirrored_after = std::min(after, size - 1);
  if (q < 0) return std::min(-q, mirrored_before);
  if (q >= size) return size - 1 - std::min(q - (size - 1), mirrored_after);
  return q;
}

// torch's nearest source indices (float32 scale, as its CPU kernel): identity at the same size, i >> 1 at twice
std::vector<int> torch_nearest(int in_size, int out_size) {
  std::vector<int> index(static_cast<std::size_t>(out_size));
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int i = 0; i < out_size; ++i) {
    int source = 0;
    if (out_size == in_size) {
      source = i;
    } else if (out_size == 2 * in_size) {
      source = i >> 1;
    } else {
      source = std::min(static_cast<int>(std::floor(static_cast<float>(i) * scale)), in_size - 1);
    }
    index[static_cast<std::size_t>(i)] = source;
  }
  return index;
}

// One 3x3 erosion: a pixel stays white when its 8 neighbours inside the picture are white
std::vector<std::uint8_t> erode(const std::vector<std::uint8_t>& white, int width, int height) {
  const auto w = static_cast<std::size_t>(width);
  std::vector<std::uint8_t> vertical = white;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const std::size_t k = static_cast<std::size_t>(y) * w + static_cast<std::size_t>(x);
      if (y > 0) vertical[k] &= white[k - w];
      if (y + 1 < height) vertical[k] &= white[k + w];
    }
  }
  std::vector<std::uint8_t> eroded = vertical;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const std::size_t k = static_cast<std::size_t>(y) * w + static_cast<std::size_t>(x);
      if (x > 0) eroded[k] &= vertical[k - 1];
      if (x + 1 < width) eroded[k] &= vertical[k + 1];
    }
  }
  return eroded;
}

bool any(const std::vector<std::uint8_t>& values) {
  return std::any_of(values.begin(), values.end(), [](std::uint8_t v) { return v != 0; });
}

}  // namespace

void check_picture_size(std::int64_t width, std::int64_t height, const std::string& label, std::int64_t max_pixels) {
  if (width < 1 || height < 1) {
    fail(ATRT_CONFIG_ERROR,
         label + ": the picture is " + std::to_string(width) + "x" + std::to_string(height) + " pixels: it is empty",
         kHintReexport);
  }
  if (width > max_pixels / height) {  // width * height > max_pixels, without overflowing
    const double pixels = static_cast<double>(width) * static_cast<double>(height);
    fail(ATRT_CONFIG_ERROR,
         label + ": the picture is " + std::to_string(width) + "x" + std::to_string(height) + " (" +
             three_digits(pixels / 1e6) + " megapixels), over the limit of " +
             three_digits(static_cast<double>(max_pixels) / 1e6) + " megapixels",
         "scale it down first (the engines work at about 512x512), or raise max_pixels");
  }
}

Mask mask_from_pixels(const Pixels& mask, int width, int height, const std::string& name, const std::string& label) {
  const std::size_t pixels = area(mask.width, mask.height);
  expect(mask.rgb.size(), 3 * pixels, "the mask's pixels");
  Mask out;
  out.may_change.resize(pixels);
  for (std::size_t k = 0; k < pixels; ++k) {
    const std::uint8_t* rgb = mask.rgb.data() + 3 * k;
    const auto grey8 = static_cast<std::uint8_t>(
        (static_cast<std::uint32_t>(rgb[0]) * 19595 + static_cast<std::uint32_t>(rgb[1]) * 38470 +
         static_cast<std::uint32_t>(rgb[2]) * 7471 + 0x8000) >>
        16);  // Pillow's RGB -> L
    float grey = static_cast<float>(grey8) / 255.0f;
    if (!mask.alpha.empty()) grey = grey * (static_cast<float>(mask.alpha[k]) / 255.0f);
    out.may_change[k] = grey >= 0.5f ? 1.0f : 0.0f;
  }
  const auto has_white = [](const std::vector<float>& values) {
    return std::any_of(values.begin(), values.end(), [](float v) { return v != 0.0f; });
  };
  if (mask.width != width || mask.height != height) {
    const std::string sizes = std::to_string(mask.width) + "x" + std::to_string(mask.height);
    const std::string picture = std::to_string(width) + "x" + std::to_string(height);
    out.note = name + " is " + sizes + ", the picture " + picture + ": resized to " + picture;
    const bool had_white = has_white(out.may_change);
    out.may_change = resize_nearest(out.may_change, mask.width, mask.height, width, height);
    if (had_white && !has_white(out.may_change)) {
      fail(ATRT_CONFIG_ERROR,
           label + ": its white parts vanish when the " + sizes + " mask is resized to " + picture,
           "make the mask the picture's size, or its white parts larger");
    }
  }
  if (!has_white(out.may_change)) {
    fail(ATRT_CONFIG_ERROR, label + ": the mask is all black (keep everywhere): nothing may change",
         "paint white where the picture may change and black where it must stay; or leave out the mask");
  }
  return out;
}

Framing Framing::fit(int picture_w, int picture_h, int engine_w, int engine_h) {
  if (std::min({picture_w, picture_h, engine_w, engine_h}) < 1) {
    fail(ATRT_INTERNAL_ERROR, "sizes must be positive, got picture " + std::to_string(picture_w) + "x" +
                                  std::to_string(picture_h) + " and engine " + std::to_string(engine_w) + "x" +
                                  std::to_string(engine_h));
  }
  const std::int64_t w = picture_w, h = picture_h, ew = engine_w, eh = engine_h;
  Framing f{picture_w, picture_h, engine_w, engine_h, engine_w, engine_h, 0, 0};
  if (w * eh >= h * ew) {  // relatively wider than the frame: the width fills it
    f.content_h = static_cast<int>(std::max<std::int64_t>(1, (2 * h * ew + w) / (2 * w)));  // round(H * w / W)
  } else {
    f.content_w = static_cast<int>(std::max<std::int64_t>(1, (2 * w * eh + h) / (2 * h)));
  }
  f.left = (engine_w - f.content_w) / 2;
  f.top = (engine_h - f.content_h) / 2;
  return f;
}

std::vector<std::uint8_t> Framing::to_engine(const std::vector<std::uint8_t>& rgb) const {
  expect(rgb.size(), 3 * area(picture_w, picture_h), "the picture");
  const std::vector<std::uint8_t> content = resize_lanczos(rgb, picture_w, picture_h, 3, content_w, content_h);
  std::vector<std::uint8_t> frame(3 * area(engine_w, engine_h));
  const int bottom = engine_h - content_h - top, right = engine_w - content_w - left;
  for (int y = 0; y < engine_h; ++y) {
    const int source_y = reflected(y - top, content_h, top, bottom);
    for (int x = 0; x < engine_w; ++x) {
      const int source_x = reflected(x - left, content_w, left, right);
      const std::size_t from = 3 * (static_cast<std::size_t>(source_y) * static_cast<std::size_t>(content_w) +
                                    static_cast<std::size_t>(source_x));
      const std::size_t to = 3 * (static_cast<std::size_t>(y) * static_cast<std::size_t>(engine_w) +
                                  static_cast<std::size_t>(x));
      std::copy(content.begin() + static_cast<std::ptrdiff_t>(from),
                content.begin() + static_cast<std::ptrdiff_t>(from + 3),
                frame.begin() + static_cast<std::ptrdiff_t>(to));
    }
  }
  return frame;
}

std::vector<float> Framing::mask_to_engine(const std::vector<float>& may_change) const {
  expect(may_change.size(), area(picture_w, picture_h), "the mask");
  const std::vector<float> content = resize_nearest(may_change, picture_w, picture_h, content_w, content_h);
  std::vector<float> frame(area(engine_w, engine_h), 0.0f);
  for (int y = 0; y < content_h; ++y) {
    std::copy_n(content.begin() + static_cast<std::ptrdiff_t>(area(content_w, y)), content_w,
                frame.begin() + static_cast<std::ptrdiff_t>(area(engine_w, top + y) + static_cast<std::size_t>(left)));
  }
  return frame;
}

std::vector<std::uint8_t> Framing::from_engine(const std::vector<std::uint8_t>& edited) const {
  expect(edited.size(), 3 * area(engine_w, engine_h), "the edited picture");
  std::vector<std::uint8_t> content;
  content.reserve(3 * area(content_w, content_h));
  for (int y = top; y < top + content_h; ++y) {
    const auto row =
        edited.begin() + static_cast<std::ptrdiff_t>(3 * (area(engine_w, y) + static_cast<std::size_t>(left)));
    content.insert(content.end(), row, row + 3 * content_w);
  }
  return resize_lanczos(content, content_w, content_h, 3, picture_w, picture_h);
}

std::vector<std::uint8_t> resize_lanczos(const std::vector<std::uint8_t>& pixels, int in_w, int in_h, int channels,
                                         int out_w, int out_h) {
  expect(pixels.size(), area(in_w, in_h) * static_cast<std::size_t>(channels), "resize_lanczos");
  if (in_w == out_w && in_h == out_h) return pixels;
  const Coefficients horizontal = coefficients(in_w, out_w), vertical = coefficients(in_h, out_h);
  if (in_w != out_w && in_h != out_h && out_h < in_h && in_h - out_h > 2 * (in_w - out_w)) {
    // Pillow 13 resizes vertically first when the height loses more than twice the pixels the width does (its
    // "resize vertically first" change, #9549; the rule read from its output: tests/test_cpp_edit_pieces.py)
    const std::vector<std::uint8_t> rows = resample_pass(pixels, in_w, in_h, channels, in_w, out_h, vertical, false);
    return resample_pass(rows, in_w, out_h, channels, out_w, out_h, horizontal, true);
  }
  std::vector<std::uint8_t> image = pixels;
  int height = in_h;
  int first_row = 0;
  if (in_w != out_w) {  // horizontal pass first, over the rows the vertical pass reads only
    first_row = vertical.first.front();
    const int last_row = vertical.first.back() + vertical.count.back();
    const std::vector<std::uint8_t> rows(
        image.begin() + static_cast<std::ptrdiff_t>(area(in_w, first_row) * static_cast<std::size_t>(channels)),
        image.begin() + static_cast<std::ptrdiff_t>(area(in_w, last_row) * static_cast<std::size_t>(channels)));
    height = last_row - first_row;
    image = resample_pass(rows, in_w, height, channels, out_w, height, horizontal, true);
  }
  if (in_h != out_h) {
    Coefficients shifted = vertical;
    for (int& first : shifted.first) first -= first_row;
    image = resample_pass(image, out_w, height, channels, out_w, out_h, shifted, false);
  }
  return image;
}

std::vector<float> resize_nearest(const std::vector<float>& values, int in_w, int in_h, int out_w, int out_h) {
  expect(values.size(), area(in_w, in_h), "resize_nearest");
  std::vector<float> out;
  out.reserve(area(out_w, out_h));
  for (std::int64_t i = 0; i < out_h; ++i) {
    const std::int64_t row = (2 * i + 1) * in_h / (2 * static_cast<std::int64_t>(out_h));
    for (std::int64_t j = 0; j < out_w; ++j) {
      const std::int64_t col = (2 * j + 1) * in_w / (2 * static_cast<std::int64_t>(out_w));
      out.push_back(values[static_cast<std::size_t>(row * in_w + col)]);
    }
  }
  return out;
}

std::vector<float> to_engine_image(const std::vector<std::uint8_t>& rgb, int width, int height) {
  const std::size_t pixels = area(width, height);
  expect(rgb.size(), 3 * pixels, "the engine picture");
  std::vector<float> image(3 * pixels);  // [3, h, w]
  for (std::size_t k = 0; k < pixels; ++k) {
    for (std::size_t c = 0; c < 3; ++c) {
      const float unit = static_cast<float>(rgb[3 * k + c]) / 255.0f;  // diffusers' pil_to_numpy
      image[c * pixels + k] = 2.0f * unit - 1.0f;                     // diffusers' normalize
    }
  }
  return image;
}

std::vector<float> latent_mask(const std::vector<float>& may_change, int width, int height, int latent_w,
                               int latent_h) {
  expect(may_change.size(), area(width, height), "the engine mask");
  const std::vector<int> rows = torch_nearest(height, latent_h), cols = torch_nearest(width, latent_w);
  std::vector<float> mask;
  mask.reserve(area(latent_w, latent_h));
  for (int row : rows) {
    for (int col : cols) {
      mask.push_back(may_change[area(width, row) + static_cast<std::size_t>(col)] >= 0.5f ? 1.0f : 0.0f);
    }
  }
  return mask;
}

std::vector<float> feathered_weight(const std::vector<std::uint8_t>& white, int width, int height, int feather) {
  std::vector<float> distance(white.begin(), white.end());  // min(d, feather), counted up one erosion at a time
  std::vector<std::uint8_t> eroded = white;
  for (int done = 0; done < feather - 1; ++done) {
    std::vector<std::uint8_t> shrunk = erode(eroded, width, height);
    if (!any(shrunk)) break;
    if (shrunk == eroded) {  // no black pixel left to grow from (an all-white mask): the rest is the same
      const auto rest = static_cast<float>(feather - 1 - done);
      for (std::size_t k = 0; k < distance.size(); ++k) distance[k] += shrunk[k] ? rest : 0.0f;
      break;
    }
    eroded = std::move(shrunk);
    for (std::size_t k = 0; k < distance.size(); ++k) distance[k] += static_cast<float>(eroded[k]);
  }
  const auto scale = static_cast<float>(std::max(feather, 1));
  for (float& d : distance) d = d / scale;
  return distance;
}

std::vector<std::uint8_t> composite(const std::vector<std::uint8_t>& edited, const Pixels& source,
                                    const std::vector<float>* may_change, int feather) {
  if (feather < 0) {
    fail(ATRT_INTERNAL_ERROR, "feather must be a whole number of pixels >= 0, got " + std::to_string(feather));
  }
  const std::size_t pixels = area(source.width, source.height);
  expect(edited.size(), 3 * pixels, "the edited picture");
  if (may_change == nullptr) return edited;
  expect(may_change->size(), pixels, "the mask");
  std::vector<std::uint8_t> white(pixels);
  for (std::size_t k = 0; k < pixels; ++k) white[k] = (*may_change)[k] >= 0.5f ? 1 : 0;
  const std::vector<float> weight = feathered_weight(white, source.width, source.height, feather);
  std::vector<std::uint8_t> rgb(3 * pixels);
  for (std::size_t k = 0; k < 3 * pixels; ++k) {
    const auto kept = static_cast<float>(source.rgb[k]);
    const float blended = kept + (static_cast<float>(edited[k]) - kept) * weight[k / 3];  // kept where weight is 0
    rgb[k] = static_cast<std::uint8_t>(std::nearbyint(blended));                         // numpy's round: half to even
  }
  return rgb;
}

}  // namespace atrt
