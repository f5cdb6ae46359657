// The sampling recipe as one value, as runtime/sampling.py's Sampling: the scheduler, its steps, the classifier-free
// guidance scale, eta (DDIM's) and the timestep spacing, with its bounds and the presets this library draws with.
//
// Place in the data flow: the manifest's Recipe holds the bundle's (manifest.hpp; schema 4 adds eta and the
// spacing, 1-3 read as eta 0 and the scheduler config's spacing) and the name of its distillation preset (schema 5);
// DrawOptions holds what a call asks for, its unset fields marked (a default-built Sampling sets nothing), laid over
// the recipe's by `over` (`fast` asks for a bundle holding a distillation preset, whose recipe the bundle's is);
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

// A distillation preset (runtime/sampling.py Preset) as far as drawing needs it: what a bundle must hold for `fast`
// to draw it (its LoRA fused, the UNet at `unet_batch`, the tiny decoder where `tiny_decoder`). Its recipe is the
// bundle's own (the manifest's), which export wrote from the preset.
struct Preset {
  const char* name;
  const char* lora_name;  // for messages
  int unet_batch;
  bool tiny_decoder;
};

// runtime/sampling.py DEFAULT
inline const Sampling kDefaultSampling{"dpm++2m", 25, 7.5, 0.0, ""};
// runtime/sampling.py PRESETS, in order; the first is the default one (export --fast without --preset)
inline const Preset kPresets[] = {
    {"lcm", "LCM-LoRA", 1, true},
    {"hyper-1step", "Hyper-SD 1-step LoRA", 1, true},
    {"hyper-2step", "Hyper-SD 2-step LoRA", 1, true},
    {"hyper-4step", "Hyper-SD 4-step LoRA", 1, true},
    {"hyper-8step", "Hyper-SD 8-step LoRA", 1, true},
    {"tcd", "TCD-LoRA", 1, true},
    {"pcm-2step", "PCM 2-step LoRA", 1, true},
    {"pcm-4step", "PCM 4-step LoRA", 1, true},
    {"pcm-8step", "PCM 8-step LoRA", 1, true},
    {"pcm-16step", "PCM 16-step LoRA", 1, true},
};

// The preset named `name`; nullptr for none.
const Preset* find_preset(const std::string& name);
// What a bundle must hold for it, for messages (runtime/sampling.py Preset.needs).
std::string needs(const Preset& preset);
// The options of export that make a bundle `fast` draws with it (runtime/sampling.py Preset.export_flags).
std::string export_flags(const Preset& preset);

// `given`'s set fields laid over `base` (runtime/sampling.py Sampling.over): where `given` picks another scheduler,
// base's eta and spacing are left behind (eta 0, the config's spacing) unless it sets them too.
Sampling over(const Sampling& base, const Sampling& given);
// Why a complete recipe is off its bounds, or takes what its scheduler does not (an eta, a spacing), as one line
// naming the field; "" when it is fine. The most steps depend on the scheduler config: make_scheduler checks them.
std::string sampling_problem(const Sampling& sampling);
// The scheduler of a complete recipe on a bundle's scheduler_config, the recipe's spacing laid over the config's;
// `strength` below 1: an edit's (img2img), the steps that remain (schedulers.hpp).
std::unique_ptr<Scheduler> make_scheduler(const Sampling& sampling, const nlohmann::json& config,
                                          double strength = 1.0);

}  // namespace atrt
