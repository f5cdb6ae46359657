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
// Text-to-image only (strength 1): the Python runtime's img2img strength is not carried over.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
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
  // The UNet input for step i (identity except for the Euler family, which divides by sqrt(sigma^2 + 1)).
  virtual void scale_model_input(const float* sample, float* out, std::size_t size, std::size_t i) const;
  // Latents after step i, in place; `noise` is needed by stochastic schedulers only.
  void step(const float* model_output, std::size_t i, float* sample, std::size_t size, History& history,
            NoiseStream* noise) const;

 protected:
  Scheduler(const nlohmann::json& config, int steps, const nlohmann::json& defaults, int max_steps_override = 0,
            const char* steps_hint = "use e.g. 25 steps for dpm++2m or 50 for pndm");
  virtual void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History& history,
                           NoiseStream* noise) const = 0;
  const nlohmann::json& config(const char* key) const { return config_.at(key); }
  // (x0, eps) from VP latents x = a x0 + s eps and an epsilon or v prediction, element by element
  void split(const std::vector<double>& m, const std::vector<double>& x, double a, double s,
             std::vector<double>* x0, std::vector<double>* eps) const;

  nlohmann::json config_;
  int steps_ = 0;
  bool v_prediction_ = false;
  std::vector<double> alphas_cumprod_;
  std::vector<double> timesteps_;
  double init_noise_sigma_ = 1.0;
};

// CONFIG error for an unknown name, steps out of range, or a config option these schedulers do not implement;
// `eta` must be 0 for a scheduler that takes none (sampling.hpp refuses a caller's first).
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const nlohmann::json& config, int steps,
                                          double eta = 0.0);
// What a scheduler takes (runtime/schedulers.py ETA_SCHEDULERS and SPACED_SCHEDULERS): an eta (ddim, tcd); a
// timestep spacing (all but lcm and tcd, whose timesteps are their distillation schedule's).
bool takes_eta(const std::string& name);
bool spaces_timesteps(const std::string& name);

}  // namespace atrt
