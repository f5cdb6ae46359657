// The sampling recipe as one value, as runtime/sampling.py's Sampling: the scheduler, its steps, the classifier-free
// guidance scale, eta (DDIM's) and the timestep spacing, with its bounds and the presets this library draws with.
//
// Place in the data flow: the manifest's Recipe holds the bundle's (manifest.hpp; schema 4 adds eta and the
// spacing, 1-3 read as eta 0 and the scheduler config's spacing); DrawOptions holds what a call asks for, its unset
// fields marked (a default-built Sampling sets nothing), laid over the recipe's or the fast preset's by `over`;
// make_scheduler builds the call's scheduler from the result, its spacing laid over the bundle's scheduler_config.
// tests/test_cpp.py compares the presets, the bounds and what each scheduler takes with the Python runtime's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "audiotoken_rt.h"
#include "schedulers.hpp"

namespace atrt {

constexpr double kUnsetEta = ATRT_RECIPE_ETA;  // an eta a DrawOptions leaves to the recipe (atrt_draw_options_init's)
extern const char* const kTimestepSpacings[3];  // leading, trailing, linspace

struct Sampling {
  std::string scheduler;         // one of kSchedulerNames; empty: unset
  int steps = 0;                 // 1 or more; 0: unset
  double guidance = 0;           // 1..ATRT_MAX_GUIDANCE; 0: unset
  double eta = kUnsetEta;        // 0..kMaxEta, nonzero for a scheduler that takes one (ddim, tcd); kUnsetEta: unset
  std::string timestep_spacing;  // one of kTimestepSpacings; empty: unset (in a recipe: the scheduler config's)
};

// A named recipe and what a bundle must hold to draw it (runtime/sampling.py Preset): a LoRA fused into the UNet,
// the UNet at `unet_batch`, and the tiny decoder where `tiny_decoder`.
struct Preset {
  Sampling sampling;
  int unet_batch;
  bool tiny_decoder;
  const char* flag;   // the option of generate and export that asks for it
  const char* needs;  // what a bundle must hold, for messages (runtime/sampling.py Preset.needs)
};

// runtime/sampling.py DEFAULT and FAST
inline const Sampling kDefaultSampling{"dpm++2m", 25, 7.5, 0.0, ""};
inline const Preset kFastPreset{{"lcm", 4, 1.0, 0.0, ""},
                                1,
                                true,
                                "--fast",
                                "LCM-LoRA fused, the tiny decoder and a UNet of batch 1"};

// `given`'s set fields laid over `base` (runtime/sampling.py Sampling.over): where `given` picks another scheduler,
// base's eta and spacing are left behind (eta 0, the config's spacing) unless it sets them too.
Sampling over(const Sampling& base, const Sampling& given);
// Why a complete recipe is off its bounds, or takes what its scheduler does not (an eta, a spacing), as one line
// naming the field; "" when it is fine. The most steps depend on the scheduler config: make_scheduler checks them.
std::string sampling_problem(const Sampling& sampling);
// The scheduler of a complete recipe on a bundle's scheduler_config, the recipe's spacing laid over the config's.
std::unique_ptr<Scheduler> make_scheduler(const Sampling& sampling, const nlohmann::json& config);

}  // namespace atrt
