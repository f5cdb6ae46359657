// Where each sound of a composed picture goes: layouts -> boxes -> soft weights over the latents that sum to one,
// as runtime/regions.py computes them (tests/test_cpp_edit_pieces.py holds the two equal: the same boxes, the same
// one-line errors, the same float32 weights).
//
// Place in the data flow of compose (and generate --stereo): parse_layout turns --layout into at most kMaxRegions
// boxes (fractions of the picture), refusing anything else in one line; region_weights turns boxes into one soft
// mask per region at the latent size, plus one for the background prompt where it is given; the denoising loop
// blends the regions' noise predictions with them at every step (MultiDiffusion-style: per-region predictions
// averaged under their masks). stereo_boxes splits the picture where the two channels' energies balance
// (waveform.hpp's mean_square gives the energies).
//
// Soft masks: each box rises from 0 to 1 over `blend` (a fraction of the picture's shorter side) centred on its
// edges, except at the picture's own border; with a background, the background's weight is what the boxes leave
// (1 - their sum, floored at 0); then the weights are divided by their sum. Written here: no maintained library
// does region weights for diffusion (MultiDiffusion's reference code is a research script).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace atrt {

constexpr int kMaxRegions = 16;        // runtime/regions.py MAX_REGIONS: a 4x4 grid
constexpr double kDefaultBlend = 0.125;  // runtime/regions.py DEFAULT_BLEND: a fraction of the shorter side
extern const char* const kLayoutHelp;  // runtime/regions.py LAYOUT_HELP: the hint of a bad layout

// A region, in fractions of the picture: left, top, right, bottom.
struct Box {
  double x0, y0, x1, y1;
  std::string describe() const;             // "x0,y0,x1,y1", each as Python's :g
  double overlap(const Box& other) const;   // the area both cover, as a fraction of the picture
};

// rows x cols equal cells, row by row from the top left.
std::vector<Box> grid(int rows, int cols);
// --layout (UTF-8 text) -> 1 to kMaxRegions boxes: "left,right", "top,bottom" (and reversed), ROWSxCOLS, or boxes
// "x0,y0,x1,y1;...". CONFIG error, runtime/regions.py's text, for anything else: empty, outside, overlapping or
// too many boxes; the count is checked before any number is read.
std::vector<Box> parse_layout(const std::string& text);
// CONFIG error for a box that is empty or leaves the picture, or two that overlap; `text` is the layout they came from.
void check_boxes(const std::vector<Box>& boxes, const std::string& text);
// The soft mask [h, w] (float64, row by row) of `box` over latent pixels whose centres sit at (i + 0.5) / n.
std::vector<double> box_mask(const Box& box, int height, int width, double blend);
// One weight map per region, then the background's when `background`: [C, h, w] float32 (C = boxes, or boxes + 1),
// summing to one at every latent pixel. CONFIG error when the boxes leave a pixel to nobody and there is no
// background.
std::vector<float> region_weights(const std::vector<Box>& boxes, int height, int width, bool background,
                                  double blend = kDefaultBlend);
// A left and a right region split where the channels' energies put the balance (equal: the middle), each side at
// least a tenth of the picture.
std::pair<Box, Box> stereo_boxes(double left_energy, double right_energy);

}  // namespace atrt
