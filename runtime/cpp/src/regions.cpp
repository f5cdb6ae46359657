// runtime/regions.py in C++: layouts, boxes and region weights (see regions.hpp). The weights are computed in
// double with numpy's order of operations (the sums over regions in order) and rounded to float once, so they are
// numpy's to the bit.
#include "regions.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "errors.hpp"
#include "python_text.hpp"

namespace atrt {

const char* const kLayoutHelp =
    "left,right | top,bottom (and reversed) | ROWSxCOLS, e.g. 2x2 (row by row) | boxes as fractions "
    "x0,y0,x1,y1;x0,y0,x1,y1 (0,0 is the top left)";

namespace {

struct NamedLayout {
  const char* name;
  Box first, second;
};
const NamedLayout kNamedLayouts[] = {
    {"left,right", {0.0, 0.0, 0.5, 1.0}, {0.5, 0.0, 1.0, 1.0}},
    {"right,left", {0.5, 0.0, 1.0, 1.0}, {0.0, 0.0, 0.5, 1.0}},
    {"top,bottom", {0.0, 0.0, 1.0, 0.5}, {0.0, 0.5, 1.0, 1.0}},
    {"bottom,top", {0.0, 0.5, 1.0, 1.0}, {0.0, 0.0, 1.0, 0.5}},
};

[[noreturn]] void too_many(const std::string& text) {
  fail(ATRT_CONFIG_ERROR,
       "--layout " + python::shown(text) + ": more than " + std::to_string(kMaxRegions) +
           " regions; a layout holds at most " + std::to_string(kMaxRegions),
       "one region per sound; a 4x4 grid is the finest (smaller regions are narrower than their soft edges)");
}

// A grid's count of rows or columns from its ASCII digits; more than three significant digits reads as
// kMaxRegions + 1 (too many), so a thousand-digit count is never converted.
int grid_count(const std::string& digits) {
  const std::size_t first = digits.find_first_not_of('0');
  if (first == std::string::npos) return 0;
  if (digits.size() - first > 3) return kMaxRegions + 1;
  return std::stoi(digits.substr(first));
}

bool all_digits(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t from = 0;
  for (std::size_t at; (at = text.find(separator, from)) != std::string::npos; from = at + 1) {
    parts.push_back(text.substr(from, at - from));
  }
  parts.push_back(text.substr(from));
  return parts;
}

// Where a box's edge lets a latent pixel in, along one axis of n pixels: a ramp `ramp` pixels wide across each edge
// that is not the picture's border
std::vector<double> axis(int n, double low, double high, double ramp) {
  std::vector<double> values(static_cast<std::size_t>(n));
  const double size = static_cast<double>(n);
  for (int i = 0; i < n; ++i) {
    const double centre = static_cast<double>(i) + 0.5;
    const double rise = low <= 0 ? 1.0 : std::clamp((centre - low * size) / ramp + 0.5, 0.0, 1.0);
    const double fall = high >= 1 ? 1.0 : std::clamp((high * size - centre) / ramp + 0.5, 0.0, 1.0);
    values[static_cast<std::size_t>(i)] = rise * fall;
  }
  return values;
}

}  // namespace

std::string Box::describe() const {
  return python::format_g(x0) + "," + python::format_g(y0) + "," + python::format_g(x1) + "," + python::format_g(y1);
}

double Box::overlap(const Box& other) const {
  const double width = std::min(x1, other.x1) - std::max(x0, other.x0);
  const double height = std::min(y1, other.y1) - std::max(y0, other.y0);
  return std::max(width, 0.0) * std::max(height, 0.0);
}

std::vector<Box> grid(int rows, int cols) {
  std::vector<Box> boxes;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      boxes.push_back({static_cast<double>(c) / cols, static_cast<double>(r) / rows, static_cast<double>(c + 1) / cols,
                       static_cast<double>(r + 1) / rows});
    }
  }
  return boxes;
}

std::vector<Box> parse_layout(const std::string& text) {
  std::string spaceless;
  for (char c : text) {
    if (c != ' ') spaceless += c;
  }
  const std::string layout = python::lower(spaceless);
  for (const NamedLayout& named : kNamedLayouts) {
    if (layout == named.name) return {named.first, named.second};
  }
  const auto has = [&](char c) { return layout.find(c) != std::string::npos; };
  if (has('x') && !has(';') && !has(',')) {
    const std::size_t x = layout.find('x');
    const std::string rows_text = layout.substr(0, x), cols_text = layout.substr(x + 1);
    const bool is_grid = all_digits(rows_text) && all_digits(cols_text);  // [0-9]+x[0-9]+, the whole text
    const int rows = is_grid ? grid_count(rows_text) : 0, cols = is_grid ? grid_count(cols_text) : 0;
    if (rows * cols < 1) {
      fail(ATRT_CONFIG_ERROR, "--layout " + python::shown(text) + ": a grid is ROWSxCOLS, e.g. 2x2", kLayoutHelp);
    }
    if (rows * cols > kMaxRegions) too_many(text);
    return grid(rows, cols);
  }
  const std::vector<std::string> items = split(layout, ';');
  if (items.size() > static_cast<std::size_t>(kMaxRegions)) too_many(text);
  std::vector<Box> boxes;
  for (const std::string& item : items) {
    std::vector<double> values;
    for (const std::string& part : split(item, ',')) {
      const std::optional<double> value = python::parse_float(part);
      if (!value) {
        values.clear();
        break;
      }
      values.push_back(*value);
    }
    if (values.size() != 4 || !std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); })) {
      fail(ATRT_CONFIG_ERROR,
           "--layout " + python::shown(text) + ": " + python::shown(item) + " is not a box x0,y0,x1,y1", kLayoutHelp);
    }
    boxes.push_back({values[0], values[1], values[2], values[3]});
  }
  check_boxes(boxes, text);
  return boxes;
}

void check_boxes(const std::vector<Box>& boxes, const std::string& text) {
  for (const Box& box : boxes) {
    if (!(0 <= box.x0 && box.x0 < box.x1 && box.x1 <= 1 && 0 <= box.y0 && box.y0 < box.y1 && box.y1 <= 1)) {
      fail(ATRT_CONFIG_ERROR,
           "--layout " + python::shown(text) + ": box " + box.describe() + " is empty or leaves the picture",
           "each box needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1");
    }
  }
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    for (std::size_t j = i + 1; j < boxes.size(); ++j) {
      if (boxes[i].overlap(boxes[j]) > 1e-9) {
        fail(ATRT_CONFIG_ERROR,
             "--layout " + python::shown(text) + ": boxes " + boxes[i].describe() + " and " + boxes[j].describe() +
                 " overlap",
             "regions must not overlap; their soft edges already blend them");
      }
    }
  }
}

std::vector<double> box_mask(const Box& box, int height, int width, double blend) {
  const double ramp = std::max(blend * std::min(height, width), 1e-6);  // in latent pixels
  const std::vector<double> rows = axis(height, box.y0, box.y1, ramp), cols = axis(width, box.x0, box.x1, ramp);
  std::vector<double> mask;
  mask.reserve(rows.size() * cols.size());
  for (double row : rows) {
    for (double col : cols) mask.push_back(row * col);
  }
  return mask;
}

std::vector<float> region_weights(const std::vector<Box>& boxes, int height, int width, bool background,
                                  double blend) {
  const std::size_t pixels = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  std::vector<std::vector<double>> masks;
  for (const Box& box : boxes) masks.push_back(box_mask(box, height, width, blend));  // R x [h, w]
  const auto sum = [&] {
    std::vector<double> covered(pixels, 0.0);
    for (const auto& mask : masks) {
      for (std::size_t k = 0; k < pixels; ++k) covered[k] += mask[k];
    }
    return covered;
  };
  std::vector<double> covered = sum();  // [h, w]
  if (background) {
    std::vector<double> rest(pixels);
    for (std::size_t k = 0; k < pixels; ++k) rest[k] = std::max(1.0 - covered[k], 0.0);
    masks.push_back(rest);
    covered = sum();
  } else if (std::any_of(covered.begin(), covered.end(), [](double c) { return c <= 0; })) {
    std::string listed;
    for (const Box& box : boxes) listed += (listed.empty() ? "" : "; ") + box.describe();
    fail(ATRT_CONFIG_ERROR, "the layout's boxes (" + listed + ") leave part of the picture to no sound",
         "add --background \"a park at dusk\" (or another prompt) for the rest, or boxes that cover it");
  }
  std::vector<float> weights;
  weights.reserve(masks.size() * pixels);
  for (const auto& mask : masks) {
    for (std::size_t k = 0; k < pixels; ++k) weights.push_back(static_cast<float>(mask[k] / covered[k]));
  }
  return weights;  // [C, h, w]
}

std::pair<Box, Box> stereo_boxes(double left_energy, double right_energy) {
  const double balance = left_energy / (left_energy + right_energy);
  const double split = balance < 0.1 ? 0.1 : balance > 0.9 ? 0.9 : balance;  // NaN stays NaN, as numpy's clip
  return {{0.0, 0.0, split, 1.0}, {split, 0.0, 1.0, 1.0}};
}

}  // namespace atrt
