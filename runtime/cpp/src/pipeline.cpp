// The generation pipeline (see pipeline.hpp): stages 2-6 of runtime/pipeline.py for a sound (or a mix's token), a
// clip's two channels (stereo), several sounds (compose) and a picture with a sound (edit). Every method is const:
// what a call changes goes to the caller's PipelineState.
#include "pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "contract.hpp"
#include "errors.hpp"
#include "noise.hpp"
#include "python_text.hpp"
#include "schedulers.hpp"
#include "waveform.hpp"

namespace atrt {
namespace {

constexpr std::int64_t kMaxSeed = INT64_MAX;  // seeds fit a signed 64-bit integer (C, C++, JSON)

class Stopwatch {
 public:
  Stopwatch(StageTimes& totals, const char* stage)
      : totals_(totals), stage_(stage), started_(std::chrono::steady_clock::now()) {}
  ~Stopwatch() {
    totals_[stage_] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
  }
  Stopwatch(const Stopwatch&) = delete;
  Stopwatch& operator=(const Stopwatch&) = delete;

 private:
  StageTimes& totals_;
  const char* stage_;
  std::chrono::steady_clock::time_point started_;
};

std::string number_g(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

// The VAE's output in [-1, 1] -> 8-bit RGB, as runtime/picture.py to_pictures (float arithmetic, round half even).
void to_pixels(const std::vector<float>& image, std::int64_t height, std::int64_t width, std::uint8_t* pixels) {
  const auto plane = static_cast<std::size_t>(height * width);
  for (std::size_t c = 0; c < 3; ++c) {
    for (std::size_t p = 0; p < plane; ++p) {
      const float unit = std::min(std::max(image[c * plane + p] / 2.0f + 0.5f, 0.0f), 1.0f);  // finite: checked
      pixels[p * 3 + c] = static_cast<std::uint8_t>(std::nearbyint(unit * 255.0f));
    }
  }
}

}  // namespace

Pipeline::Pipeline(const std::string& folder, const std::string& device, int threads)
    : root_(folder), manifest_(verify_bundle(folder)),
      tokenizer_(Tokenizer::from_folder(folder + "/" + manifest_.tokenizer)) {
  if (tokenizer_.slot_count() < manifest_.token_slots) {
    fail(ATRT_BUNDLE_ERROR, folder + ": the manifest says " + std::to_string(manifest_.token_slots) +
                                " token slots, the tokenizer holds " + std::to_string(tokenizer_.slot_count()) +
                                " placeholders", "rebuild it: " + manifest_.rebuild_command(folder));
  }
  if (tokenizer_.placeholder_id() != manifest_.placeholder_id) {
    fail(ATRT_BUNDLE_ERROR, folder + ": tokenizer puts <*> at id " + std::to_string(tokenizer_.placeholder_id()) +
                                ", manifest says " + std::to_string(manifest_.placeholder_id),
         "rebuild it: " + manifest_.rebuild_command(folder));
  }
  latent_h_ = manifest_.height / kVaeFactor;
  latent_w_ = manifest_.width / kVaeFactor;
  engines_ = std::make_unique<Engines>(folder, manifest_, device, threads);
}

void Pipeline::require_finite(const std::vector<float>& values, const char* stage, const std::string& what) const {
  const auto bad = static_cast<std::size_t>(
      std::count_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); }));
  if (bad == 0) return;
  fail(ATRT_NUMERIC_ERROR,
       std::string(stage) + ": " + std::to_string(bad) + " of " + std::to_string(values.size()) + " values of " + what +
           " are NaN or Inf, so no picture is made; the bundle's weights may be damaged: check them with "
           "`audiotoken-rt info " + shell_quoted(root_) + " --verify full`",
       "if every file verifies, the numbers overflowed: try fewer steps or a lower guidance");
}

std::vector<float> Pipeline::encode_audio(const std::vector<float>& waveform, PipelineState& state) const {
  Stopwatch watch(state.stage_ms, "encode_audio");
  std::vector<std::int64_t> shape;
  std::vector<float> token = engines_->run(
      audio_encoder::kName, {{audio_encoder::kWaveform.name, waveform.data(), false, {1, kNSamples}}}, &shape);
  if (token.size() != static_cast<std::size_t>(manifest_.token_dim)) {
    fail(ATRT_BUNDLE_ERROR,
         root_ + ": audio_encoder returned " + std::to_string(token.size()) +
             " values, expected D = " + std::to_string(manifest_.token_dim),
         "re-export the bundle");
  }
  require_finite(token, "encode_audio", "the audio token");
  return token;
}

bool Pipeline::guided(const DrawOptions& options) const {
  return !(options.sampling.guidance == 1.0 && manifest_.recipe.holds(1));
}

DrawOptions Pipeline::resolve(const DrawOptions& given, double strength, bool template_prompt) const {
  const Recipe& recipe = manifest_.recipe;
  if (given.fast && recipe.fast_preset() == nullptr) {  // runtime/bundle.py Recipe.require_fast
    std::string batches;
    for (int b : recipe.unet_batches) batches += (batches.empty() ? "" : ",") + std::to_string(b);
    const Preset* own = find_preset(recipe.preset);
    const Preset& preset = own != nullptr ? *own : kPresets[0];
    fail(ATRT_CONFIG_ERROR,
         root_ + ": the fast preset needs a bundle with " + needs(preset) +
             (own != nullptr ? "" : " (or another distillation preset's)") + "; this one has " +
             (recipe.lora ? "a LoRA" : "no LoRA") + ", the " + recipe.decoder + " decoder, UNet batch " + batches,
         "export one with: audiotoken-rt export ... " + export_flags(preset) +
             (own != nullptr ? "" : " (or: just export-fast); another preset: add --preset NAME"));
  }
  DrawOptions o = given;
  o.sampling = over(recipe.sampling, given.sampling);  // with `fast`, the distillation preset's
  const std::string problem = sampling_problem(o.sampling);
  if (!problem.empty()) fail(ATRT_CONFIG_ERROR, problem);
  if (o.num_images < 1 || o.num_images > ATRT_MAX_NUM_IMAGES) {
    fail(ATRT_CONFIG_ERROR, "num_images is " + std::to_string(o.num_images) + "; it must be 1 to " +
                                std::to_string(ATRT_MAX_NUM_IMAGES));
  }
  if (o.seed != -1 && (o.seed < 0 || o.seed > kMaxSeed - (o.num_images - 1))) {
    fail(ATRT_CONFIG_ERROR, "seed " + std::to_string(o.seed) + ": expected an integer from 0 to " +
                                std::to_string(kMaxSeed - (o.num_images - 1)) + " (for " +
                                std::to_string(o.num_images) + " pictures), or -1 for a random one");
  }
  if (o.sampling.guidance > 1 && !recipe.holds(2)) {
    fail(ATRT_CONFIG_ERROR,
         root_ + ": guidance " + number_g(o.sampling.guidance) +
             " needs the UNet at batch 2 (unconditional and conditional); this bundle holds batch 1 only",
         "use guidance 1 (the fast recipe), or export the bundle with --unet-batch 1,2");
  }
  make_scheduler(o.sampling, manifest_.scheduler_config, strength);  // steps in range, config implemented
  tokenizer_.encode(o.negative_prompt, false);
  if (template_prompt) {
    if (o.prompt.empty()) o.prompt = manifest_.template_prompt;
    tokenizer_.encode(o.prompt, true);
  }
  return o;
}

std::vector<float> Pipeline::embed(const std::string& prompt, const std::vector<float>& tokens,
                                   bool require_placeholder) const {
  const std::vector<std::int64_t> ids = tokenizer_.encode(prompt, require_placeholder);  // [77]
  const auto d = static_cast<std::int64_t>(manifest_.token_dim);
  const auto sounds = static_cast<std::int64_t>(tokens.size()) / d;  // K
  if (sounds > manifest_.token_slots) check_slots("", static_cast<int>(sounds), manifest_.token_slots);
  std::vector<float> feed;  // [1, S, D] with unused slots zero, or [1, D] for a bundle of one slot
  std::vector<std::int64_t> feed_shape;
  if (manifest_.token_slots == 1) {
    feed.assign(tokens.begin(), tokens.begin() + d);
    feed_shape = {1, d};
  } else {
    feed.assign(static_cast<std::size_t>(manifest_.token_slots * d), 0.0f);
    std::copy(tokens.begin(), tokens.end(), feed.begin());
    feed_shape = {1, manifest_.token_slots, d};
  }
  std::vector<std::int64_t> shape;
  std::vector<float> embedding = engines_->run(text_encoder::kName,
                                               {{text_encoder::kInputIds.name, ids.data(), true, {1, kTextLength}},
                                                {text_encoder::kAudioToken.name, feed.data(), false, feed_shape}},
                                               &shape);  // [1, 77, D]
  if (embedding.size() != static_cast<std::size_t>(kTextLength * d)) {
    fail(ATRT_BUNDLE_ERROR, root_ + ": text_encoder returned " + std::to_string(embedding.size()) + " values",
         "re-export the bundle");
  }
  require_finite(embedding, "encode_prompt", "the text embeddings");
  return embedding;
}

std::size_t Pipeline::cached_negative_prompts() const {
  const std::lock_guard<std::mutex> lock(uncond_mutex_);
  return uncond_cache_.size();
}

// Two threads missing the same negative prompt at once both embed it (the same values) and the later put wins: the
// lock is never held across a text_encoder run, which would serialise every thread's prompts behind one.
std::vector<float> Pipeline::unconditional(const std::string& negative_prompt, const std::vector<float>& tokens) const {
  if (holds_slot(negative_prompt)) return embed(negative_prompt, tokens, false);  // it hears the sounds too: not cached
  {
    const std::lock_guard<std::mutex> lock(uncond_mutex_);
    if (std::optional<std::vector<float>> cached = uncond_cache_.get(negative_prompt)) return *std::move(cached);
  }
  std::vector<float> uncond =
      embed(negative_prompt, std::vector<float>(static_cast<std::size_t>(manifest_.token_dim), 0.0f), false);
  const std::lock_guard<std::mutex> lock(uncond_mutex_);
  uncond_cache_.put(negative_prompt, uncond);
  return uncond;
}

std::vector<float> Pipeline::predict(const std::vector<float>& model_input, double timestep,
                                     const std::vector<float>& embeddings, std::size_t rows,
                                     PipelineState& state) const {
  const std::vector<int>& held = manifest_.recipe.unet_batches;
  const auto largest = static_cast<std::size_t>(*std::max_element(held.begin(), held.end()));
  const std::size_t latent = model_input.size(), row = static_cast<std::size_t>(kTextLength * manifest_.token_dim);
  std::vector<float> predictions;
  for (std::size_t first = 0; first < rows; first += largest) {
    const std::size_t count = std::min(largest, rows - first);
    std::size_t batch = largest;  // the smallest batch held that fits, else the largest, padded
    for (int b : held) {
      if (static_cast<std::size_t>(b) >= count) batch = std::min(batch, static_cast<std::size_t>(b));
    }
    std::vector<float> sample(batch * latent), hidden(batch * row);
    for (std::size_t k = 0; k < batch; ++k) {
      std::copy(model_input.begin(), model_input.end(), sample.begin() + static_cast<std::ptrdiff_t>(k * latent));
      const std::size_t source = first + std::min(k, count - 1);  // the last row repeated
      std::copy(embeddings.begin() + static_cast<std::ptrdiff_t>(source * row),
                embeddings.begin() + static_cast<std::ptrdiff_t>((source + 1) * row),
                hidden.begin() + static_cast<std::ptrdiff_t>(k * row));
    }
    const float t = static_cast<float>(timestep);
    const auto n = static_cast<std::int64_t>(batch);
    std::vector<std::int64_t> shape;
    std::vector<float> noise;
    {
      Stopwatch watch(state.stage_ms, unet::kName);
      const std::int64_t d = manifest_.token_dim;
      noise = engines_->run(unet::kName,
                            {{unet::kSample.name, sample.data(), false, {n, kLatentChannels, latent_h_, latent_w_}},
                             {unet::kTimestep.name, &t, false, {1}},
                             {unet::kEncoderHiddenStates.name, hidden.data(), false, {n, kTextLength, d}}},
                            &shape);  // [batch, 4, h, w]
    }
    if (noise.size() != batch * latent) {
      fail(ATRT_BUNDLE_ERROR, root_ + ": unet returned " + std::to_string(noise.size()) + " values",
           "re-export the bundle");
    }
    predictions.insert(predictions.end(), noise.begin(), noise.begin() + static_cast<std::ptrdiff_t>(count * latent));
  }
  return predictions;  // [rows, 4, h, w]
}

// An edit's start (runtime/pipeline.py EditSource): the picture's latents times the scaling factor [1, 4, h, w], the
// latent mask [1, 1, h, w] in {0, 1} (empty: everything may change), and the strength.
struct Pipeline::EditStart {
  std::vector<float> latents;
  std::vector<float> mask;
  double strength = 1.0;
};

std::vector<float> Pipeline::denoise(const std::vector<float>& embeddings, std::size_t rows, std::int64_t seed,
                                     const DrawOptions& options, bool is_guided, PipelineState& state,
                                     const std::vector<float>* weights, const EditStart* start) const {
  Stopwatch watch(state.stage_ms, "denoise");
  const double strength = start == nullptr ? 1.0 : start->strength;
  const std::unique_ptr<Scheduler> scheduler = make_scheduler(options.sampling, manifest_.scheduler_config, strength);
  const auto size = static_cast<std::size_t>(kLatentChannels * latent_h_ * latent_w_);
  const auto plane = static_cast<std::size_t>(latent_h_ * latent_w_);
  const std::vector<float> noise =
      NoiseStream(static_cast<std::uint64_t>(seed), kInitialNoise).standard_normal(size);  // [1, 4, h, w]
  std::vector<float> latents(size);  // [1, 4, h, w]
  if (strength < 1.0) {
    scheduler->add_noise(start->latents.data(), noise.data(), latents.data(), size, 0);
  } else {
    const auto sigma = static_cast<float>(scheduler->init_noise_sigma());
    for (std::size_t k = 0; k < size; ++k) latents[k] = noise[k] * sigma;
  }
  NoiseStream step_noise(static_cast<std::uint64_t>(seed), kStepNoise);
  History history;
  std::vector<float> model_input(size), cond(size), kept(size);
  const auto guidance = static_cast<float>(options.sampling.guidance);
  const std::size_t total = scheduler->timesteps().size();
  const std::size_t regions = is_guided ? rows - 1 : rows;  // C conditional rows
  for (std::size_t i = 0; i < total; ++i) {
    scheduler->scale_model_input(latents.data(), model_input.data(), size, i);
    const std::vector<float> noise_pred =
        predict(model_input, scheduler->timesteps()[i], embeddings, rows, state);  // [rows, 4, h, w]
    const float* conds = noise_pred.data() + (is_guided ? size : 0);           // [C, 4, h, w]
    const float* last = conds + (regions - 1) * size;                          // [1, 4, h, w]
    for (std::size_t k = 0; k < size; ++k) {
      float value = last[k];  // the blend is exact when every region predicts the same
      for (std::size_t r = 0; r + 1 < regions; ++r) {
        value = value + (*weights)[r * plane + k % plane] * (conds[r * size + k] - last[k]);
      }
      if (is_guided) {
        const float uncond = noise_pred[k];
        value = uncond + guidance * (value - uncond);
      }
      cond[k] = value;
    }
    scheduler->step(cond.data(), i, latents.data(), size, history, &step_noise);
    if (start != nullptr && !start->mask.empty()) {  // the kept region on the picture's trajectory
      if (i + 1 < total) {
        scheduler->add_noise(start->latents.data(), noise.data(), kept.data(), size, i + 1);
      } else {
        kept = start->latents;
      }
      for (std::size_t k = 0; k < size; ++k) {
        const float m = start->mask[k % plane];
        latents[k] = (1.0f - m) * kept[k] + m * latents[k];
      }
    }
    require_finite(latents, "denoise",
                   "the latents after step " + std::to_string(i + 1) + " of " + std::to_string(total));
  }
  return latents;
}

std::vector<float> Pipeline::decode(std::vector<float> latents, PipelineState& state) const {
  Stopwatch watch(state.stage_ms, "decode_latents");
  const auto scaling = static_cast<float>(manifest_.vae_scaling_factor);
  for (float& value : latents) value = value / scaling;
  std::vector<std::int64_t> shape;
  std::vector<float> image =
      engines_->run(vae_decoder::kName,
                    {{vae_decoder::kLatent.name, latents.data(), false, {1, kLatentChannels, latent_h_, latent_w_}}},
                    &shape);  // [1, 3, H, W]
  if (image.size() != picture_bytes()) {
    fail(ATRT_BUNDLE_ERROR, root_ + ": vae_decoder returned " + std::to_string(image.size()) + " values, expected " +
                                std::to_string(picture_bytes()), "re-export the bundle");
  }
  require_finite(image, "decode_latents", "the picture");
  return image;
}

std::int64_t Pipeline::first_seed(const DrawOptions& options) {
  if (options.seed != -1) return options.seed;
  return static_cast<std::int64_t>(std::random_device{}() % 2147483646u);
}

void Pipeline::require_token(const std::vector<float>& token, const std::string& what) const {
  if (token.size() != static_cast<std::size_t>(manifest_.token_dim)) {
    fail(ATRT_INVALID_ARGUMENT, what + " has " + std::to_string(token.size()) + " values; this bundle's D is " +
                                    std::to_string(manifest_.token_dim));
  }
  if (!std::all_of(token.begin(), token.end(), [](float v) { return std::isfinite(v); })) {
    fail(ATRT_INVALID_ARGUMENT, what + " holds a value that is not finite (NaN or Inf)",
         "pass a token from atrt_encode_audio");
  }
}

std::vector<float> Pipeline::encode_prompt(const std::vector<float>& tokens, const std::string& prompt,
                                           const std::string& negative_prompt, bool is_guided,
                                           PipelineState& state) const {
  Stopwatch watch(state.stage_ms, "encode_prompt");
  const bool one_sound = tokens.size() == static_cast<std::size_t>(manifest_.token_dim);
  std::vector<float> embeddings;  // [2, 77, D] (uncond, cond) or [1, 77, D]
  if (is_guided) embeddings = unconditional(negative_prompt, tokens);
  const std::vector<float> cond = embed(prompt, tokens, one_sound);  // [1, 77, D]
  embeddings.insert(embeddings.end(), cond.begin(), cond.end());
  return embeddings;
}

void Pipeline::draw_seeds(const std::vector<float>& embeddings, std::size_t rows, const DrawOptions& options,
                          bool is_guided, const std::vector<float>* weights, std::uint8_t* pixels,
                          std::vector<std::int64_t>& seeds, PipelineState& state) const {
  const std::int64_t first = first_seed(options);
  seeds.clear();
  for (int k = 0; k < options.num_images; ++k) {
    const std::int64_t seed = first + k;
    seeds.push_back(seed);
    std::vector<float> latents = denoise(embeddings, rows, seed, options, is_guided, state, weights);  // [1, 4, h, w]
    const std::vector<float> image = decode(std::move(latents), state);  // [1, 3, H, W]
    to_pixels(image, manifest_.height, manifest_.width, pixels + static_cast<std::size_t>(k) * picture_bytes());
  }
}

void Pipeline::draw(const std::vector<float>& token, const DrawOptions& given, std::uint8_t* pixels,
                    std::vector<std::int64_t>& seeds, PipelineState& state) const {
  require_token(token, "token");
  if (given.stereo) {
    fail(ATRT_CONFIG_ERROR, "stereo places a clip's two channels; a token has none",
         "draw the clip with atrt_generate and stereo set");
  }
  const DrawOptions options = resolve(given);
  const bool is_guided = guided(options);
  const std::vector<float> embeddings =
      encode_prompt(token, options.prompt, options.negative_prompt, is_guided, state);  // [2 or 1, 77, D]
  draw_seeds(embeddings, is_guided ? 2 : 1, options, is_guided, nullptr, pixels, seeds, state);
}

void Pipeline::draw_regions(const std::vector<float>& tokens, const std::vector<Box>& boxes,
                            const DrawOptions& options, const std::optional<std::string>& background, double blend,
                            std::uint8_t* pixels, std::vector<std::int64_t>& seeds, PipelineState& state) const {
  const std::vector<float> weights =
      region_weights(boxes, static_cast<int>(latent_h_), static_cast<int>(latent_w_), background.has_value(),
                     blend);  // [C, h, w]
  const bool is_guided = guided(options);
  const auto d = static_cast<std::ptrdiff_t>(manifest_.token_dim);
  std::vector<float> embeddings;  // [1 + C or C, 77, D]: uncond, a row per region, the background's
  {
    Stopwatch watch(state.stage_ms, "encode_prompt");
    if (is_guided) embeddings = unconditional(options.negative_prompt, tokens);
    for (std::size_t k = 0; k < boxes.size(); ++k) {
      const std::vector<float> token(tokens.begin() + static_cast<std::ptrdiff_t>(k) * d,
                                     tokens.begin() + static_cast<std::ptrdiff_t>(k + 1) * d);  // [D]
      const std::vector<float> row = embed(options.prompt, token, true);  // [1, 77, D]
      embeddings.insert(embeddings.end(), row.begin(), row.end());
    }
    if (background) {
      const std::vector<float> row =
          embed(*background, std::vector<float>(static_cast<std::size_t>(d), 0.0f), false);  // [1, 77, D]
      embeddings.insert(embeddings.end(), row.begin(), row.end());
    }
  }
  const std::size_t rows = boxes.size() + (background ? 1 : 0) + (is_guided ? 1 : 0);
  draw_seeds(embeddings, rows, options, is_guided, &weights, pixels, seeds, state);
}

void Pipeline::draw_stereo(const std::vector<float>& left, const std::vector<float>& right,
                           const std::vector<float>& plain, const DrawOptions& given, std::uint8_t* pixels,
                           std::vector<std::int64_t>& seeds, PipelineState& state) const {
  DrawOptions options = resolve(given);
  options.stereo = false;
  if (left == right) {  // equal channels (or mono): the plain picture
    draw(encode_audio(plain, state), options, pixels, seeds, state);
    return;
  }
  std::vector<float> tokens = encode_audio(left, state);  // [2 * D]: left, then right
  const std::vector<float> second = encode_audio(right, state);
  tokens.insert(tokens.end(), second.begin(), second.end());
  const std::pair<Box, Box> sides = stereo_boxes(mean_square(left), mean_square(right));
  draw_regions(tokens, {sides.first, sides.second}, options, std::nullopt, kDefaultBlend, pixels, seeds, state);
}

void Pipeline::compose(const std::vector<std::vector<float>>& tokens, const DrawOptions& given,
                       const ComposeOptions& composing, std::uint8_t* pixels, std::vector<std::int64_t>& seeds,
                       PipelineState& state) const {
  if (tokens.empty()) {
    fail(ATRT_CONFIG_ERROR, "compose needs at least one sound", "name the clips, one per placeholder or region");
  }
  std::vector<float> flat;  // [K * D]
  for (std::size_t k = 0; k < tokens.size(); ++k) {
    require_token(tokens[k], "token " + std::to_string(k + 1));
    flat.insert(flat.end(), tokens[k].begin(), tokens[k].end());
  }
  if (given.stereo) fail(ATRT_CONFIG_ERROR, "stereo is generate's; compose places its sounds by layout");
  if (!(composing.blend > 0 && composing.blend <= 1)) {  // NaN too
    fail(ATRT_CONFIG_ERROR, "blend is " + python::format_g(composing.blend) +
                                "; it must be in (0, 1] (a fraction of the picture's side)");
  }
  if (composing.background && !composing.layout) {
    fail(ATRT_CONFIG_ERROR, "background needs layout (the regions it surrounds)");
  }
  const int sounds = static_cast<int>(tokens.size());
  DrawOptions options = resolve(given, 1.0, false);  // prompt checked below, as the composition reads it
  if (!composing.layout) {  // runtime/pipeline.py prepare_compose: one prompt holding <1>..<K>
    if (options.prompt.empty()) {
      std::string together;
      for (int k = 1; k <= sounds; ++k) together += (k > 1 ? " and <" : "<") + std::to_string(k) + ">";
      options.prompt = manifest_.template_prompt;  // <*> read as '<1> and <2> ...' (str.replace: every one)
      for (std::size_t from = 0; (from = options.prompt.find("<*>", from)) != std::string::npos;
           from += together.size()) {
        options.prompt.replace(from, 3, together);
      }
    }
    check_slots(options.prompt, sounds, manifest_.token_slots);
    tokenizer_.encode(options.prompt, false);
    const bool is_guided = guided(options);
    const std::vector<float> embeddings =
        encode_prompt(flat, options.prompt, options.negative_prompt, is_guided, state);  // [2 or 1, 77, D]
    draw_seeds(embeddings, is_guided ? 2 : 1, options, is_guided, nullptr, pixels, seeds, state);
    return;
  }
  const std::vector<Box> boxes = parse_layout(*composing.layout);
  if (boxes.size() != tokens.size()) {
    fail(ATRT_CONFIG_ERROR,
         "layout " + python::repr(*composing.layout) + " has " + std::to_string(boxes.size()) + " region" +
             (boxes.size() != 1 ? "s" : "") + " for " + std::to_string(sounds) + " sound" + (sounds != 1 ? "s" : ""),
         "give one region per clip, in the clips' order");
  }
  if (options.prompt.empty()) options.prompt = manifest_.template_prompt;
  tokenizer_.encode(options.prompt, true);
  if (composing.background) {
    try {
      tokenizer_.encode(*composing.background, false);
    } catch (const Error& e) {
      fail(e.status(), std::string("background: ") + e.what(), e.hint());
    }
  }
  draw_regions(flat, boxes, options, composing.background, composing.blend, pixels, seeds, state);
}

void Pipeline::edit(const std::vector<float>& token, const Pixels& source, const std::vector<float>* may_change,
                    const DrawOptions& given, const EditOptions& editing, std::uint8_t* pixels,
                    std::vector<std::int64_t>& seeds, PipelineState& state) const {
  require_token(token, "token");
  if (given.stereo) fail(ATRT_CONFIG_ERROR, "stereo is generate's; an edit draws one token");
  if (!(editing.strength >= 0 && editing.strength <= 1)) {  // NaN too
    fail(ATRT_CONFIG_ERROR, "strength is " + python::format_g(editing.strength) +
                                "; it must be between 0 (keep the picture) and 1 (draw anew)",
         "0.4-0.7 changes a picture while keeping its layout");
  }
  if (editing.feather < 0 || editing.feather > kMaxFeather) {
    fail(ATRT_CONFIG_ERROR, "feather is " + std::to_string(editing.feather) +
                                " pixels; it must be a whole number from 0 (a hard edge) to " +
                                std::to_string(kMaxFeather));
  }
  check_picture_size(source.width, source.height, "picture");
  const auto area = static_cast<std::size_t>(source.width) * static_cast<std::size_t>(source.height);
  if (source.rgb.size() != area * 3 || (!source.alpha.empty() && source.alpha.size() != area) ||
      (may_change != nullptr && may_change->size() != area)) {
    fail(ATRT_INTERNAL_ERROR, "edit: the picture's or the mask's pixels are not width x height");
  }
  const DrawOptions options = resolve(given, editing.strength == 0 ? 1.0 : editing.strength);
  const bool is_guided = guided(options);
  const std::vector<float> embeddings =
      encode_prompt(token, options.prompt, options.negative_prompt, is_guided, state);  // [2 or 1, 77, D]
  const std::size_t channels = source.alpha.empty() ? 3 : 4;
  const std::size_t each = area * channels;
  const auto put = [&](const std::vector<std::uint8_t>& rgb, std::size_t k) {  // [H, W, 3] + alpha -> picture k
    std::uint8_t* out = pixels + k * each;
    for (std::size_t p = 0; p < area; ++p) {
      for (std::size_t c = 0; c < 3; ++c) out[p * channels + c] = rgb[p * 3 + c];
      if (channels == 4) out[p * 4 + 3] = source.alpha[p];
    }
  };
  const std::int64_t first = first_seed(options);
  seeds.clear();
  for (int k = 0; k < options.num_images; ++k) seeds.push_back(first + k);
  if (editing.strength == 0) {  // nothing may move: the picture itself, exactly
    for (std::size_t k = 0; k < seeds.size(); ++k) put(source.rgb, k);
    return;
  }
  const Framing framing = Framing::fit(source.width, source.height, static_cast<int>(manifest_.width),
                                       static_cast<int>(manifest_.height));
  EditStart start;
  start.strength = editing.strength;
  {
    Stopwatch watch(state.stage_ms, "encode_picture");
    const std::vector<float> image = to_engine_image(framing.to_engine(source.rgb), framing.engine_w,
                                                     framing.engine_h);  // [1, 3, H, W]
    std::vector<std::int64_t> shape;
    start.latents = engines_->run(
        vae_encoder::kName,
        {{vae_encoder::kImage.name, image.data(), false, {1, 3, manifest_.height, manifest_.width}}},
        &shape);  // [1, 4, h, w]
    if (start.latents.size() != static_cast<std::size_t>(kLatentChannels * latent_h_ * latent_w_)) {
      fail(ATRT_BUNDLE_ERROR, root_ + ": vae_encoder returned " + std::to_string(start.latents.size()) + " values",
           "re-export the bundle");
    }
    const auto scaling = static_cast<float>(manifest_.vae_scaling_factor);
    for (float& value : start.latents) value = value * scaling;
    require_finite(start.latents, "encode_picture", "the picture's latents");
    if (may_change != nullptr) {
      start.mask = latent_mask(framing.mask_to_engine(*may_change), framing.engine_w, framing.engine_h,
                               static_cast<int>(latent_w_), static_cast<int>(latent_h_));  // [1, 1, h, w]
    }
  }
  std::vector<std::uint8_t> frame(picture_bytes());  // [H, W, 3] at the engines' size
  for (std::size_t k = 0; k < seeds.size(); ++k) {
    std::vector<float> latents =
        denoise(embeddings, is_guided ? 2 : 1, seeds[k], options, is_guided, state, nullptr, &start);  // [1, 4, h, w]
    const std::vector<float> image = decode(std::move(latents), state);  // [1, 3, H, W]
    to_pixels(image, manifest_.height, manifest_.width, frame.data());
    put(composite(framing.from_engine(frame), source, may_change, editing.feather), k);
  }
}

}  // namespace atrt
