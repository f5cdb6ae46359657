// The generation pipeline (see pipeline.hpp): stages 2-6 of runtime/pipeline.py for one sound and one prompt. Every
// method is const: what a call changes goes to the caller's PipelineState.
#include "pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "contract.hpp"
#include "errors.hpp"
#include "noise.hpp"
#include "schedulers.hpp"

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
    fail(ATRT_BUNDLE_ERROR, root_ + ": audio_encoder returned " + std::to_string(token.size()) + " values, expected D = " +
                                std::to_string(manifest_.token_dim), "re-export the bundle");
  }
  require_finite(token, "encode_audio", "the audio token");
  return token;
}

bool Pipeline::guided(const DrawOptions& options) const {
  return !(options.sampling.guidance == 1.0 && manifest_.recipe.holds(1));
}

DrawOptions Pipeline::resolve(const DrawOptions& given) const {
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
  make_scheduler(o.sampling, manifest_.scheduler_config);  // steps in range, config implemented
  tokenizer_.encode(o.negative_prompt, false);
  if (o.prompt.empty()) o.prompt = manifest_.template_prompt;
  tokenizer_.encode(o.prompt, true);
  return o;
}

std::vector<float> Pipeline::embed(const std::string& prompt, const std::vector<float>& token,
                                   bool require_placeholder) const {
  const std::vector<std::int64_t> ids = tokenizer_.encode(prompt, require_placeholder);  // [77]
  const auto d = static_cast<std::int64_t>(manifest_.token_dim);
  std::vector<float> feed;  // [1, S, D] with unused slots zero, or [1, D] for a bundle of one slot
  std::vector<std::int64_t> feed_shape;
  if (manifest_.token_slots == 1) {
    feed = token;
    feed_shape = {1, d};
  } else {
    feed.assign(static_cast<std::size_t>(manifest_.token_slots * d), 0.0f);
    std::copy(token.begin(), token.end(), feed.begin());
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
std::vector<float> Pipeline::unconditional(const std::string& negative_prompt, const std::vector<float>& token) const {
  if (holds_slot(negative_prompt)) return embed(negative_prompt, token, false);  // it hears the sound too: not cached
  {
    const std::lock_guard<std::mutex> lock(uncond_mutex_);
    if (std::optional<std::vector<float>> cached = uncond_cache_.get(negative_prompt)) return *std::move(cached);
  }
  std::vector<float> uncond = embed(negative_prompt, std::vector<float>(token.size(), 0.0f), false);
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
      fail(ATRT_BUNDLE_ERROR, root_ + ": unet returned " + std::to_string(noise.size()) + " values", "re-export the bundle");
    }
    predictions.insert(predictions.end(), noise.begin(), noise.begin() + static_cast<std::ptrdiff_t>(count * latent));
  }
  return predictions;  // [rows, 4, h, w]
}

std::vector<float> Pipeline::denoise(const std::vector<float>& embeddings, std::size_t rows, std::int64_t seed,
                                     const DrawOptions& options, bool is_guided, PipelineState& state) const {
  Stopwatch watch(state.stage_ms, "denoise");
  const std::unique_ptr<Scheduler> scheduler = make_scheduler(options.sampling, manifest_.scheduler_config);
  const auto size = static_cast<std::size_t>(kLatentChannels * latent_h_ * latent_w_);
  std::vector<float> latents = NoiseStream(static_cast<std::uint64_t>(seed), kInitialNoise).standard_normal(size);
  const auto sigma = static_cast<float>(scheduler->init_noise_sigma());
  for (float& value : latents) value = value * sigma;
  NoiseStream step_noise(static_cast<std::uint64_t>(seed), kStepNoise);
  History history;
  std::vector<float> model_input(size), cond(size);
  const auto guidance = static_cast<float>(options.sampling.guidance);
  for (std::size_t i = 0; i < scheduler->timesteps().size(); ++i) {
    scheduler->scale_model_input(latents.data(), model_input.data(), size, i);
    const std::vector<float> noise_pred = predict(model_input, scheduler->timesteps()[i], embeddings, rows, state);
    const float* conditional = noise_pred.data() + (rows - 1) * size;
    for (std::size_t k = 0; k < size; ++k) {
      if (is_guided) {
        const float uncond = noise_pred[k];
        cond[k] = uncond + guidance * (conditional[k] - uncond);
      } else {
        cond[k] = conditional[k];
      }
    }
    scheduler->step(cond.data(), i, latents.data(), size, history, &step_noise);
    require_finite(latents, "denoise",
                   "the latents after step " + std::to_string(i + 1) + " of " + std::to_string(scheduler->timesteps().size()));
  }
  return latents;
}

void Pipeline::draw(const std::vector<float>& token, const DrawOptions& given, std::uint8_t* pixels,
                    std::vector<std::int64_t>& seeds, PipelineState& state) const {
  if (token.size() != static_cast<std::size_t>(manifest_.token_dim)) {
    fail(ATRT_INVALID_ARGUMENT, "token has " + std::to_string(token.size()) + " values; this bundle's D is " +
                                    std::to_string(manifest_.token_dim));
  }
  if (!std::all_of(token.begin(), token.end(), [](float v) { return std::isfinite(v); })) {
    fail(ATRT_INVALID_ARGUMENT, "token holds a value that is not finite (NaN or Inf)", "pass a token from atrt_encode_audio");
  }
  const DrawOptions options = resolve(given);
  std::int64_t first = options.seed;
  if (first == -1) first = static_cast<std::int64_t>(std::random_device{}() % 2147483646u);
  const bool is_guided = guided(options);
  std::vector<float> embeddings;  // [2, 77, D] (uncond, cond) or [1, 77, D]
  {
    Stopwatch watch(state.stage_ms, "encode_prompt");
    if (is_guided) embeddings = unconditional(options.negative_prompt, token);
    const std::vector<float> cond = embed(options.prompt, token, true);
    embeddings.insert(embeddings.end(), cond.begin(), cond.end());
  }
  const std::size_t rows = is_guided ? 2 : 1;
  seeds.clear();
  for (int k = 0; k < options.num_images; ++k) {
    const std::int64_t seed = first + k;
    seeds.push_back(seed);
    std::vector<float> latents = denoise(embeddings, rows, seed, options, is_guided, state);  // [1, 4, h, w]
    Stopwatch watch(state.stage_ms, "decode_latents");
    const auto scaling = static_cast<float>(manifest_.vae_scaling_factor);
    for (float& value : latents) value = value / scaling;
    std::vector<std::int64_t> shape;
    const std::vector<float> image =
        engines_->run(vae_decoder::kName,
                      {{vae_decoder::kLatent.name, latents.data(), false, {1, kLatentChannels, latent_h_, latent_w_}}},
                      &shape);
    if (image.size() != picture_bytes()) {
      fail(ATRT_BUNDLE_ERROR, root_ + ": vae_decoder returned " + std::to_string(image.size()) + " values, expected " +
                                  std::to_string(picture_bytes()), "re-export the bundle");
    }
    require_finite(image, "decode_latents", "the picture");
    to_pixels(image, manifest_.height, manifest_.width, pixels + static_cast<std::size_t>(k) * picture_bytes());
  }
}

}  // namespace atrt
