// audiotoken_rt.hpp: a thin C++17 wrapper over the C API (audiotoken_rt.h), header-only, so the library's ABI
// stays the C one: a move-only Context that closes itself, std::vector in and out, and an exception
// (audiotoken_rt::Error, with the status, the message and the hint) where the C API returns a failure status.
// Exceptions are thrown here, in the caller's code, never inside or across the library.
//
//   audiotoken_rt::Context context("engines/sd14");
//   audiotoken_rt::DrawOptions options;
//   options.seed = 7;
//   auto pictures = context.generate(audiotoken_rt::Audio::interleaved(samples, frames, 2, 44100.0), options);
//   // pictures[0].rgb: height x width x 3 bytes
//
// Threads, as in the C API (audiotoken_rt.h): a Context is the loaded bundle, a State one thread's drawing from it.
// Several threads draw from one Context at once, each with its own State (RAII over atrt_state):
//
//   audiotoken_rt::Context context("engines/sd14");
//   // on each thread:
//   audiotoken_rt::State state(context);
//   auto pictures = state.generate(audio, options);
//
// Context::info, tokenize and resolve, and making States, may be called from any thread at any time; Context's own
// encode_audio, draw, generate and stage times use the Context's own state, one thread at a time. A State keeps
// the bundle loaded: it may outlive its Context.
#ifndef AUDIOTOKEN_RT_HPP
#define AUDIOTOKEN_RT_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "audiotoken_rt.h"

namespace audiotoken_rt {

class Error : public std::runtime_error {
 public:
  Error(atrt_status status, const std::string& message, std::string hint)
      : std::runtime_error(message), status_(status), hint_(std::move(hint)) {}
  atrt_status status() const noexcept { return status_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  atrt_status status_;
  std::string hint_;
};

inline void check(atrt_status status) {
  if (status != ATRT_OK) throw Error(status, atrt_last_error(), atrt_last_error_hint());
}

// A clip's samples: `frames` frames of `channels` interleaved floats at `sample_rate` Hz (not owned).
struct Audio {
  const float* samples = nullptr;
  std::uint64_t frames = 0;
  std::uint32_t channels = 1;
  double sample_rate = 16000.0;
  double start_seconds = 0.0;
  atrt_downmix downmix = ATRT_DOWNMIX_FIRST;

  static Audio mono(const std::vector<float>& samples, double sample_rate) {
    return interleaved(samples.data(), samples.size(), 1, sample_rate);
  }
  static Audio interleaved(const float* samples, std::uint64_t frames, std::uint32_t channels, double sample_rate) {
    Audio audio;
    audio.samples = samples;
    audio.frames = frames;
    audio.channels = channels;
    audio.sample_rate = sample_rate;
    return audio;
  }
  atrt_audio c() const {
    atrt_audio audio;
    atrt_audio_init(&audio);
    audio.samples = samples;
    audio.frames = frames;
    audio.channels = channels;
    audio.sample_rate = sample_rate;
    audio.start_seconds = start_seconds;
    audio.downmix = downmix;
    return audio;
  }
};

// How to draw; unset fields (empty, 0, ATRT_RECIPE_ETA) come from the bundle's recipe, which `fast` asks to be a
// distillation preset's (see atrt_draw_options).
struct DrawOptions {
  std::string prompt;           // template holding <*> once; empty: the bundle's
  std::string negative_prompt;
  std::string scheduler;        // dpm++2m, pndm, ddim, euler, euler-a, lcm, tcd; empty: the recipe's
  int steps = 0;
  float guidance = 0.0f;
  std::int64_t seed = ATRT_RANDOM_SEED;  // picture k gets seed + k
  int num_images = 1;
  bool fast = false;
  float eta = static_cast<float>(ATRT_RECIPE_ETA);  // ddim's or tcd's, 0..ATRT_MAX_ETA
  std::string timestep_spacing;  // leading, trailing, linspace; empty: the recipe's (else the scheduler config's)

  atrt_draw_options c() const {
    atrt_draw_options options;
    atrt_draw_options_init(&options);
    options.prompt = prompt.empty() ? nullptr : prompt.c_str();
    options.negative_prompt = negative_prompt.c_str();
    options.scheduler = scheduler.empty() ? nullptr : scheduler.c_str();
    options.steps = steps;
    options.guidance = guidance;
    options.seed = seed;
    options.num_images = num_images;
    options.fast = fast ? 1 : 0;
    options.eta = eta;
    options.timestep_spacing = timestep_spacing.empty() ? nullptr : timestep_spacing.c_str();
    return options;
  }

  // The options as atrt_resolve_draw_options gives them back (strings copied).
  static DrawOptions of(const atrt_draw_options& c) {
    DrawOptions options;
    options.prompt = c.prompt ? c.prompt : "";
    options.negative_prompt = c.negative_prompt ? c.negative_prompt : "";
    options.scheduler = c.scheduler ? c.scheduler : "";
    options.steps = c.steps;
    options.guidance = c.guidance;
    options.seed = c.seed;
    options.num_images = c.num_images;
    options.fast = c.fast != 0;
    options.eta = c.eta;
    options.timestep_spacing = c.timestep_spacing ? c.timestep_spacing : "";
    return options;
  }
};

struct Picture {
  int width = 0, height = 0;
  std::int64_t seed = 0;
  std::vector<std::uint8_t> rgb;  // height x width x 3
};

namespace detail {

// num_images pictures of width x height drawn by `call` (an atrt_draw or atrt_generate, on a context or a state).
template <typename Call>
std::vector<Picture> pictures(int width, int height, const DrawOptions& options, Call call) {
  const std::size_t each = static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3;
  const std::size_t count = options.num_images > 0 ? static_cast<std::size_t>(options.num_images) : 1;
  std::vector<std::uint8_t> pixels(each * count);
  std::vector<std::int64_t> seeds(count);
  const atrt_draw_options c_options = options.c();
  check(call(&c_options, pixels.data(), pixels.size(), seeds.data()));
  std::vector<Picture> drawn(count);
  for (std::size_t k = 0; k < count; ++k) {
    drawn[k].width = width;
    drawn[k].height = height;
    drawn[k].seed = seeds[k];
    drawn[k].rgb.assign(pixels.begin() + static_cast<std::ptrdiff_t>(k * each),
                        pixels.begin() + static_cast<std::ptrdiff_t>((k + 1) * each));
  }
  return drawn;
}

}  // namespace detail

class Context {
 public:
  explicit Context(const std::string& bundle, const std::string& device = "cpu", int threads = 0) {
    atrt_open_options options;
    atrt_open_options_init(&options);
    options.device = device.c_str();
    options.threads = threads;
    check(atrt_open(bundle.c_str(), &options, &context_));
  }
  ~Context() { atrt_close(context_); }
  Context(Context&& other) noexcept : context_(std::exchange(other.context_, nullptr)) {}
  Context& operator=(Context&& other) noexcept {
    if (this != &other) {
      atrt_close(context_);
      context_ = std::exchange(other.context_, nullptr);
    }
    return *this;
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  atrt_bundle_info info() const {
    atrt_bundle_info info;
    atrt_bundle_info_init(&info);
    check(atrt_bundle_info_get(context_, &info));
    return info;
  }

  std::array<std::int64_t, ATRT_TEXT_LENGTH> tokenize(const std::string& prompt, bool require_placeholder = true) {
    std::array<std::int64_t, ATRT_TEXT_LENGTH> ids{};
    check(atrt_tokenize(context_, prompt.c_str(), require_placeholder ? 1 : 0, ids.data()));
    return ids;
  }

  std::vector<float> encode_audio(const Audio& audio) {
    std::vector<float> token(static_cast<std::size_t>(info().token_dim));
    const atrt_audio clip = audio.c();
    check(atrt_encode_audio(context_, &clip, token.data(), token.size()));
    return token;
  }

  std::vector<Picture> draw(const std::vector<float>& token, const DrawOptions& options) {
    const atrt_bundle_info bundle = info();
    return detail::pictures(bundle.width, bundle.height, options, [&](const atrt_draw_options* o, std::uint8_t* pixels, std::size_t size, std::int64_t* seeds) {
      return atrt_draw(context_, token.data(), token.size(), o, pixels, size, seeds);
    });
  }

  std::vector<Picture> generate(const Audio& audio, const DrawOptions& options) {
    const atrt_audio clip = audio.c();
    const atrt_bundle_info bundle = info();
    return detail::pictures(bundle.width, bundle.height, options, [&](const atrt_draw_options* o, std::uint8_t* pixels, std::size_t size, std::int64_t* seeds) {
      return atrt_generate(context_, &clip, o, pixels, size, seeds);
    });
  }

  // `options` as a drawing completes them: every recipe field from the bundle's recipe, the prompt the bundle's
  // template where empty; checked (an Error otherwise).
  DrawOptions resolve(const DrawOptions& options) const {
    const atrt_draw_options given = options.c();
    atrt_draw_options resolved;
    atrt_draw_options_init(&resolved);
    check(atrt_resolve_draw_options(context_, &given, &resolved));
    return DrawOptions::of(resolved);
  }

  double stage_ms(const char* stage) const { return atrt_stage_ms(context_, stage); }
  void reset_stage_times() { atrt_reset_stage_times(context_); }
  atrt_context* get() const noexcept { return context_; }

 private:
  atrt_context* context_ = nullptr;
};

// One thread's drawing from a Context (atrt_state_new ... atrt_state_free): move-only; the same calls as the
// Context's, on this State's own stage times. One thread at a time per State; States run in parallel.
class State {
 public:
  explicit State(const Context& context) {
    const atrt_bundle_info bundle = context.info();
    width_ = bundle.width;
    height_ = bundle.height;
    token_dim_ = bundle.token_dim;
    check(atrt_state_new(context.get(), &state_));
  }
  ~State() { atrt_state_free(state_); }
  State(State&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)), width_(other.width_), height_(other.height_),
        token_dim_(other.token_dim_) {}
  State& operator=(State&& other) noexcept {
    if (this != &other) {
      atrt_state_free(state_);
      state_ = std::exchange(other.state_, nullptr);
      width_ = other.width_;
      height_ = other.height_;
      token_dim_ = other.token_dim_;
    }
    return *this;
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  std::vector<float> encode_audio(const Audio& audio) {
    std::vector<float> token(static_cast<std::size_t>(token_dim_));
    const atrt_audio clip = audio.c();
    check(atrt_state_encode_audio(state_, &clip, token.data(), token.size()));
    return token;
  }

  std::vector<Picture> draw(const std::vector<float>& token, const DrawOptions& options) {
    return detail::pictures(width_, height_, options,
                            [&](const atrt_draw_options* o, std::uint8_t* pixels, std::size_t size, std::int64_t* seeds) {
      return atrt_state_draw(state_, token.data(), token.size(), o, pixels, size, seeds);
    });
  }

  std::vector<Picture> generate(const Audio& audio, const DrawOptions& options) {
    const atrt_audio clip = audio.c();
    return detail::pictures(width_, height_, options,
                            [&](const atrt_draw_options* o, std::uint8_t* pixels, std::size_t size, std::int64_t* seeds) {
      return atrt_state_generate(state_, &clip, o, pixels, size, seeds);
    });
  }

  double stage_ms(const char* stage) const { return atrt_state_stage_ms(state_, stage); }
  void reset_stage_times() { atrt_state_reset_stage_times(state_); }
  atrt_state* get() const noexcept { return state_; }

 private:
  atrt_state* state_ = nullptr;
  int width_ = 0, height_ = 0, token_dim_ = 0;
};

}  // namespace audiotoken_rt

#endif  // AUDIOTOKEN_RT_HPP
