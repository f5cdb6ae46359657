// The C API (include/audiotoken_rt.h) over the C++ pipeline: argument checks, option structs read by their
// struct_size, and the boundary where every exception becomes an atrt_status plus the thread's last error. Every
// entry point is noexcept: those that can fail run their body in `guarded`, which catches everything; the others
// allocate nothing (atrt_stage_ms catches anyway). A caller's buffer is read only after its size was checked.
//
// A context owns the loaded Pipeline (shared, const, safe from several threads) and one state of its own, which
// the calls taking a context (atrt_encode_audio, atrt_draw, ...) use; atrt_state_new makes more, one per thread
// that draws at once, and the atrt_state_* calls are the same entry points on a caller's state. Each state shares
// its context's Pipeline, so a state cannot be used with another context's bundle, and the bundle lives until the
// context and all its states are freed, in any order.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "audiotoken_rt.h"
#include "errors.hpp"
#include "mix.hpp"
#include "pipeline.hpp"
#include "regions.hpp"
#include "source_picture.hpp"
#include "waveform.hpp"

static_assert(ATRT_TEXT_LENGTH == atrt::kTextLength, "audiotoken_rt.h's ATRT_TEXT_LENGTH is not runtime/contract.py's");
static_assert(ATRT_MAX_ETA == atrt::kMaxEta, "audiotoken_rt.h's ATRT_MAX_ETA is not schedulers.hpp's kMaxEta");
static_assert(ATRT_MAX_FEATHER == atrt::kMaxFeather, "audiotoken_rt.h's ATRT_MAX_FEATHER is not pipeline.hpp's");
static_assert(ATRT_DEFAULT_STRENGTH == atrt::kDefaultStrength && ATRT_DEFAULT_FEATHER == atrt::kDefaultFeather,
              "audiotoken_rt.h's edit defaults are not pipeline.hpp's");
static_assert(ATRT_MAX_COMPOSE_SOUNDS == atrt::kMaxRegions,
              "audiotoken_rt.h's ATRT_MAX_COMPOSE_SOUNDS is not kMaxRegions");
static_assert(ATRT_DEFAULT_BLEND == atrt::kDefaultBlend, "audiotoken_rt.h's ATRT_DEFAULT_BLEND is not regions.hpp's");
static_assert(ATRT_MAX_PICTURE_PIXELS == atrt::kMaxPicturePixels, "audiotoken_rt.h's ATRT_MAX_PICTURE_PIXELS is not "
              "source_picture.hpp's");

// One thread's calls on a loaded bundle: what they change (the stage times), and the Pipeline they run on.
struct atrt_state {
  explicit atrt_state(std::shared_ptr<const atrt::Pipeline> loaded) : pipeline(std::move(loaded)) {}
  const std::shared_ptr<const atrt::Pipeline> pipeline;
  atrt::PipelineState state;
};

// Built whole by its constructor: if any part throws, the parts already built are destroyed and `new` frees the
// memory, so a failed atrt_open leaks nothing.
struct atrt_context {
  atrt_context(const std::string& folder, const std::string& device_name, int threads)
      : pipeline(std::make_shared<const atrt::Pipeline>(folder, device_name, threads)),
        template_prompt(pipeline->manifest().template_prompt),
        scheduler(pipeline->manifest().recipe.sampling.scheduler),
        timestep_spacing(pipeline->manifest().recipe.sampling.timestep_spacing),
        device(pipeline->provider()),
        bundle_id(pipeline->manifest().bundle_id()),
        own_state(pipeline) {}
  const std::shared_ptr<const atrt::Pipeline> pipeline;
  // kept alive for atrt_bundle_info and atrt_resolve_draw_options
  const std::string template_prompt, scheduler, timestep_spacing, device, bundle_id;
  atrt_state own_state;  // the state of the calls that take the context: one thread at a time
};

namespace {

thread_local std::string last_error;
thread_local std::string last_hint;

atrt_status succeed() noexcept {
  last_error.clear();
  last_hint.clear();
  return ATRT_OK;
}

// (the message is built here, inside the try: building it at the call, in a catch handler, could throw again)
atrt_status report(atrt_status status, const char* message, const char* hint, const char* prefix = "") noexcept {
  try {
    last_error = std::string(prefix) + message;
    last_hint = hint;
  } catch (...) {  // no memory left even for the message
  }
  return status;
}

// Runs `body` with every exception turned into a status and a message: nothing crosses the C boundary.
template <typename Body>
atrt_status guarded(Body body) noexcept {
  try {
    body();
    return succeed();
  } catch (const atrt::Error& e) {
    return report(e.status(), e.what(), e.hint().c_str());
  } catch (const std::bad_alloc&) {
    return report(ATRT_OUT_OF_MEMORY, "out of memory", "close other contexts or use a smaller bundle");
  } catch (const std::exception& e) {
    return report(ATRT_INTERNAL_ERROR, e.what(), "please report it", "internal error: ");
  } catch (...) {
    return report(ATRT_INTERNAL_ERROR, "internal error", "please report it");
  }
}

void need(const void* pointer, const char* what) {
  if (pointer == nullptr) atrt::fail(ATRT_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// A struct filled by its *_init: its struct_size must be one this library knows (the first field of every version),
// the size of one of its versions, the current one last.
void check_size(std::uint32_t size, std::initializer_list<std::size_t> versions, const char* what) {
  if (std::find(versions.begin(), versions.end(), size) == versions.end()) {
    atrt::fail(ATRT_INVALID_ARGUMENT, std::string(what) + ".struct_size is " + std::to_string(size) + "; expected " +
                                         std::to_string(*(versions.end() - 1)),
               std::string("call ") + what + "_init on it first");
  }
}

// The sizes of the option structs before eta and timestep_spacing, then stereo, were added at their ends.
constexpr std::size_t kDrawOptionsBeforeEta = offsetof(atrt_draw_options, eta);
constexpr std::size_t kDrawOptionsBeforeStereo = offsetof(atrt_draw_options, stereo);
constexpr std::size_t kBundleInfoBeforeEta = offsetof(atrt_bundle_info, eta);

// The name in `names` equal to `value` (a string of the library's, alive as long as it is), or NULL when empty.
template <std::size_t N>
const char* library_name(const std::string& value, const char* const (&names)[N]) {
  for (const char* name : names) {
    if (value == name) return name;
  }
  return nullptr;
}

std::vector<float> waveform_of(const atrt_audio* audio) {
  need(audio, "audio");
  check_size(audio->struct_size, {sizeof(atrt_audio)}, "atrt_audio");
  if (audio->frames > 0) need(audio->samples, "audio->samples");
  return atrt::prepare_waveform(audio->samples, audio->frames, audio->channels, audio->sample_rate,
                                audio->start_seconds, audio->downmix, "samples");
}

atrt::DrawOptions draw_options_of(const atrt_draw_options* options) {
  atrt_draw_options defaults;
  atrt_draw_options_init(&defaults);
  if (options == nullptr) options = &defaults;
  check_size(options->struct_size, {kDrawOptionsBeforeEta, kDrawOptionsBeforeStereo, sizeof(atrt_draw_options)},
             "atrt_draw_options");
  atrt::DrawOptions o;
  o.prompt = options->prompt ? options->prompt : "";
  o.negative_prompt = options->negative_prompt ? options->negative_prompt : "";
  o.sampling.scheduler = options->scheduler ? options->scheduler : "";
  o.sampling.steps = options->steps;
  if (std::isnan(options->guidance)) {
    atrt::fail(ATRT_CONFIG_ERROR, "guidance is NaN; classifier-free guidance needs >= 1 (7.5 is usual)");
  }
  o.sampling.guidance = static_cast<double>(options->guidance);
  if (options->struct_size > kDrawOptionsBeforeEta) {  // an older caller's struct leaves both to the recipe
    o.sampling.eta = static_cast<double>(options->eta);
    o.sampling.timestep_spacing = options->timestep_spacing ? options->timestep_spacing : "";
  }
  o.seed = options->seed;
  o.num_images = options->num_images;
  o.fast = options->fast != 0;
  o.stereo = options->struct_size > kDrawOptionsBeforeStereo && options->stereo != 0;
  return o;
}

// A caller's picture, its pixels read only once its size and channels are checked. `mask`: a mask's (grey8 taken
// too, as grey RGB: Pillow's RGB -> L gives a grey pixel's own value back).
atrt::Pixels pixels_of(const atrt_picture* picture, const char* what, bool mask) {
  need(picture, what);
  check_size(picture->struct_size, {sizeof(atrt_picture)}, "atrt_picture");
  const std::int32_t channels = picture->channels;
  if (channels != 3 && channels != 4 && !(mask && channels == 1)) {
    atrt::fail(ATRT_INVALID_ARGUMENT, std::string(what) + "->channels is " + std::to_string(channels) +
                                          (mask ? "; expected 1 (grey8), 3 (RGB8) or 4 (RGBA8)"
                                                : "; expected 3 (RGB8) or 4 (RGBA8)"));
  }
  if (picture->width < 1 || picture->height < 1) {
    atrt::fail(ATRT_CONFIG_ERROR, std::string(what) + " is " + std::to_string(picture->width) + "x" +
                                      std::to_string(picture->height) + " pixels; it needs at least one");
  }
  atrt::check_picture_size(picture->width, picture->height, what);
  need(picture->pixels, (std::string(what) + "->pixels").c_str());
  atrt::Pixels out;
  out.width = picture->width;
  out.height = picture->height;
  const std::size_t area = static_cast<std::size_t>(out.width) * static_cast<std::size_t>(out.height);
  const auto stride = static_cast<std::size_t>(channels);
  out.rgb.resize(area * 3);
  if (channels == 4) out.alpha.resize(area);
  for (std::size_t p = 0; p < area; ++p) {
    const std::uint8_t* pixel = picture->pixels + p * stride;
    for (std::size_t c = 0; c < 3; ++c) out.rgb[p * 3 + c] = pixel[channels == 1 ? 0 : c];
    if (channels == 4) out.alpha[p] = pixel[3];
  }
  return out;
}

atrt::EditOptions edit_options_of(const atrt_edit_options* options) {
  atrt::EditOptions o;
  if (options == nullptr) return o;
  check_size(options->struct_size, {sizeof(atrt_edit_options)}, "atrt_edit_options");
  o.strength = options->strength;
  o.feather = options->feather;
  return o;
}

atrt::ComposeOptions compose_options_of(const atrt_compose_options* options) {
  atrt::ComposeOptions o;
  if (options == nullptr) return o;
  check_size(options->struct_size, {sizeof(atrt_compose_options)}, "atrt_compose_options");
  if (options->layout != nullptr) o.layout = options->layout;
  if (options->background != nullptr) o.background = options->background;
  o.blend = options->blend;
  return o;
}

// A caller's token, copied only once its size is the bundle's D (a wrong size is refused before any read).
std::vector<float> token_of(const atrt::Pipeline& pipeline, const float* token, std::size_t token_size) {
  need(token, "token");
  const auto dim = static_cast<std::size_t>(pipeline.manifest().token_dim);
  if (token_size != dim) {
    atrt::fail(ATRT_INVALID_ARGUMENT,
               "token_size is " + std::to_string(token_size) + "; this bundle's token has D = " + std::to_string(dim),
               "pass the token_dim floats of atrt_encode_audio (atrt_bundle_info_get)");
  }
  return std::vector<float>(token, token + dim);
}

// pixels_out must hold num_images pictures of `each` bytes (a bad num_images is refused by resolve, naming it).
void check_capacity(std::uint8_t* pixels, std::size_t capacity, const atrt::DrawOptions& o, std::size_t each,
                    const char* hint) {
  need(pixels, "pixels_out");
  if (o.num_images >= 1 && o.num_images <= ATRT_MAX_NUM_IMAGES) {
    const auto count = static_cast<std::size_t>(o.num_images);
    if (each > SIZE_MAX / count) {  // a 32-bit target: 100 pictures of 2^26 RGBA pixels pass its size_t
      atrt::fail(ATRT_INVALID_ARGUMENT, std::to_string(o.num_images) + " pictures of " + std::to_string(each) +
                                            " bytes are more than this machine can address", hint);
    }
    const std::size_t wanted = each * count;
    if (capacity < wanted) {
      atrt::fail(ATRT_INVALID_ARGUMENT, "pixels_out holds " + std::to_string(capacity) + " bytes; " +
                                            std::to_string(o.num_images) + " pictures need " + std::to_string(wanted),
                 hint);
    }
  }
}

constexpr const char* kBundlePictureHint = "allocate num_images * height * width * 3 bytes (atrt_bundle_info_get)";

void draw_into(atrt_state& state, const std::vector<float>& token, const atrt::DrawOptions& o, std::uint8_t* pixels,
               std::size_t capacity, std::int64_t* seeds_out) {
  check_capacity(pixels, capacity, o, state.pipeline->picture_bytes(), kBundlePictureHint);
  std::vector<std::int64_t> seeds;
  state.pipeline->draw(token, o, pixels, seeds, state.state);
  if (seeds_out) std::copy(seeds.begin(), seeds.end(), seeds_out);
}

// The bodies of atrt_encode_audio, atrt_draw and atrt_generate, on the context's own state or a caller's.
void encode_audio_with(atrt_state& state, const atrt_audio* audio, float* token_out, std::size_t token_capacity) {
  need(token_out, "token_out");
  const auto dim = static_cast<std::size_t>(state.pipeline->manifest().token_dim);
  if (token_capacity < dim) {
    atrt::fail(
        ATRT_INVALID_ARGUMENT,
        "token_out holds " + std::to_string(token_capacity) + " floats; this bundle's token has " + std::to_string(dim),
        "allocate token_dim floats (atrt_bundle_info_get)");
  }
  const std::vector<float> token = state.pipeline->encode_audio(waveform_of(audio), state.state);
  std::copy(token.begin(), token.end(), token_out);
}

void draw_with(atrt_state& state, const float* token, std::size_t token_size, const atrt_draw_options* options,
               std::uint8_t* pixels_out, std::size_t pixels_capacity, std::int64_t* seeds_out) {
  const std::vector<float> copied = token_of(*state.pipeline, token, token_size);
  draw_into(state, copied, draw_options_of(options), pixels_out, pixels_capacity, seeds_out);
}

void generate_with(atrt_state& state, const atrt_audio* audio, const atrt_draw_options* options,
                   std::uint8_t* pixels_out, std::size_t pixels_capacity, std::int64_t* seeds_out) {
  const atrt::DrawOptions given = draw_options_of(options);
  need(pixels_out, "pixels_out");
  const std::vector<float> waveform = waveform_of(audio);
  atrt::DrawOptions resolved = state.pipeline->resolve(given);  // bad options refused before encoding
  if (resolved.stereo) {  // the sides: the clip's first and second channels, as runtime/pipeline.py draw_stereo
    check_capacity(pixels_out, pixels_capacity, resolved, state.pipeline->picture_bytes(), kBundlePictureHint);
    const auto side = [&](int downmix) {
      return atrt::prepare_waveform(audio->samples, audio->frames, audio->channels, audio->sample_rate,
                                    audio->start_seconds, downmix, "samples");
    };
    std::vector<std::int64_t> seeds;
    state.pipeline->draw_stereo(side(ATRT_DOWNMIX_FIRST), side(ATRT_DOWNMIX_SECOND), waveform, resolved, pixels_out,
                                seeds, state.state);
    if (seeds_out) std::copy(seeds.begin(), seeds.end(), seeds_out);
    return;
  }
  const std::vector<float> token = state.pipeline->encode_audio(waveform, state.state);
  draw_into(state, token, resolved, pixels_out, pixels_capacity, seeds_out);
}

void edit_with(atrt_state& state, const float* token, std::size_t token_size, const atrt_picture* picture,
               const atrt_draw_options* options, const atrt_edit_options* edit, std::uint8_t* pixels_out,
               std::size_t pixels_capacity, std::int64_t* seeds_out) {
  const std::vector<float> copied = token_of(*state.pipeline, token, token_size);
  const atrt::DrawOptions o = draw_options_of(options);
  const atrt::EditOptions e = edit_options_of(edit);
  const atrt::Pixels source = pixels_of(picture, "picture", false);
  const std::size_t each = source.rgb.size() / 3 * static_cast<std::size_t>(picture->channels);
  check_capacity(pixels_out, pixels_capacity, o, each,
                 "allocate num_images * the picture's width * height * channels bytes");
  std::optional<atrt::Mask> mask;
  if (edit != nullptr && edit->mask != nullptr) {
    mask = atrt::mask_from_pixels(pixels_of(edit->mask, "mask", true), source.width, source.height, "mask", "mask");
  }
  std::vector<std::int64_t> seeds;
  state.pipeline->edit(copied, source, mask ? &mask->may_change : nullptr, o, e, pixels_out, seeds, state.state);
  if (seeds_out) std::copy(seeds.begin(), seeds.end(), seeds_out);
}

void compose_with(atrt_state& state, const float* tokens, std::size_t token_count, std::size_t token_size,
                  const atrt_draw_options* options, const atrt_compose_options* compose, std::uint8_t* pixels_out,
                  std::size_t pixels_capacity, std::int64_t* seeds_out) {
  need(tokens, "tokens");
  if (token_count < 1 || token_count > ATRT_MAX_COMPOSE_SOUNDS) {
    atrt::fail(ATRT_CONFIG_ERROR, "token_count is " + std::to_string(token_count) + "; a composition takes 1 to " +
                                      std::to_string(ATRT_MAX_COMPOSE_SOUNDS) + " sounds",
               "without a layout, at most the bundle's token slots (" +
                   std::to_string(state.pipeline->manifest().token_slots) + ")");
  }
  std::vector<std::vector<float>> copied;
  for (std::size_t k = 0; k < token_count; ++k) {
    copied.push_back(token_of(*state.pipeline, tokens + k * token_size, token_size));  // token_size checked first
  }
  const atrt::DrawOptions o = draw_options_of(options);
  const atrt::ComposeOptions c = compose_options_of(compose);
  check_capacity(pixels_out, pixels_capacity, o, state.pipeline->picture_bytes(), kBundlePictureHint);
  std::vector<std::int64_t> seeds;
  state.pipeline->compose(copied, o, c, pixels_out, seeds, state.state);
  if (seeds_out) std::copy(seeds.begin(), seeds.end(), seeds_out);
}

double stage_ms_of(const atrt_state& state, const char* stage) noexcept {
  try {
    const auto found = state.state.stage_ms.find(stage);  // a transparent lookup: no string is built
    return found == state.state.stage_ms.end() ? 0.0 : found->second;
  } catch (...) {  // nothing in the lookup throws today; a change that makes it throw still cannot cross here
    return 0.0;
  }
}

// What every *_init does first: the struct zeroed and its struct_size set; false for NULL (nothing to fill).
template <typename Struct>
bool cleared(Struct* fields) noexcept {
  if (fields == nullptr) return false;
  std::memset(fields, 0, sizeof *fields);
  fields->struct_size = sizeof *fields;
  return true;
}

}  // namespace

extern "C" {

uint32_t atrt_abi_version(void) noexcept { return ATRT_ABI_VERSION; }
const char* atrt_version(void) noexcept { return "0.1.0"; }
const char* atrt_last_error(void) noexcept { return last_error.c_str(); }
const char* atrt_last_error_hint(void) noexcept { return last_hint.c_str(); }

void atrt_open_options_init(atrt_open_options* options) noexcept {
  if (!cleared(options)) return;
  options->device = "cpu";
}

void atrt_audio_init(atrt_audio* audio) noexcept {
  if (!cleared(audio)) return;
  audio->channels = 1;
  audio->sample_rate = atrt::kSampleRate;
  audio->downmix = ATRT_DOWNMIX_FIRST;
}

void atrt_draw_options_init(atrt_draw_options* options) noexcept {
  if (!cleared(options)) return;
  options->seed = ATRT_RANDOM_SEED;
  options->num_images = 1;
  options->eta = static_cast<float>(ATRT_RECIPE_ETA);
}

void atrt_bundle_info_init(atrt_bundle_info* info) noexcept {
  if (!cleared(info)) return;
}

void atrt_picture_init(atrt_picture* picture) noexcept {
  if (!cleared(picture)) return;
  picture->channels = 3;
}

void atrt_edit_options_init(atrt_edit_options* options) noexcept {
  if (!cleared(options)) return;
  options->strength = ATRT_DEFAULT_STRENGTH;
  options->feather = ATRT_DEFAULT_FEATHER;
}

void atrt_compose_options_init(atrt_compose_options* options) noexcept {
  if (!cleared(options)) return;
  options->blend = ATRT_DEFAULT_BLEND;
}

atrt_status atrt_open(const char* folder, const atrt_open_options* options, atrt_context** context) noexcept {
  if (context != nullptr) *context = nullptr;
  return guarded([&] {
    need(context, "context");
    need(folder, "folder");
    std::string device = "cpu";
    int threads = 0;
    if (options != nullptr) {
      check_size(options->struct_size, {sizeof(atrt_open_options)}, "atrt_open_options");
      if (options->device != nullptr) device = options->device;
      if (options->threads < 0) {
        atrt::fail(ATRT_CONFIG_ERROR,
                   "threads is " + std::to_string(options->threads) + "; use 0 (ONNX Runtime's default) or more");
      }
      threads = options->threads;
    }
    *context = new atrt_context(folder, device, threads);  // nothing can throw once it is built
  });
}

void atrt_close(atrt_context* context) noexcept { delete context; }

atrt_status atrt_bundle_info_get(atrt_context* context, atrt_bundle_info* info) noexcept {
  return guarded([&] {
    need(context, "context");
    need(info, "info");
    check_size(info->struct_size, {kBundleInfoBeforeEta, sizeof(atrt_bundle_info)}, "atrt_bundle_info");
    const atrt::Manifest& m = context->pipeline->manifest();
    info->width = m.width;
    info->height = m.height;
    info->token_dim = m.token_dim;
    info->template_prompt = context->template_prompt.c_str();
    info->scheduler = context->scheduler.c_str();
    info->steps = m.recipe.sampling.steps;
    info->guidance = static_cast<float>(m.recipe.sampling.guidance);
    info->fast = m.recipe.fast_preset() != nullptr ? 1 : 0;
    info->device = context->device.c_str();
    info->bundle_id = context->bundle_id.c_str();
    if (info->struct_size > kBundleInfoBeforeEta) {
      info->eta = static_cast<float>(m.recipe.sampling.eta);
      info->timestep_spacing = context->timestep_spacing.empty() ? nullptr : context->timestep_spacing.c_str();
    }
  });
}

atrt_status atrt_tokenize(atrt_context* context, const char* prompt, int32_t require_placeholder,
                          int64_t ids_out[ATRT_TEXT_LENGTH]) noexcept {
  return guarded([&] {
    need(context, "context");
    need(prompt, "prompt");
    need(ids_out, "ids_out");
    const std::vector<std::int64_t> ids = context->pipeline->tokenizer().encode(prompt, require_placeholder != 0);
    std::copy(ids.begin(), ids.end(), ids_out);
  });
}

atrt_status atrt_encode_audio(atrt_context* context, const atrt_audio* audio, float* token_out,
                              size_t token_capacity) noexcept {
  return guarded([&] {
    need(context, "context");
    encode_audio_with(context->own_state, audio, token_out, token_capacity);
  });
}

atrt_status atrt_draw(atrt_context* context, const float* token, size_t token_size, const atrt_draw_options* options,
                      uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(context, "context");
    draw_with(context->own_state, token, token_size, options, pixels_out, pixels_capacity, seeds_out);
  });
}

atrt_status atrt_resolve_draw_options(atrt_context* context, const atrt_draw_options* options,
                                      atrt_draw_options* resolved) noexcept {
  return guarded([&] {
    need(context, "context");
    need(resolved, "resolved");
    check_size(resolved->struct_size, {kDrawOptionsBeforeEta, kDrawOptionsBeforeStereo, sizeof(atrt_draw_options)},
               "atrt_draw_options");
    const atrt::DrawOptions o = context->pipeline->resolve(draw_options_of(options));
    atrt_draw_options out;
    atrt_draw_options_init(&out);
    const bool prompted = options != nullptr && options->prompt != nullptr && *options->prompt != '\0';
    out.prompt = prompted ? options->prompt : context->template_prompt.c_str();
    out.negative_prompt = options != nullptr && options->negative_prompt != nullptr ? options->negative_prompt : "";
    out.scheduler = library_name(o.sampling.scheduler, atrt::kSchedulerNames);  // resolve checked it is one
    out.steps = o.sampling.steps;
    out.guidance = static_cast<float>(o.sampling.guidance);
    out.eta = static_cast<float>(o.sampling.eta);
    out.timestep_spacing = library_name(o.sampling.timestep_spacing, atrt::kTimestepSpacings);
    out.seed = o.seed;
    out.num_images = o.num_images;
    out.fast = o.fast ? 1 : 0;
    out.stereo = o.stereo ? 1 : 0;
    const std::uint32_t size = resolved->struct_size;  // an older caller's struct gets the fields it has
    out.struct_size = size;
    std::memcpy(resolved, &out, size);
  });
}

atrt_status atrt_generate(atrt_context* context, const atrt_audio* audio, const atrt_draw_options* options,
                          uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(context, "context");
    generate_with(context->own_state, audio, options, pixels_out, pixels_capacity, seeds_out);
  });
}

double atrt_stage_ms(const atrt_context* context, const char* stage) noexcept {
  if (context == nullptr || stage == nullptr) return 0.0;
  return stage_ms_of(context->own_state, stage);
}

void atrt_reset_stage_times(atrt_context* context) noexcept {
  if (context != nullptr) context->own_state.state.stage_ms.clear();
}

atrt_status atrt_state_new(atrt_context* context, atrt_state** state) noexcept {
  if (state != nullptr) *state = nullptr;
  return guarded([&] {
    need(state, "state");
    need(context, "context");
    *state = new atrt_state(context->pipeline);
  });
}

void atrt_state_free(atrt_state* state) noexcept { delete state; }

atrt_status atrt_state_encode_audio(atrt_state* state, const atrt_audio* audio, float* token_out,
                                    size_t token_capacity) noexcept {
  return guarded([&] {
    need(state, "state");
    encode_audio_with(*state, audio, token_out, token_capacity);
  });
}

atrt_status atrt_state_draw(atrt_state* state, const float* token, size_t token_size, const atrt_draw_options* options,
                            uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(state, "state");
    draw_with(*state, token, token_size, options, pixels_out, pixels_capacity, seeds_out);
  });
}

atrt_status atrt_state_generate(atrt_state* state, const atrt_audio* audio, const atrt_draw_options* options,
                                uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(state, "state");
    generate_with(*state, audio, options, pixels_out, pixels_capacity, seeds_out);
  });
}

double atrt_state_stage_ms(const atrt_state* state, const char* stage) noexcept {
  if (state == nullptr || stage == nullptr) return 0.0;
  return stage_ms_of(*state, stage);
}

void atrt_state_reset_stage_times(atrt_state* state) noexcept {
  if (state != nullptr) state->state.stage_ms.clear();
}

atrt_status atrt_mix_tokens(const float* tokens, uint32_t count, uint32_t token_dim, const double* weights,
                            float* token_out) noexcept {
  return guarded([&] {
    need(tokens, "tokens");
    need(weights, "weights");
    need(token_out, "token_out");
    if (count < 1 || count > ATRT_MAX_MIX_SOUNDS) {
      atrt::fail(ATRT_CONFIG_ERROR, "count is " + std::to_string(count) + "; a mix takes 1 to " +
                                        std::to_string(ATRT_MAX_MIX_SOUNDS) + " tokens");
    }
    if (token_dim < 1) atrt::fail(ATRT_INVALID_ARGUMENT, "token_dim is 0; pass the bundle's D (atrt_bundle_info_get)");
    const std::vector<double> normalised = atrt::mix_weights(std::vector<double>(weights, weights + count));
    std::vector<std::vector<float>> each;
    for (std::uint32_t k = 0; k < count; ++k) {
      const float* first = tokens + static_cast<std::size_t>(k) * token_dim;
      each.emplace_back(first, first + token_dim);
      if (!std::all_of(each.back().begin(), each.back().end(), [](float v) { return std::isfinite(v); })) {
        atrt::fail(ATRT_INVALID_ARGUMENT, "token " + std::to_string(k + 1) + " of the mix holds a value that is not "
                                              "finite (NaN or Inf)", "pass tokens from atrt_encode_audio");
      }
    }
    const std::vector<float> mixed = atrt::mix_tokens(normalised, each);
    std::copy(mixed.begin(), mixed.end(), token_out);
  });
}

atrt_status atrt_edit(atrt_context* context, const float* token, size_t token_size, const atrt_picture* picture,
                      const atrt_draw_options* options, const atrt_edit_options* edit, uint8_t* pixels_out,
                      size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(context, "context");
    edit_with(context->own_state, token, token_size, picture, options, edit, pixels_out, pixels_capacity, seeds_out);
  });
}

atrt_status atrt_state_edit(atrt_state* state, const float* token, size_t token_size, const atrt_picture* picture,
                            const atrt_draw_options* options, const atrt_edit_options* edit, uint8_t* pixels_out,
                            size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(state, "state");
    edit_with(*state, token, token_size, picture, options, edit, pixels_out, pixels_capacity, seeds_out);
  });
}

atrt_status atrt_compose(atrt_context* context, const float* tokens, size_t token_count, size_t token_size,
                         const atrt_draw_options* options, const atrt_compose_options* compose, uint8_t* pixels_out,
                         size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(context, "context");
    compose_with(context->own_state, tokens, token_count, token_size, options, compose, pixels_out, pixels_capacity,
                 seeds_out);
  });
}

atrt_status atrt_state_compose(atrt_state* state, const float* tokens, size_t token_count, size_t token_size,
                               const atrt_draw_options* options, const atrt_compose_options* compose,
                               uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) noexcept {
  return guarded([&] {
    need(state, "state");
    compose_with(*state, tokens, token_count, token_size, options, compose, pixels_out, pixels_capacity, seeds_out);
  });
}

}  // extern "C"
