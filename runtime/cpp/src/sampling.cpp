// The sampling recipe (see sampling.hpp): laying options over a recipe, its bounds, its scheduler.
#include "sampling.hpp"

#include <algorithm>
#include <cstdio>

#include "audiotoken_rt.h"

namespace atrt {

const char* const kTimestepSpacings[3] = {"leading", "trailing", "linspace"};

namespace {

std::string number_g(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

template <std::size_t N>
std::string listed(const char* const (&names)[N]) {
  std::string text;
  for (const char* name : names) text += (text.empty() ? "" : ", ") + std::string(name);
  return text;
}

std::string eta_schedulers() {
  std::string text;
  for (const char* name : kSchedulerNames) {
    if (takes_eta(name)) text += (text.empty() ? "" : " and ") + std::string(name);
  }
  return text;
}

template <std::size_t N>
bool among(const std::string& value, const char* const (&names)[N]) {
  return std::find(std::begin(names), std::end(names), value) != std::end(names);
}

}  // namespace

const Preset* find_preset(const std::string& name) {
  for (const Preset& preset : kPresets) {
    if (name == preset.name) return &preset;
  }
  return nullptr;
}

std::string needs(const Preset& preset) {
  return std::string(preset.lora_name) + " fused" + (preset.tiny_decoder ? ", the tiny decoder" : "") +
         " and a UNet of batch " + std::to_string(preset.unet_batch);
}

std::string export_flags(const Preset& preset) {
  return &preset == &kPresets[0] ? std::string("--fast") : std::string("--fast --preset ") + preset.name;
}

Sampling over(const Sampling& base, const Sampling& given) {
  Sampling chosen = base;
  if (!given.scheduler.empty() && given.scheduler != base.scheduler) {
    chosen.scheduler = given.scheduler;
    chosen.eta = kDefaultSampling.eta;
    chosen.timestep_spacing = kDefaultSampling.timestep_spacing;
  }
  if (given.steps != 0) chosen.steps = given.steps;
  if (given.guidance != 0) chosen.guidance = given.guidance;
  if (given.eta != kUnsetEta) chosen.eta = given.eta;  // another negative, or NaN, is set and refused
  if (!given.timestep_spacing.empty()) chosen.timestep_spacing = given.timestep_spacing;
  return chosen;
}

std::string sampling_problem(const Sampling& s) {
  if (!among(s.scheduler, kSchedulerNames)) {
    return "unknown scheduler '" + s.scheduler + "'; choose one of " + listed(kSchedulerNames);
  }
  if (s.steps < 1) return "steps is " + std::to_string(s.steps) + "; it must be at least 1";
  if (!(s.guidance >= 1.0 && s.guidance <= ATRT_MAX_GUIDANCE)) {  // NaN fails too
    return "guidance " + number_g(s.guidance) + " is outside 1.." + number_g(ATRT_MAX_GUIDANCE) +
           "; classifier-free guidance needs a finite scale (7.5 is usual)";
  }
  if (!(s.eta >= 0.0 && s.eta <= kMaxEta)) {
    return "eta " + number_g(s.eta) + " is outside 0.." + number_g(kMaxEta) + " (0 is deterministic)";
  }
  if (!s.timestep_spacing.empty() && !among(s.timestep_spacing, kTimestepSpacings)) {
    return "timestep_spacing '" + s.timestep_spacing + "': choose one of " + listed(kTimestepSpacings);
  }
  if (s.eta != 0 && !takes_eta(s.scheduler)) {
    return "eta " + number_g(s.eta) + ": " + s.scheduler + " has no eta; only " + eta_schedulers() + " take one";
  }
  if (!s.timestep_spacing.empty() && !spaces_timesteps(s.scheduler)) {
    return "timestep_spacing '" + s.timestep_spacing + "': " + s.scheduler +
           " spaces no timesteps; they are its distillation schedule's, which already starts at the last training "
           "timestep, even for one step";
  }
  return "";
}

std::unique_ptr<Scheduler> make_scheduler(const Sampling& sampling, const nlohmann::json& config, double strength) {
  nlohmann::json spaced = config;
  if (!sampling.timestep_spacing.empty() && spaced.is_object()) spaced["timestep_spacing"] = sampling.timestep_spacing;
  return make_scheduler(sampling.scheduler, spaced, sampling.steps, sampling.eta, strength);
}

}  // namespace atrt
