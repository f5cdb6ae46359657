// The seven schedulers of runtime/schedulers.py (DPM-Solver++(2M), PNDM/PLMS, DDIM, Euler, Euler ancestral, LCM,
// TCD), formula for formula; see schedulers.hpp. Sources of the formulas: DDIM (Song et al. 2020, eq. 12), PLMS
// (Liu et al. 2022), DPM-Solver++ (Lu et al. 2022, 2M), Euler (Karras et al. 2022), LCM (Luo et al. 2023), TCD
// (Zheng et al. 2024).
#include "schedulers.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "errors.hpp"
#include "json_integer.hpp"
#include "python_text.hpp"

using nlohmann::json;

namespace atrt {

const char* const kSchedulerNames[7] = {"dpm++2m", "pndm", "ddim", "euler", "euler-a", "lcm", "tcd"};

namespace {

constexpr long kMaxTrainTimesteps = 10000;  // a config's num_train_timesteps (SD: 1000), runtime/schedulers.py's bound

const json kBaseDefaults = {{"num_train_timesteps", 1000}, {"beta_start", 0.0001}, {"beta_end", 0.02},
                            {"beta_schedule", "linear"},   {"trained_betas", nullptr}, {"prediction_type", "epsilon"},
                            {"steps_offset", 0}};
// options that change the math and are not implemented: key -> the only value accepted
const json kOnlySupported = {{"thresholding", false},           {"rescale_betas_zero_snr", false},
                             {"use_karras_sigmas", false},      {"use_exponential_sigmas", false},
                             {"use_beta_sigmas", false},        {"use_lu_lambdas", false},
                             {"use_flow_sigmas", false},        {"interpolation_type", "linear"},
                             {"timestep_type", "discrete"},     {"variance_type", nullptr}};

std::string shown(const json& value) {
  if (value.is_string()) return "'" + value.get<std::string>() + "'";
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  if (value.is_null()) return "None";
  return value.dump();
}

void require(const json& cfg, const char* key, std::initializer_list<json> allowed) {
  const json& value = cfg.at(key);
  for (const json& ok : allowed) {
    if (value == ok) return;
  }
  std::string list;
  for (const json& ok : allowed) list += (list.empty() ? "" : ", ") + shown(ok);
  fail(ATRT_CONFIG_ERROR,
       std::string("scheduler config: ") + key + " expected one of [" + list + "], got " + shown(value),
       "check the model's scheduler/scheduler_config.json");
}

// numpy.linspace(start, stop, num[, endpoint]): start + i * step, the last value exactly `stop` with the endpoint;
// one value with the endpoint is `start` (it was 0 * inf = NaN, a NaN timestep at 1 step: found by fuzzing)
std::vector<double> linspace(double start, double stop, std::size_t num, bool endpoint = true) {
  std::vector<double> values(num);
  const double div = static_cast<double>(endpoint ? num - 1 : num);
  const double step = div > 0 ? (stop - start) / div : 0.0;
  for (std::size_t i = 0; i < num; ++i) values[i] = static_cast<double>(i) * step + start;
  if (endpoint && num > 1) values[num - 1] = stop;
  return values;
}

// numpy.arange(start, stop, step) for floats: ceil((stop - start) / step) values start + i * delta, where numpy
// takes delta = (start + step) - start
std::vector<double> arange(double start, double stop, double step) {
  const double count = std::ceil((stop - start) / step);
  std::vector<double> values;
  const double delta = (start + step) - start;
  for (std::size_t i = 0; i < static_cast<std::size_t>(std::max(count, 0.0)); ++i) {
    values.push_back(i == 0 ? start : start + static_cast<double>(i) * delta);
  }
  return values;
}

double round_even(double x) { return std::nearbyint(x); }  // numpy.round: halves to even

std::vector<double> alphas_cumprod(const json& cfg) {
  const auto n = cfg.at("num_train_timesteps").get<std::size_t>();
  std::vector<double> betas;
  if (!cfg.at("trained_betas").is_null()) {
    betas = cfg.at("trained_betas").get<std::vector<double>>();
    if (betas.size() != n) {
      fail(ATRT_CONFIG_ERROR, "scheduler config: trained_betas holds " + std::to_string(betas.size()) +
                                  " values for " + std::to_string(n) + " training timesteps");
    }
  } else if (cfg.at("beta_schedule") == "linear") {
    betas = linspace(cfg.at("beta_start").get<double>(), cfg.at("beta_end").get<double>(), n);
  } else {  // scaled_linear: linear in sqrt(beta)
    betas =
        linspace(std::pow(cfg.at("beta_start").get<double>(), 0.5), std::pow(cfg.at("beta_end").get<double>(), 0.5), n);
    for (double& beta : betas) beta = beta * beta;
  }
  std::vector<double> product(n);
  double running = 1.0;
  for (std::size_t t = 0; t < n; ++t) {
    running *= 1.0 - betas[t];
    product[t] = static_cast<double>(static_cast<float>(running));  // stored in float32, as the model was trained
  }
  return product;
}

// Descending training timesteps for DDIM / PNDM / Euler ("linspace", "leading" or "trailing"), as doubles.
std::vector<double> spaced_timesteps(const json& cfg, int steps) {
  const auto n_train = cfg.at("num_train_timesteps").get<std::int64_t>();
  const std::string spacing = cfg.at("timestep_spacing").get<std::string>();
  std::vector<double> ts;
  if (spacing == "linspace") {
    ts = linspace(0, static_cast<double>(n_train - 1), static_cast<std::size_t>(steps));
    std::reverse(ts.begin(), ts.end());
  } else if (spacing == "leading") {
    const std::int64_t stride = n_train / steps;
    for (std::int64_t i = steps - 1; i >= 0; --i) {
      ts.push_back(static_cast<double>(i * stride) + cfg.at("steps_offset").get<double>());
    }
  } else {
    for (double t : arange(static_cast<double>(n_train), 0, -static_cast<double>(n_train) / steps)) {
      ts.push_back(round_even(t) - 1.0);
    }
  }
  return ts;
}

// A schedule's timestep must index the training table (a steps_offset can push "leading" past its end).
void check_timestep(std::int64_t t, std::size_t n_train) {
  if (t < 0 || static_cast<std::size_t>(t) >= n_train) {
    fail(ATRT_CONFIG_ERROR, "scheduler: timestep " + std::to_string(t) + " is outside the " + std::to_string(n_train) +
                                " training timesteps (the schedule's rounding at this step count and spacing)",
         "use one step more or fewer (at trailing spacing some counts, e.g. 61, round a step to timestep -1), or check "
         "steps_offset in scheduler_config.json");
  }
}

// sqrt(alpha_bar) and sqrt(1 - alpha_bar) at the current and the target timestep of each step (DDIM, PNDM)
struct AlphaBarPairs {
  std::vector<double> a, s, a_prev, s_prev;
  AlphaBarPairs() = default;
  AlphaBarPairs(const std::vector<double>& ab, const std::vector<std::int64_t>& t_cur,
                const std::vector<std::int64_t>& t_prev, bool set_alpha_to_one) {
    const double final_ab = set_alpha_to_one ? 1.0 : ab[0];
    for (std::size_t i = 0; i < t_cur.size(); ++i) {
      check_timestep(t_cur[i], ab.size());
      check_timestep(std::max<std::int64_t>(t_prev[i], 0), ab.size());
      const double cur = ab[static_cast<std::size_t>(t_cur[i])];
      const double prev = t_prev[i] >= 0 ? ab[static_cast<std::size_t>(t_prev[i])] : final_ab;
      a.push_back(std::sqrt(cur));
      s.push_back(std::sqrt(1.0 - cur));
      a_prev.push_back(std::sqrt(prev));
      s_prev.push_back(std::sqrt(1.0 - prev));
    }
  }
};

std::vector<double> fresh_noise(const char* name, std::size_t size, NoiseStream* noise) {
  if (noise == nullptr) {
    fail(ATRT_INTERNAL_ERROR, std::string(name) + " step: no noise stream for the fresh noise");
  }
  const std::vector<float> drawn = noise->standard_normal(size);
  return std::vector<double>(drawn.begin(), drawn.end());
}

// --- DDIM: x_prev = a_prev x0 + sqrt(s_prev^2 - sigma^2) eps + sigma z,
//           sigma = eta (s_prev / s) sqrt(1 - (a / a_prev)^2)
class Ddim final : public Scheduler {
 public:
  Ddim(const json& config, int steps, double strength, double eta)
      : Scheduler(config, steps, strength,
                  {{"timestep_spacing", "leading"}, {"set_alpha_to_one", true}, {"clip_sample", true},
                   {"clip_sample_range", 1.0}}),
        eta_(eta) {
    std::vector<std::int64_t> cur, prev;
    const std::int64_t stride = config_.at("num_train_timesteps").get<std::int64_t>() / steps_;
    const std::vector<double> full = spaced_timesteps(config_, steps_);
    for (std::size_t i = first_remaining_step("ddim"); i < full.size(); ++i) {  // the steps that remain
      cur.push_back(static_cast<std::int64_t>(round_even(full[i])));
      prev.push_back(cur.back() - stride);
      timesteps_.push_back(static_cast<double>(cur.back()));
    }
    coef_ = AlphaBarPairs(alphas_cumprod_, cur, prev, config_.at("set_alpha_to_one").get<bool>());
    for (std::size_t i = 0; i < cur.size(); ++i) {
      const double ratio = coef_.a[i] / coef_.a_prev[i];
      sigma_.push_back(eta_ * (coef_.s_prev[i] / coef_.s[i]) * std::sqrt(1.0 - ratio * ratio));
      direction_.push_back(std::sqrt(coef_.s_prev[i] * coef_.s_prev[i] - sigma_[i] * sigma_[i]));  // s_prev at eta 0
    }
  }

 private:
  void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History&,
                   NoiseStream* noise) const override {
    std::vector<double> x0, eps;
    split(m, x, coef_.a[i], coef_.s[i], &x0, &eps);
    const bool clip = config_.at("clip_sample").get<bool>();
    const double limit = config_.at("clip_sample_range").get<double>();
    std::vector<double> fresh;
    if (eta_ > 0) fresh = fresh_noise("ddim", x.size(), noise);  // every step, as diffusers draws it
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double clean = clip ? std::min(std::max(x0[k], -limit), limit) : x0[k];
      const double moved = coef_.a_prev[i] * clean + direction_[i] * eps[k];
      x[k] = eta_ > 0 ? moved + sigma_[i] * fresh[k] : moved;
    }
  }
  double eta_;
  AlphaBarPairs coef_;
  std::vector<double> sigma_, direction_;
};

// --- PNDM with skip_prk_steps (PLMS): linear multistep on epsilon, warm-up redoing step 0 --------------------
class Pndm final : public Scheduler {
 public:
  Pndm(const json& config, int steps, double strength)
      : Scheduler(config, steps, strength,
                  {{"timestep_spacing", "leading"}, {"set_alpha_to_one", false}, {"skip_prk_steps", false}}) {
    if (!config_.at("skip_prk_steps").get<bool>()) {
      fail(ATRT_CONFIG_ERROR, "scheduler config: PNDM with Runge-Kutta warm-up (skip_prk_steps=false) is not supported",
           "set skip_prk_steps: true (Stable Diffusion's own setting) or use another scheduler");
    }
    std::vector<double> spaced = spaced_timesteps(config_, steps_);
    std::vector<std::int64_t> base;  // ascending
    for (auto t = spaced.rbegin(); t != spaced.rend(); ++t) base.push_back(static_cast<std::int64_t>(round_even(*t)));
    std::vector<std::int64_t> full(base.begin(), base.end() - 1);  // [n + 1]: the second-to-last repeated
    if (base.size() >= 2) full.push_back(base[base.size() - 2]);
    full.push_back(base.back());
    std::reverse(full.begin(), full.end());
    full.erase(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(first_remaining_step("pndm")));  // [m] remain
    const std::int64_t stride = config_.at("num_train_timesteps").get<std::int64_t>() / steps_;
    std::vector<std::int64_t> cur = full, prev;
    for (std::int64_t t : full) prev.push_back(t - stride);
    if (full.size() > 1) {  // step 1 redoes step 0: from t1 + stride to t1
      cur[1] = full[1] + stride;
      prev[1] = full[1];
    }
    for (std::int64_t t : full) timesteps_.push_back(static_cast<double>(t));
    coef_ = AlphaBarPairs(alphas_cumprod_, cur, prev, config_.at("set_alpha_to_one").get<bool>());
  }

 private:
  void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History& history,
                   NoiseStream*) const override {
    std::vector<double> combined(x.size()), start;
    if (i == 0) {
      combined = m;
      start = x;
      history.outputs = {m};
      history.sample = x;
    } else if (i == 1) {
      for (std::size_t k = 0; k < x.size(); ++k) combined[k] = (m[k] + history.outputs[0][k]) / 2;
      start = history.sample;
      history.sample.clear();
    } else {
      std::vector<std::vector<double>> outputs(
          history.outputs.end() - static_cast<std::ptrdiff_t>(std::min<std::size_t>(3, history.outputs.size())),
          history.outputs.end());
      outputs.push_back(m);
      // Adams-Bashforth weights, oldest first
      static const std::vector<double> kWeights[5] = {{},
                                                      {},
                                                      {-1.0 / 2, 3.0 / 2},
                                                      {5.0 / 12, -16.0 / 12, 23.0 / 12},
                                                      {-9.0 / 24, 37.0 / 24, -59.0 / 24, 55.0 / 24}};
      const std::vector<double>& w = kWeights[outputs.size()];
      for (std::size_t k = 0; k < x.size(); ++k) {
        double sum = 0.0;
        for (std::size_t j = 0; j < outputs.size(); ++j) sum = sum + w[j] * outputs[j][k];
        combined[k] = sum;
      }
      start = x;
      history.outputs = outputs;
    }
    std::vector<double> x0, eps;
    split(combined, start, coef_.a[i], coef_.s[i], &x0, &eps);
    for (std::size_t k = 0; k < x.size(); ++k) x[k] = coef_.a_prev[i] * x0[k] + coef_.s_prev[i] * eps[k];
  }
  AlphaBarPairs coef_;
};

// DPM-Solver++'s full schedule of n steps, descending training timesteps (as doubles), after dropping the noisiest
// timesteps whose log-SNR is below lambda_min_clipped (none by default); `last` gets the timesteps left
std::vector<double> dpm_timesteps(const json& cfg, int n, const std::vector<double>& ab, std::int64_t* last_out) {
  const auto n_train = cfg.at("num_train_timesteps").get<std::int64_t>();
  const double lambda_min = cfg.at("lambda_min_clipped").is_null() ? -std::numeric_limits<double>::infinity()
                                                                     : cfg.at("lambda_min_clipped").get<double>();
  std::int64_t clipped = 0;
  for (std::size_t t = ab.size(); t-- > 0;) {
    if (std::log(std::sqrt(ab[t]) / std::sqrt(1.0 - ab[t])) < lambda_min) ++clipped;
  }
  const std::int64_t last = n_train - clipped;
  if (last_out != nullptr) *last_out = last;
  const std::string spacing = cfg.at("timestep_spacing").get<std::string>();
  std::vector<double> ts;
  if (spacing == "linspace") {
    std::vector<double> points = linspace(0, static_cast<double>(last - 1), static_cast<std::size_t>(n) + 1);
    for (std::size_t i = points.size() - 1; i > 0; --i) ts.push_back(round_even(points[i]));
  } else if (spacing == "leading") {
    const std::int64_t stride = last / (n + 1);
    for (std::int64_t i = n; i > 0; --i) {
      ts.push_back(static_cast<double>(i * stride) + cfg.at("steps_offset").get<double>());
    }
  } else {
    for (double t : arange(static_cast<double>(last), 0, -static_cast<double>(n_train) / n)) {
      ts.push_back(round_even(t) - 1);
    }
  }
  return ts;
}

// runtime/schedulers.py max_steps: the most inference steps scheduler `name` takes on its resolved config `cfg`,
// the step limit (one per training timestep; lcm, tcd: per step of their distillation schedule) counted down until
// the schedule indexes the alpha-bar table `ab` inside its bounds, one timestep per step (ddim, pndm, dpm++2m; the
// others index no table by a rounded timestep)
int max_steps(const std::string& name, const json& cfg, const std::vector<double>& ab) {
  const bool distilled = name == "lcm" || name == "tcd";
  const auto n_train = cfg.at("num_train_timesteps").get<std::int64_t>();
  int n = static_cast<int>(distilled ? cfg.at("original_inference_steps").get<std::int64_t>() : n_train);
  if (name != "ddim" && name != "pndm" && name != "dpm++2m") return n;
  const auto fits = [&](int steps) {
    std::vector<double> ts = name == "dpm++2m" ? dpm_timesteps(cfg, steps, ab, nullptr) : spaced_timesteps(cfg, steps);
    if (ts.empty()) return false;
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const auto t = static_cast<std::int64_t>(round_even(ts[i]));
      if (t < 0 || t >= n_train || (i > 0 && !(t < static_cast<std::int64_t>(round_even(ts[i - 1]))))) return false;
    }
    return true;
  };
  while (n > 1 && !fits(n)) --n;
  return n;
}

// --- DPM-Solver++(2M), midpoint: x_next = (s_next / s) x + a_next (1 - exp(-h)) (D0 + D1 / 2) ----------------
class DpmSolver final : public Scheduler {
 public:
  DpmSolver(const json& config, int steps, double strength)
      : Scheduler(config, steps, strength,
                  {{"timestep_spacing", "linspace"}, {"solver_order", 2}, {"algorithm_type", "dpmsolver++"},
                   {"solver_type", "midpoint"}, {"lower_order_final", true}, {"euler_at_final", false},
                   {"final_sigmas_type", "zero"}, {"lambda_min_clipped", -std::numeric_limits<double>::infinity()}}) {
    const json& cfg = config_;
    require(cfg, "algorithm_type", {"dpmsolver++"});
    require(cfg, "solver_type", {"midpoint"});
    require(cfg, "solver_order", {1, 2});
    require(cfg, "final_sigmas_type", {"zero", "sigma_min"});
    const std::vector<double>& ab = alphas_cumprod_;
    std::vector<double> train_sigmas;
    for (double value : ab) train_sigmas.push_back(std::sqrt((1.0 - value) / value));
    const std::string spacing = cfg.at("timestep_spacing").get<std::string>();
    const int n = steps_;
    std::int64_t last = 0;
    std::vector<double> ts = dpm_timesteps(cfg, n, ab, &last);
    for (std::size_t i = 1; i < ts.size(); ++i) {  // two steps on one timestep: a zero log-SNR step, NaN latents
      if (!(ts[i] < ts[i - 1])) {
        fail(ATRT_CONFIG_ERROR,
             "num_inference_steps: " + std::to_string(n) + " dpm++2m steps put two on training timestep " +
                 std::to_string(static_cast<std::int64_t>(ts[i])) + " with this model's schedule (" + spacing +
                 " spacing over " + std::to_string(last) + " timesteps)",
             "use fewer steps (25 is usual for dpm++2m)");
      }
    }
    const double sigma_last = cfg.at("final_sigmas_type") == "sigma_min" ? train_sigmas[0] : 0.0;
    bool first_order_final = cfg.at("euler_at_final").get<bool>() || cfg.at("final_sigmas_type") == "zero";
    first_order_final = first_order_final || (cfg.at("lower_order_final").get<bool>() && ts.size() < 15);  // full
    ts.erase(ts.begin(), ts.begin() + static_cast<std::ptrdiff_t>(first_remaining_step("dpm++2m")));  // [m] remain
    const std::size_t m = ts.size();
    std::vector<double> sigmas;
    for (double t : ts) {
      check_timestep(static_cast<std::int64_t>(t), ab.size());
      timesteps_.push_back(static_cast<double>(static_cast<std::int64_t>(t)));
      sigmas.push_back(train_sigmas[static_cast<std::size_t>(static_cast<std::int64_t>(t))]);
    }
    sigmas.push_back(sigma_last);
    std::vector<double> lam;
    for (double sigma : sigmas) {
      a_.push_back(1.0 / std::sqrt(sigma * sigma + 1.0));
      s_.push_back(sigma * a_.back());
      lam.push_back(-std::log(sigma));  // +inf at sigma 0
    }
    std::vector<double> h;
    for (std::size_t i = 0; i < m; ++i) {
      x_coef_.push_back(s_[i + 1] / s_[i]);
      d_coef_.push_back(a_[i + 1] * (1.0 - sigmas[i + 1] / sigmas[i]));
      h.push_back(lam[i + 1] - lam[i]);
    }
    h_ratio_.assign(m, 1.0);
    for (std::size_t i = 1; i < m; ++i) h_ratio_[i] = h[i] / h[i - 1];
    order_.assign(m, cfg.at("solver_order").get<int>());
    if (m > 0) order_[0] = 1;  // no earlier x0 yet
    if (first_order_final && m > 0) order_[m - 1] = 1;
  }

 private:
  void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History& history,
                   NoiseStream*) const override {
    std::vector<double> x0;
    split(m, x, a_[i], s_[i], &x0, nullptr);
    const bool second = order_[i] == 2 && !history.outputs.empty();
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double d = second ? x0[k] + 0.5 * (x0[k] - history.outputs[0][k]) * h_ratio_[i] : x0[k];
      x[k] = x_coef_[i] * x[k] + d_coef_[i] * d;
    }
    history.outputs = {x0};
  }
  std::vector<double> a_, s_, x_coef_, d_coef_, h_ratio_;
  std::vector<int> order_;
};

// --- Euler (and ancestral) on the probability-flow ODE, latents in VE scale x / a --------------------------
class Euler : public Scheduler {
 public:
  Euler(const json& config, int steps, double strength, bool ancestral)
      : Scheduler(config, steps, strength, {{"timestep_spacing", "linspace"}, {"final_sigmas_type", "zero"}}),
        ancestral_(ancestral) {
    const std::vector<double>& ab = alphas_cumprod_;
    std::vector<double> train_sigmas;
    for (double value : ab) train_sigmas.push_back(std::sqrt((1.0 - value) / value));
    for (double t : spaced_timesteps(config_, steps_)) timesteps_.push_back(static_cast<double>(static_cast<float>(t)));
    for (double t : timesteps_) sigmas_.push_back(interpolate(t, train_sigmas));
    double sigma_last = 0.0;
    if (!ancestral_) {
      require(config_, "final_sigmas_type", {"zero", "sigma_min"});
      sigma_last = config_.at("final_sigmas_type") == "sigma_min" ? train_sigmas[0] : 0.0;
    }
    sigmas_.push_back(sigma_last);  // [n + 1] the full schedule
    const double sigma_max = *std::max_element(sigmas_.begin(), sigmas_.end());
    init_noise_sigma_ =
        config_.at("timestep_spacing") == "leading" ? std::sqrt(sigma_max * sigma_max + 1.0) : sigma_max;
    const auto begin = static_cast<std::ptrdiff_t>(first_remaining_step(ancestral_ ? "euler-a" : "euler"));
    timesteps_.erase(timesteps_.begin(), timesteps_.begin() + begin);  // [m] the steps that remain
    sigmas_.erase(sigmas_.begin(), sigmas_.begin() + begin);           // [m + 1]
    for (double sigma : sigmas_) a_.push_back(1.0 / std::sqrt(sigma * sigma + 1.0));
    for (std::size_t i = 0; i + 1 < sigmas_.size(); ++i) {
      const double cur = sigmas_[i], next = sigmas_[i + 1];
      if (ancestral_) {  // down to sigma_down deterministically, then sigma_up of fresh noise
        up_.push_back(std::sqrt(next * next * (cur * cur - next * next) / (cur * cur)));
        down_.push_back(std::sqrt(next * next - up_.back() * up_.back()));
      } else {
        up_.push_back(0.0);
        down_.push_back(next);
      }
    }
  }

  void scale_model_input(const float* sample, float* out, std::size_t size, std::size_t i) const override {
    for (std::size_t k = 0; k < size; ++k) out[k] = static_cast<float>(static_cast<double>(sample[k]) * a_[i]);
  }

 protected:
  // VE: x0 + sigma eps
  std::pair<double, double> noise_level(std::size_t i) const override { return {1.0, sigmas_[i]}; }

 private:
  // numpy.interp at x over the training timesteps 0, 1, ..., n - 1
  static double interpolate(double x, const std::vector<double>& values) {
    const std::size_t last = values.size() - 1;
    if (x <= 0) return values[0];
    if (x >= static_cast<double>(last)) return values[last];
    const auto j = static_cast<std::size_t>(std::floor(x));
    const double slope = (values[j + 1] - values[j]) / 1.0;
    return slope * (x - static_cast<double>(j)) + values[j];
  }

  void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History&,
                   NoiseStream* noise) const override {
    const double sigma = sigmas_[i];
    std::vector<double> scaled(x.size()), x0;
    for (std::size_t k = 0; k < x.size(); ++k) scaled[k] = x[k] * a_[i];
    split(m, scaled, a_[i], a_[i] * sigma, &x0, nullptr);
    std::vector<double> fresh;
    if (ancestral_) fresh = fresh_noise("euler-a", x.size(), noise);
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double derivative = (x[k] - x0[k]) / sigma;
      double next = x[k] + derivative * (down_[i] - sigma);
      if (ancestral_) next = next + fresh[k] * up_[i];
      x[k] = next;
    }
  }
  bool ancestral_;
  std::vector<double> sigmas_, a_, up_, down_;
};

// The config defaults of the distilled UNets' schedulers (LCM, TCD: SD's betas, the distillation schedule's length;
// the spacing is accepted and unused)
const json kDistillationDefaults = {{"beta_start", 0.00085},
                                    {"beta_end", 0.012},
                                    {"beta_schedule", "scaled_linear"},
                                    {"original_inference_steps", 50},
                                    {"timestep_spacing", "leading"}};

json with_defaults(json defaults, const json& more) {
  for (const auto& [key, value] : more.items()) defaults[key] = value;
  return defaults;
}

// The timesteps of a distilled UNet (LCM, TCD): `steps` picked at evenly spaced indices, noisiest first, from the
// distillation schedule stride * j - 1 (j = orig .. 1, stride = n_train / orig): 1 step 999, 4 steps 999, 759,
// 499, 259 on SD's; at an img2img strength, from its first int(orig * strength) entries (4 steps at 0.5: 499, 379,
// 259, 139). CONFIG error when they are fewer than the steps.
std::vector<double> distilled_timesteps(const json& cfg, int steps, double strength, const char* name) {
  const auto orig = cfg.at("original_inference_steps").get<std::int64_t>();
  const std::int64_t stride = cfg.at("num_train_timesteps").get<std::int64_t>() / orig;
  // img2img: the first int(orig * strength) of the schedule (a Python float product, then truncated), `steps` of them
  const auto kept = static_cast<std::int64_t>(static_cast<double>(orig) * strength);
  if (kept < steps) {
    const std::string given = python::float_repr(strength);
    fail(ATRT_CONFIG_ERROR,
         "--strength " + given + " leaves int(" + std::to_string(orig) + " * " + given + ") = " + std::to_string(kept) +
             " of " + name + "'s " + std::to_string(orig) + " timesteps, fewer than --steps " + std::to_string(steps),
         "use at most " + std::to_string(kept) + " steps, or a strength of at least " +
             python::format_g(static_cast<double>(steps) / static_cast<double>(orig)));
  }
  std::vector<std::int64_t> origin;  // descending: stride * j - 1 for j = kept .. 1
  for (std::int64_t j = kept; j >= 1; --j) origin.push_back(j * stride - 1);
  std::vector<double> timesteps;
  for (double pick : linspace(0, static_cast<double>(kept), static_cast<std::size_t>(steps), false)) {
    timesteps.push_back(static_cast<double>(origin[static_cast<std::size_t>(std::floor(pick))]));
  }
  return timesteps;
}

// --- LCM: the consistency function at t_i, then re-noised to t_{i+1} (none after the last step) -------------
class Lcm final : public Scheduler {
 public:
  Lcm(const json& config, int steps, double strength)
      : Scheduler(config, steps, strength,
                  with_defaults(kDistillationDefaults,
                                {{"timestep_scaling", 10.0}, {"clip_sample", false}, {"clip_sample_range", 1.0}}),
                  -1, "LCM is meant for 1-8 steps (4 is typical) with an LCM-distilled UNet") {
    timesteps_ = distilled_timesteps(config_, steps_, strength_, "lcm");
    const double scaling = config_.at("timestep_scaling").get<double>();
    constexpr double kSigmaData2 = 0.25;  // sigma_data = 0.5
    for (double t : timesteps_) {
      check_timestep(static_cast<std::int64_t>(t), alphas_cumprod_.size());
      const double ab = alphas_cumprod_[static_cast<std::size_t>(t)];
      a_.push_back(std::sqrt(ab));
      s_.push_back(std::sqrt(1.0 - ab));
      const double scaled = t * scaling;
      c_skip_.push_back(kSigmaData2 / (scaled * scaled + kSigmaData2));
      c_out_.push_back(scaled / std::sqrt(scaled * scaled + kSigmaData2));
    }
  }

 private:
  void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History&,
                   NoiseStream* noise) const override {
    std::vector<double> x0;
    split(m, x, a_[i], s_[i], &x0, nullptr);
    const bool clip = config_.at("clip_sample").get<bool>();
    const double limit = config_.at("clip_sample_range").get<double>();
    const bool last = i + 1 == timesteps_.size();
    std::vector<double> fresh;
    if (!last) fresh = fresh_noise("lcm", x.size(), noise);
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double clean = clip ? std::min(std::max(x0[k], -limit), limit) : x0[k];
      const double denoised = c_skip_[i] * x[k] + c_out_[i] * clean;
      x[k] = last ? denoised : a_[i + 1] * denoised + s_[i + 1] * fresh[k];
    }
  }
  std::vector<double> a_, s_, c_skip_, c_out_;
};

// --- TCD: DDIM's move from t_i to s = floor((1 - eta) t') (float32, as diffusers' torch), then forward noise from
// s up to t' = t_{i+1} (0 after the last step, where no noise is drawn; none at eta 0 either) -----------------
class Tcd final : public Scheduler {
 public:
  Tcd(const json& config, int steps, double strength, double eta)
      : Scheduler(config, steps, strength, kDistillationDefaults, -1,
                  "TCD is meant for 1-8 steps (4 is typical, eta 0.3) with a TCD- or Hyper-SD-distilled UNet"),
        eta_(eta) {
    timesteps_ = distilled_timesteps(config_, steps_, strength_, "tcd");
    const std::vector<double>& ab = alphas_cumprod_;
    const auto gamma_keep = static_cast<float>(1.0 - eta_);  // float32, as the torch product diffusers floors
    for (std::size_t i = 0; i < timesteps_.size(); ++i) {
      const auto t = static_cast<std::int64_t>(timesteps_[i]);
      const std::int64_t next = i + 1 < timesteps_.size() ? static_cast<std::int64_t>(timesteps_[i + 1]) : 0;
      const float product = gamma_keep * static_cast<float>(next);  // rounded to float before the floor
      const auto s = static_cast<std::int64_t>(std::floor(product));
      check_timestep(t, ab.size());
      check_timestep(s, ab.size());
      const double ab_t = ab[static_cast<std::size_t>(t)], ab_s = ab[static_cast<std::size_t>(s)];
      const double ratio = ab[static_cast<std::size_t>(next)] / ab_s;  // <= 1: s is at or below t'
      a_.push_back(std::sqrt(ab_t));
      s_.push_back(std::sqrt(1.0 - ab_t));
      a_s_.push_back(std::sqrt(ab_s));
      s_s_.push_back(std::sqrt(1.0 - ab_s));
      keep_.push_back(std::sqrt(ratio));
      fresh_.push_back(std::sqrt(1.0 - ratio));
    }
  }

 private:
  void step_values(const std::vector<double>& m, std::size_t i, std::vector<double>& x, History&,
                   NoiseStream* noise) const override {
    std::vector<double> x0, eps;
    split(m, x, a_[i], s_[i], &x0, &eps);
    const bool renoise = eta_ > 0 && i + 1 < timesteps_.size();
    std::vector<double> fresh;
    if (renoise) fresh = fresh_noise("tcd", x.size(), noise);
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double at_s = a_s_[i] * x0[k] + s_s_[i] * eps[k];
      x[k] = renoise ? keep_[i] * at_s + fresh_[i] * fresh[k] : at_s;
    }
  }
  double eta_;
  std::vector<double> a_, s_, a_s_, s_s_, keep_, fresh_;
};

}  // namespace

Scheduler::Scheduler(const json& config, int steps, double strength, const json& defaults, int max_steps_override,
                     const char* steps_hint) {
  if (!(strength > 0.0 && strength <= 1.0)) {  // NaN fails too
    fail(ATRT_CONFIG_ERROR, "--strength is " + python::float_repr(strength) + "; it must be a number in (0, 1]",
         "1 starts from pure noise (text-to-image); lower values keep more of the source picture");
  }
  strength_ = strength;
  json cfg = kBaseDefaults;
  for (const auto& [key, value] : defaults.items()) cfg[key] = value;
  for (const auto& [key, value] : config.items()) {
    if (cfg.contains(key) || kOnlySupported.contains(key)) cfg[key] = value;
  }
  for (const auto& [key, supported] : kOnlySupported.items()) {
    if (cfg.contains(key) && cfg[key] != supported) {
      fail(ATRT_CONFIG_ERROR,
           "scheduler config: " + key + " expected " + shown(supported) +
               " (the only value the schedulers implement), got " + shown(cfg[key]),
           "remove '" + key + "' from scheduler_config.json or pick another scheduler");
    }
  }
  try {
    require(cfg, "beta_schedule", {"linear", "scaled_linear"});
    require(cfg, "prediction_type", {"epsilon", "v_prediction"});
    require(cfg, "timestep_spacing", {"leading", "trailing", "linspace"});
    // the integers every table is sized and indexed by, in range before anything is built from them
    long max_steps = json_integer<long>(cfg.at("num_train_timesteps"));
    if (max_steps < 2 || max_steps > kMaxTrainTimesteps) {
      fail(ATRT_CONFIG_ERROR, "scheduler config: num_train_timesteps expected an integer in 2.." +
                                  std::to_string(kMaxTrainTimesteps) + ", got " + std::to_string(max_steps),
           "check the model's scheduler/scheduler_config.json (Stable Diffusion's is 1000)");
    }
    const long offset = json_integer<long>(cfg.at("steps_offset"));
    if (offset < 0 || offset >= max_steps) {
      fail(ATRT_CONFIG_ERROR,
           "scheduler config: steps_offset expected an integer in 0.." + std::to_string(max_steps - 1) + ", got " +
               std::to_string(offset),
           "check the model's scheduler/scheduler_config.json (Stable Diffusion's is 1)");
    }
    if (max_steps_override < 0) {  // LCM, TCD: the distillation schedule's length
      const json& orig = cfg.at("original_inference_steps");
      if (!orig.is_number_integer() || orig.get<long>() < 1 || orig.get<long>() > max_steps) {
        fail(ATRT_CONFIG_ERROR,
             "scheduler config: original_inference_steps expected an integer in 1.." + std::to_string(max_steps) +
                 ", got " + shown(orig),
             "LCM-distilled models use 50 (diffusers' default)");
      }
      max_steps = orig.get<long>();
    }
    if (steps < 1 || steps > max_steps) {
      fail(ATRT_CONFIG_ERROR,
           "num_inference_steps: expected 1.." + std::to_string(max_steps) + ", got " + std::to_string(steps),
           steps_hint);
    }
    config_ = cfg;
    steps_ = steps;
    v_prediction_ = cfg.at("prediction_type") == "v_prediction";
    alphas_cumprod_ = alphas_cumprod(cfg);
  } catch (const json::exception& e) {
    fail(ATRT_CONFIG_ERROR, std::string("scheduler config: a value has the wrong type (") + e.what() + ")",
         "check the model's scheduler/scheduler_config.json");
  }
}

std::size_t Scheduler::first_remaining_step(const char* name) const {
  const int n = steps_;
  const auto kept = static_cast<long>(static_cast<double>(n) * strength_);  // a Python float product, truncated
  if (kept == 0) {
    const double min_strength = std::ceil(1e4 / n) / 1e4;  // 1 / n rounded up to 4 decimals
    std::string hint = "use a strength of at least " + python::format_g(min_strength) + " for " + std::to_string(n) +
                       " steps";
    const int most = max_steps(name, config_, alphas_cumprod_);
    if (1.0 / strength_ <= most) {  // (a subnormal strength's inverse is inf)
      auto min_steps = static_cast<long>(std::ceil(1.0 / strength_));
      // the product may fall short
      if (static_cast<long>(static_cast<double>(min_steps) * strength_) == 0) ++min_steps;
      if (min_steps <= most) {
        hint += ", or at least " + std::to_string(min_steps) + " steps at strength " + python::float_repr(strength_);
      }
    }
    const std::string given = python::float_repr(strength_);
    fail(ATRT_CONFIG_ERROR,
         "--strength " + given + " leaves int(" + std::to_string(n) + " * " + given + ") = 0 of the " +
             std::to_string(n) + " steps to run",
         hint);
  }
  return static_cast<std::size_t>(n - kept);
}

std::pair<double, double> Scheduler::noise_level(std::size_t i) const {
  const double alpha_bar = alphas_cumprod_[static_cast<std::size_t>(timesteps_[i])];
  return {std::sqrt(alpha_bar), std::sqrt(1.0 - alpha_bar)};
}

void Scheduler::add_noise(const float* original, const float* noise, float* out, std::size_t size,
                          std::size_t i) const {
  if (i >= timesteps_.size()) {
    fail(ATRT_INTERNAL_ERROR, "add_noise: step_index expected 0.." + std::to_string(timesteps_.size() - 1) +
                                  ", got " + std::to_string(i));
  }
  const auto [signal, scale] = noise_level(i);
  for (std::size_t k = 0; k < size; ++k) {
    out[k] = static_cast<float>(signal * static_cast<double>(original[k]) + scale * static_cast<double>(noise[k]));
  }
}

void Scheduler::split(const std::vector<double>& m, const std::vector<double>& x, double a, double s,
                      std::vector<double>* x0, std::vector<double>* eps) const {
  const std::size_t n = x.size();
  if (x0) x0->resize(n);
  if (eps) eps->resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    if (!v_prediction_) {
      if (x0) (*x0)[k] = (x[k] - s * m[k]) / a;
      if (eps) (*eps)[k] = m[k];
    } else {  // v = a eps - s x0
      if (x0) (*x0)[k] = a * x[k] - s * m[k];
      if (eps) (*eps)[k] = a * m[k] + s * x[k];
    }
  }
}

void Scheduler::scale_model_input(const float* sample, float* out, std::size_t size, std::size_t) const {
  std::copy(sample, sample + size, out);
}

void Scheduler::step(const float* model_output, std::size_t i, float* sample, std::size_t size, History& history,
                     NoiseStream* noise) const {
  if (i >= timesteps_.size()) {
    fail(ATRT_INTERNAL_ERROR, "step_index: expected 0.." + std::to_string(timesteps_.size() - 1) + ", got " +
                                  std::to_string(i));
  }
  std::vector<double> m(model_output, model_output + size), x(sample, sample + size);
  try {
    step_values(m, i, x, history, noise);
  } catch (const json::exception& e) {
    fail(ATRT_CONFIG_ERROR, std::string("scheduler config: a value has the wrong type (") + e.what() + ")");
  }
  for (std::size_t k = 0; k < size; ++k) sample[k] = static_cast<float>(x[k]);
}

bool takes_eta(const std::string& name) { return name == "ddim" || name == "tcd"; }

bool spaces_timesteps(const std::string& name) { return name != "lcm" && name != "tcd"; }

std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const json& config, int steps, double eta,
                                          double strength) {
  if (!(eta >= 0.0 && eta <= kMaxEta) || (eta != 0 && !takes_eta(name))) {
    fail(ATRT_INTERNAL_ERROR, "scheduler " + name + ": eta " + std::to_string(eta) + " is not one it takes");
  }
  try {
    if (name == "dpm++2m") return std::make_unique<DpmSolver>(config, steps, strength);
    if (name == "pndm") return std::make_unique<Pndm>(config, steps, strength);
    if (name == "ddim") return std::make_unique<Ddim>(config, steps, strength, eta);
    if (name == "euler") return std::make_unique<Euler>(config, steps, strength, false);
    if (name == "euler-a") return std::make_unique<Euler>(config, steps, strength, true);
    if (name == "lcm") return std::make_unique<Lcm>(config, steps, strength);
    if (name == "tcd") return std::make_unique<Tcd>(config, steps, strength, eta);
  } catch (const json::exception& e) {
    fail(ATRT_CONFIG_ERROR, std::string("scheduler config: a value has the wrong type (") + e.what() + ")",
         "check the model's scheduler/scheduler_config.json");
  }
  fail(ATRT_CONFIG_ERROR,
       "scheduler: expected one of dpm++2m, pndm, ddim, euler, euler-a, lcm, tcd, got '" + name + "'",
       "dpm++2m (25 steps) is the default; pndm (50 steps) reproduces the official AudioToken inference");
}

}  // namespace atrt
