// The generation pipeline: a clip's samples -> audio token -> prompt embeddings -> denoised latents -> RGB8
// pictures, chaining a bundle's engines the way runtime/pipeline.py does (its stages 1-6):
//   1. prepare_waveform   samples -> [160000] floats (waveform.hpp)
//   2. encode_audio       waveform [1, 160000] -> token [1, D]                         (audio_encoder); a mix is the
//                         weighted mean of its sounds' tokens (mix.hpp, the caller's: atrt_mix_tokens)
//   3. encode_prompt      template ids + tokens [K, D] -> [2, 77, D] (uncond, cond) or [1, 77, D] (text_encoder;
//                         the tokens in slots 0..K-1 of [1, S, D] for bundles of S slots, [1, D] for old ones; the
//                         negative prompt's embedding cached, the kUnconditionalCacheSize most recent ones);
//                         compose: K sounds at <1>..<K> of one prompt, or a row per region (+ background)
//   4. denoise            the seed's noise -> latents [1, 4, h, w]: UNet (batch 2 = classifier-free guidance, or
//                         batch 1 at guidance 1 on a bundle holding it) + a scheduler step per timestep; regions
//                         (compose --layout, stereo) blend their rows' predictions under region_weights
//                         (regions.hpp); an edit starts from its picture's latents (vae_encoder) noised to the
//                         strength and keeps the masked-out latents on the picture's trajectory
//   5. decode_latents     latents / scaling factor -> image [1, 3, 8h, 8w]                (vae_decoder)
//   6. to_pixels          image in [-1, 1] -> RGB8 (x / 2 + 0.5, clamped, rounded half to even); an edit is
//                         brought back to its picture's size and composited under the mask (source_picture.hpp)
// Entry points: draw (one token: a sound or a mix), draw_stereo (a clip's two channels), compose (K tokens),
// edit (a picture and a token).
// Picture k of a call has seed + k and takes all its noise from that seed's streams (noise.hpp).
// A stage whose output holds NaN or Inf (the token, the text embeddings, an edit's picture latents, the latents,
// the picture) ends the call with ATRT_NUMERIC_ERROR naming the stage: no picture is returned.
//
// Threads: as whisper.cpp splits whisper_context from whisper_state, a Pipeline is the loaded bundle (manifest,
// tokenizer, engines, the unconditional cache) and a PipelineState is what one call changes (its stage times). A
// Pipeline's methods are const and safe from several threads at once: ONNX Runtime runs one session's calls
// concurrently, each engine's session is created once under its own lock (engines.hpp), and the unconditional
// cache is shared under a lock (as runtime/pipeline.py's), so a negative prompt embedded by one thread serves all
// and the cache stays one bounded size however many states there are. A PipelineState serves one thread at a
// time; each thread drawing at once brings its own.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engines.hpp"
#include "lru_cache.hpp"
#include "manifest.hpp"
#include "regions.hpp"
#include "source_picture.hpp"
#include "tokenizer.hpp"

namespace atrt {

// Negative prompts whose embeddings [1, 77, D] a Pipeline keeps for all its states, the least recently used
// forgotten first (runtime/pipeline.py UNCOND_CACHE_SIZE): 64 x 77 x 768 floats, 15 MB for Stable Diffusion 1.x.
constexpr std::size_t kUnconditionalCacheSize = 64;
constexpr int kMaxFeather = 256;  // runtime/pipeline.py MAX_FEATHER: pixels of an edit's soft mask edge
constexpr double kDefaultStrength = 0.6;  // runtime/pipeline.py EditOptions.strength
constexpr int kDefaultFeather = 8;        // runtime/pipeline.py EditOptions.feather

struct DrawOptions {
  std::string prompt;            // empty: the bundle's template
  std::string negative_prompt;
  Sampling sampling;             // fields left unset: the recipe's (a distillation preset's with `fast`: sampling.hpp)
  std::int64_t seed = -1;        // -1: random
  int num_images = 1;
  bool fast = false;
  bool stereo = false;           // draw_stereo's: draw and compose refuse it (it needs the clip's two channels)
};

// How far an edit moves its picture (runtime/pipeline.py EditOptions): strength 0 gives the picture back, 1 draws
// anew; feather: the mask's soft edge in the picture's pixels, inside its white region.
struct EditOptions {
  double strength = kDefaultStrength;
  int feather = kDefaultFeather;
};

// Several sounds in one picture (runtime/pipeline.py ComposeOptions): no layout, the prompt holds <1>..<K>; a
// layout gives sound k box k with the one-sound prompt, `background` (a prompt, no sound) what the boxes leave.
struct ComposeOptions {
  std::optional<std::string> layout;
  std::optional<std::string> background;
  double blend = kDefaultBlend;
};

// Wall time per stage in ms; std::less<> looks a C string up without building a std::string (atrt_stage_ms).
using StageTimes = std::map<std::string, double, std::less<>>;

// What a call into a Pipeline changes, owned by the caller (an atrt_state): one thread at a time. A later feature's
// per-call things (scratch a call keeps between stages) belong here, not in the Pipeline.
struct PipelineState {
  StageTimes stage_ms;  // wall time per stage, summed over the calls made with this state
};

class Pipeline {
 public:
  Pipeline(const std::string& folder, const std::string& device, int threads);
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  const Manifest& manifest() const { return manifest_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const std::string& provider() const { return engines_->provider(); }
  std::size_t picture_bytes() const {
    return static_cast<std::size_t>(manifest_.height) * static_cast<std::size_t>(manifest_.width) * 3;
  }

  std::vector<float> encode_audio(const std::vector<float>& waveform, PipelineState& state) const;  // [160000] -> [D]
  std::size_t cached_negative_prompts() const;
  // options completed from the recipe (every field of `sampling` set; its spacing empty where it is the scheduler
  // config's), and checked (CONFIG error naming the value; `fast` on a bundle holding no distillation preset)
  // `strength`: an edit's (its scheduler built for it; 0 counts as 1). `template_prompt`: the prompt is a
  // one-sound template (the bundle's where empty); false (compose) leaves it to the caller.
  DrawOptions resolve(const DrawOptions& options, double strength = 1.0, bool template_prompt = true) const;
  // num_images pictures of `token` [D], RGB8 one after another; their seeds in `seeds`
  void draw(const std::vector<float>& token, const DrawOptions& options, std::uint8_t* pixels,
            std::vector<std::int64_t>& seeds, PipelineState& state) const;
  // generate --stereo: the waveforms of a clip's first and second channels [160000] each, and of its downmix
  // (`plain`); equal sides draw `plain` as draw does, else each side's token in its region (stereo_boxes split
  // where the channels' energies balance). Pictures as draw's.
  void draw_stereo(const std::vector<float>& left, const std::vector<float>& right, const std::vector<float>& plain,
                   const DrawOptions& options, std::uint8_t* pixels, std::vector<std::int64_t>& seeds,
                   PipelineState& state) const;
  // K tokens [K][D] in one picture (runtime/pipeline.py draw_compose); pictures as draw's.
  void compose(const std::vector<std::vector<float>>& tokens, const DrawOptions& options,
               const ComposeOptions& composing, std::uint8_t* pixels, std::vector<std::int64_t>& seeds,
               PipelineState& state) const;
  // num_images edits of `source` by `token` (runtime/pipeline.py draw_edit), each at the source's size with its
  // channels (RGB8, or RGBA8 with its alpha put back): source.width * height * (3 or 4) bytes one after another.
  // `may_change`: the mask [H, W] in {0, 1} at the source's size (mask_from_pixels), or null.
  void edit(const std::vector<float>& token, const Pixels& source, const std::vector<float>* may_change,
            const DrawOptions& options, const EditOptions& editing, std::uint8_t* pixels,
            std::vector<std::int64_t>& seeds, PipelineState& state) const;

 private:
  struct EditStart;  // an edit's picture latents, latent mask and strength (pipeline.cpp)
  // `tokens` [K * D] at <1>..<K> of `prompt` -> [1, 77, D]
  std::vector<float> embed(const std::string& prompt, const std::vector<float>& tokens, bool require_placeholder) const;
  std::vector<float> unconditional(const std::string& negative_prompt, const std::vector<float>& tokens) const;
  // tokens [K * D] -> [2, 77, D] (uncond, cond) when guided, else [1, 77, D]
  std::vector<float> encode_prompt(const std::vector<float>& tokens, const std::string& prompt,
                                   const std::string& negative_prompt, bool guided, PipelineState& state) const;
  // The checked token [D] of a caller.
  void require_token(const std::vector<float>& token, const std::string& what) const;
  // Stages 4-6 for every seed: `rows` embedding rows; `weights` [C, h, w] for C > 1 conditional rows.
  void draw_seeds(const std::vector<float>& embeddings, std::size_t rows, const DrawOptions& options, bool guided,
                  const std::vector<float>* weights, std::uint8_t* pixels, std::vector<std::int64_t>& seeds,
                  PipelineState& state) const;
  // K tokens [K * D] in boxes (one-sound `prompt` each), `background` around them: draw_seeds of the regions.
  void draw_regions(const std::vector<float>& tokens, const std::vector<Box>& boxes, const DrawOptions& options,
                    const std::optional<std::string>& background, double blend, std::uint8_t* pixels,
                    std::vector<std::int64_t>& seeds, PipelineState& state) const;
  std::vector<float> denoise(const std::vector<float>& embeddings, std::size_t rows, std::int64_t seed,
                             const DrawOptions& options, bool guided, PipelineState& state,
                             const std::vector<float>* weights = nullptr, const EditStart* start = nullptr) const;
  // latents [1, 4, h, w] -> image [1, 3, H, W] in [-1, 1], checked
  std::vector<float> decode(std::vector<float> latents, PipelineState& state) const;
  static std::int64_t first_seed(const DrawOptions& options);
  std::vector<float> predict(const std::vector<float>& model_input, double timestep,
                             const std::vector<float>& embeddings, std::size_t rows, PipelineState& state) const;
  bool guided(const DrawOptions& options) const;
  // A stage's output must be finite: NaN or Inf is a NUMERIC error naming the stage (as runtime/pipeline.py).
  void require_finite(const std::vector<float>& values, const char* stage, const std::string& what) const;

  std::string root_;
  Manifest manifest_;
  Tokenizer tokenizer_;
  std::unique_ptr<Engines> engines_;
  mutable std::mutex uncond_mutex_;  // guards uncond_cache_ (held for a look-up or an insertion, never a run)
  mutable LruCache<std::string, std::vector<float>> uncond_cache_{kUnconditionalCacheSize};
  std::int64_t latent_h_ = 0, latent_w_ = 0;
};

}  // namespace atrt
