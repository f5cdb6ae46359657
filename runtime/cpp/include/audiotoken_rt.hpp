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
//   auto edited = context.edit(context.encode_audio(audio), photo, options);  // Picture photo: RGB8 or RGBA8
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
#include <optional>
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
  bool stereo = false;           // generate only: each channel's token on its side (see atrt_draw_options)

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
    options.stereo = stereo ? 1 : 0;
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
    options.stereo = c.stereo != 0;
    return options;
  }
};

// A picture drawn (or a caller's, for edit): `rgb` holds height x width x channels bytes, row by row: RGB8, or
// RGBA8 (channels 4: an edit of a picture with alpha; a mask may also be grey8, channels 1).
struct Picture {
  int width = 0, height = 0;
  std::int64_t seed = 0;
  std::vector<std::uint8_t> rgb;  // height x width x channels
  int channels = 3;

  // The C struct over rgb, which must hold width x height x channels bytes (the C API cannot see the vector's
  // size, so a shorter one is refused here, before the library reads past it); width, height and channels
  // themselves the library checks.
  atrt_picture c() const {
    if (width > 0 && height > 0 && channels > 0) {
      const std::size_t row = static_cast<std::size_t>(width) * static_cast<std::size_t>(channels);  // no overflow
      if (rgb.size() % row != 0 || rgb.size() / row != static_cast<std::size_t>(height)) {
        throw Error(ATRT_INVALID_ARGUMENT,
                    "Picture: rgb holds " + std::to_string(rgb.size()) + " bytes, not height " +
                        std::to_string(height) + " x width " + std::to_string(width) + " x channels " +
                        std::to_string(channels),
                    "size rgb to width * height * channels");
      }
    }
    atrt_picture picture;
    atrt_picture_init(&picture);
    picture.pixels = rgb.data();
    picture.width = width;
    picture.height = height;
    picture.channels = channels;
    return picture;
  }
};

// How to edit a picture (see atrt_edit_options); `mask` (not owned): white may change, NULL all may.
struct EditOptions {
  double strength = ATRT_DEFAULT_STRENGTH;  // 0 (the picture itself) to 1 (drawn anew)
  int feather = ATRT_DEFAULT_FEATHER;       // pixels, 0..ATRT_MAX_FEATHER
  const Picture* mask = nullptr;
};

// How to draw several sounds in one picture (see atrt_compose_options).
struct ComposeOptions {
  std::optional<std::string> layout;      // none: the prompt holds <1>..<K>
  std::optional<std::string> background;  // with a layout: the prompt for what its regions leave
  double blend = ATRT_DEFAULT_BLEND;

  atrt_compose_options c() const {
    atrt_compose_options options;
    atrt_compose_options_init(&options);
    options.layout = layout ? layout->c_str() : nullptr;
    options.background = background ? background->c_str() : nullptr;
    options.blend = blend;
    return options;
  }
};

// A mix's token: the weighted mean of `tokens` (each of one length), weights normalised (atrt_mix_tokens).
inline std::vector<float> mix_tokens(const std::vector<std::vector<float>>& tokens,
                                     const std::vector<double>& weights) {
  if (tokens.empty() || weights.size() != tokens.size()) {
    throw Error(ATRT_INVALID_ARGUMENT, "mix_tokens: " + std::to_string(weights.size()) + " weights for " +
                                           std::to_string(tokens.size()) + " tokens", "give one weight per token");
  }
  std::vector<float> flat;
  for (const std::vector<float>& token : tokens) {
    if (token.size() != tokens[0].size()) {
      throw Error(ATRT_INVALID_ARGUMENT, "mix_tokens: tokens of different lengths", "pass tokens of one bundle");
    }
    flat.insert(flat.end(), token.begin(), token.end());
  }
  std::vector<float> mixed(tokens[0].size());
  check(atrt_mix_tokens(flat.data(), static_cast<std::uint32_t>(tokens.size()),
                        static_cast<std::uint32_t>(mixed.size()), weights.data(), mixed.data()));
  return mixed;
}

namespace detail {

// num_images pictures of width x height x channels drawn by `call` (an atrt_draw, atrt_generate, atrt_edit or
// atrt_compose, on a context or a state, called with the C options, pixels_out, its capacity and seeds_out). A
// num_images out of 1..ATRT_MAX_NUM_IMAGES gets room for one picture, and a size out of 1..ATRT_MAX_PICTURE_PIXELS
// (an edit's picture) none: the library refuses them, naming them, and nothing is allocated that it would not fill.
template <typename Call>
std::vector<Picture> pictures(int width, int height, const DrawOptions& options, Call call, int channels = 3) {
  const bool sized = width >= 1 && height >= 1 && channels >= 1 && channels <= 4 &&
                     static_cast<std::size_t>(width) * static_cast<std::size_t>(height) <= ATRT_MAX_PICTURE_PIXELS;
  const std::size_t each =
      sized ? static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * static_cast<std::size_t>(channels)
            : 0;
  const bool counted = options.num_images >= 1 && options.num_images <= ATRT_MAX_NUM_IMAGES;
  const std::size_t count = counted ? static_cast<std::size_t>(options.num_images) : 1;
  std::vector<std::uint8_t> pixels(each * count);
  std::vector<std::int64_t> seeds(count);
  const atrt_draw_options c_options = options.c();
  check(call(&c_options, pixels.data(), pixels.size(), seeds.data()));
  std::vector<Picture> drawn(count);
  for (std::size_t k = 0; k < count; ++k) {
    drawn[k].width = width;
    drawn[k].height = height;
    drawn[k].seed = seeds[k];
    drawn[k].channels = channels;
    drawn[k].rgb.assign(pixels.begin() + static_cast<std::ptrdiff_t>(k * each),
                        pixels.begin() + static_cast<std::ptrdiff_t>((k + 1) * each));
  }
  return drawn;
}

// atrt_edit's arguments from the wrapper's: the picture and mask as C structs living as long as this.
struct EditCall {
  EditCall(const Picture& source, const EditOptions& edit) : picture(source.c()) {
    atrt_edit_options_init(&options);
    options.strength = edit.strength;
    options.feather = edit.feather;
    if (edit.mask != nullptr) {
      mask = edit.mask->c();
      options.mask = &mask;
    }
  }
  atrt_picture picture, mask{};
  atrt_edit_options options;
};

// The tokens one after another, each of the first's length (atrt_compose reads token_count tokens of one size:
// a shorter one would have it read past the end).
inline std::vector<float> flat(const std::vector<std::vector<float>>& tokens) {
  std::vector<float> all;
  for (const std::vector<float>& token : tokens) {
    if (token.size() != tokens[0].size()) {
      throw Error(ATRT_INVALID_ARGUMENT, "compose: tokens of different lengths (" + std::to_string(tokens[0].size()) +
                                             " and " + std::to_string(token.size()) + " floats)",
                  "pass the tokens of one bundle (encode_audio)");
    }
    all.insert(all.end(), token.begin(), token.end());
  }
  return all;
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
    return detail::pictures(bundle.width, bundle.height, options, [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_draw(context_, token.data(), token.size(), o, pixels, size, seeds);
    });
  }

  std::vector<Picture> generate(const Audio& audio, const DrawOptions& options) {
    const atrt_audio clip = audio.c();
    const atrt_bundle_info bundle = info();
    return detail::pictures(bundle.width, bundle.height, options, [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_generate(context_, &clip, o, pixels, size, seeds);
    });
  }

  // Edits of `picture` by `token`, each at the picture's size with its channels (see atrt_edit).
  std::vector<Picture> edit(const std::vector<float>& token, const Picture& picture, const DrawOptions& options,
                            const EditOptions& edit = EditOptions()) {
    const detail::EditCall call(picture, edit);
    return detail::pictures(picture.width, picture.height, options,
                            [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_edit(context_, token.data(), token.size(), &call.picture, o, &call.options, pixels, size, seeds);
    }, picture.channels);
  }

  // Several tokens in one picture (see atrt_compose).
  std::vector<Picture> compose(const std::vector<std::vector<float>>& tokens, const DrawOptions& options,
                               const ComposeOptions& compose = ComposeOptions()) {
    const atrt_bundle_info bundle = info();
    const std::vector<float> all = detail::flat(tokens);
    const atrt_compose_options c = compose.c();
    const std::size_t dim = tokens.empty() ? 0 : tokens[0].size();
    return detail::pictures(bundle.width, bundle.height, options, [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_compose(context_, all.data(), tokens.size(), dim, o, &c, pixels, size, seeds);
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
                            [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_state_draw(state_, token.data(), token.size(), o, pixels, size, seeds);
    });
  }

  std::vector<Picture> generate(const Audio& audio, const DrawOptions& options) {
    const atrt_audio clip = audio.c();
    return detail::pictures(width_, height_, options,
                            [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_state_generate(state_, &clip, o, pixels, size, seeds);
    });
  }

  std::vector<Picture> edit(const std::vector<float>& token, const Picture& picture, const DrawOptions& options,
                            const EditOptions& edit = EditOptions()) {
    const detail::EditCall call(picture, edit);
    return detail::pictures(picture.width, picture.height, options,
                            [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_state_edit(state_, token.data(), token.size(), &call.picture, o, &call.options, pixels, size, seeds);
    }, picture.channels);
  }

  std::vector<Picture> compose(const std::vector<std::vector<float>>& tokens, const DrawOptions& options,
                               const ComposeOptions& compose = ComposeOptions()) {
    const std::vector<float> all = detail::flat(tokens);
    const atrt_compose_options c = compose.c();
    const std::size_t dim = tokens.empty() ? 0 : tokens[0].size();
    return detail::pictures(width_, height_, options,
                            [&](auto o, auto pixels, auto size, auto seeds) {
      return atrt_state_compose(state_, all.data(), tokens.size(), dim, o, &c, pixels, size, seeds);
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
