// Diffusion schedulers: the sampling math between two UNet evaluations, as runtime/schedulers.py computes it
// (itself diffusers 0.42's schedulers of the same names, built from a model's scheduler_config.json).
//
// Place in the data flow: denoise builds one scheduler per picture with make_scheduler(name, config, steps),
// starts from noise * init_noise_sigma() and, for each entry of timesteps() (one UNet evaluation each), calls
// scale_model_input -> UNet (+ guidance) -> step.
//
// As in the Python runtime: every table depending only on (config, steps) is computed once, in double, in the
// constructor, on the float32-rounded alpha-bar table; step() takes the step index explicitly, computes in double
// and rounds the latents back to float; multistep state travels in a History the caller keeps. Stochastic steps
// (euler-a, lcm, and ddim and tcd with eta > 0) draw their fresh noise from the picture's NoiseStream(seed,
// kStepNoise). eta is DDIM's stochasticity or TCD's gamma (the schedulers taking one, takes_eta); the timestep
// spacing is the config's (sampling.hpp lays a recipe's over it), read by every scheduler but lcm and tcd, whose
// timesteps are their distillation schedule's (spaces_timesteps).
// img2img (edit): make_scheduler(..., strength) in (0, 1] builds a scheduler whose timesteps() hold only the steps
// that remain, as runtime/schedulers.py does (every scheduler but lcm and tcd: the last int(steps * strength) of the
// full schedule, diffusers' img2img pipeline; lcm and tcd: `steps` steps from the first int(orig * strength) of
// their distillation schedule); the loop then starts from add_noise(source latents, noise, 0) instead of
// noise * init_noise_sigma().
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "noise.hpp"

namespace atrt {

extern const char* const kSchedulerNames[7];  // dpm++2m, pndm, ddim, euler, euler-a, lcm, tcd
constexpr double kMaxEta = 1.0;  // runtime/schedulers.py MAX_ETA: DDIM's eta or TCD's gamma, 0 (deterministic) to 1

struct History {
  std::vector<std::vector<double>> outputs;  // earlier model outputs (PLMS) or predicted x0 (DPM++), oldest first
  std::vector<double> sample;                // PLMS: the latents of step 0, which step 1 restarts from
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // What the UNet is called with at each step (training timesteps; fractional for the Euler family).
  const std::vector<double>& timesteps() const { return timesteps_; }
  double init_noise_sigma() const { return init_noise_sigma_; }
  // The img2img strength the schedule was built for, in (0, 1]; 1 draws from pure noise.
  double strength() const { return strength_; }
  // `original` (the source's latents) noised by `noise` (N(0, 1)) to the level of remaining step i, in the scale
  // of the loop's latents (variance-exploding for the Euler family): float(signal * original + scale * noise),
  // computed in double as runtime/schedulers.py's add_noise.
  void add_noise(const float* original, const float* noise, float* out, std::size_t size, std::size_t i) const;
  // The UNet input for step i (identity except for the Euler family, which divides by sqrt(sigma^2 + 1)).
  virtual void scale_model_input(const float* sample, float* out, std::size_t size, std::size_t i) const;
  // Latents after step i, in place; `noise` is needed by stochastic schedulers only.
  void step(const float* model_output, std::size_t i, float* sample, std::size_t size, History& history,
            NoiseStream* noise) const;

 protected:
  Scheduler(const nlohmann::json& config, int steps, double strength, const nlohmann::json& defaults,
            int max_steps_override = 0, const char* steps_hint = "use e.g. 25 steps for dpm++2m or 50 for pndm");
  // img2img: the index of the first entry of the full schedule that remains, steps - int(steps * strength); CONFIG
  // error, runtime/schedulers.py's text, when none remains. `name`: the scheduler's, for its step bound in the hint.
  std::size_t first_remaining_step(const char* name) const;
  // (signal, noise) scales of the loop's latents at remaining step i: sqrt(alpha_bar), sqrt(1 - alpha_bar) at its
  // timestep; the Euler family's (1, sigma).
  virtual std::pair<double, double> noise_level(std::size_t i) const;
  virtual void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History& history,
                           NoiseStream* noise) const = 0;
  const nlohmann::json& config(const char* key) const { return config_.at(key); }
  // (x0, eps) from VP latents x = a x0 + s eps and an epsilon or v prediction, element by element
  void split(const std::vector<double>& m, const std::vector<double>& x, double a, double s,
             std::vector<double>* x0, std::vector<double>* eps) const;

  nlohmann::json config_;
  int steps_ = 0;
  double strength_ = 1.0;
  bool v_prediction_ = false;
  std::vector<double> alphas_cumprod_;
  std::vector<double> timesteps_;
  double init_noise_sigma_ = 1.0;
};

// CONFIG error for an unknown name, steps out of range, a config option these schedulers do not implement, or a
// strength outside (0, 1] or leaving no step (runtime/schedulers.py's text); `eta` must be 0 for a scheduler that
// takes none (sampling.hpp refuses a caller's first).
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const nlohmann::json& config, int steps,
                                          double eta = 0.0, double strength = 1.0);
// What a scheduler takes (runtime/schedulers.py ETA_SCHEDULERS and SPACED_SCHEDULERS): an eta (ddim, tcd); a
// timestep spacing (all but lcm and tcd, whose timesteps are their distillation schedule's).
bool takes_eta(const std::string& name);
bool spaces_timesteps(const std::string& name);

}  // namespace atrt
