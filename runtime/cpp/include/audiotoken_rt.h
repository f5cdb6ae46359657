/* audiotoken_rt.h: the C API of audiotoken-rt, a sound clip -> pictures, with no Python on the device.
 *
 * The same data flow as the Python runtime (runtime/pipeline.py), over an engine bundle from `audiotoken-rt export`:
 *   samples (any rate, mono or interleaved channels) -> the 10 s, 16 kHz waveform -> audio_encoder -> token [D]
 *   -> prompt template with <*> (CLIP BPE) -> text_encoder -> UNet loop (classifier-free guidance, a scheduler,
 *   seeded noise) -> vae_decoder -> RGB8 pictures.
 * Same bundle, clip, options and seed: the same pictures as `audiotoken-rt generate` (the noise generator is
 * the Python runtime's, bit for bit), up to floating-point rounding; so too a mix of sounds (atrt_mix_tokens), a
 * clip's stereo sides (atrt_draw_options.stereo), several sounds in one picture (atrt_compose, as `compose`) and
 * edits of a picture (atrt_edit, as `edit`).
 *
 * Stable ABI: the context is opaque; option structs begin with `struct_size` and are filled by their *_init
 * function first (fields added later go at the end, so an older caller's smaller struct stays valid); only
 * fixed-width types cross the boundary; no exception crosses it: the functions that can fail catch everything
 * inside, and every function is declared noexcept to C++ callers (ATRT_NOEXCEPT).
 *
 * Errors: every function that can fail returns an atrt_status; on failure atrt_last_error() and
 * atrt_last_error_hint() describe it in one line each (the input, what was expected and received; what to do).
 * They are per thread and stay valid until the thread's next call into this library.
 *
 * Threads: as whisper.cpp's whisper_context and whisper_state, a context is the loaded bundle (manifest, tokenizer,
 * ONNX Runtime sessions, the cache of negative prompts' embeddings) and an atrt_state is one thread's calls on it
 * (what a call changes: its stage times). So one context serves many threads, each drawing with its own state:
 *   - atrt_bundle_info_get, atrt_tokenize, atrt_resolve_draw_options and atrt_state_new only read the context: any
 *     thread, any time, alongside any other call on it but atrt_close.
 *   - atrt_state_encode_audio, atrt_state_draw, atrt_state_generate, atrt_state_edit, atrt_state_compose,
 *     atrt_state_stage_ms and atrt_state_reset_stage_times: one thread at a time per state; different states,
 *     of one context or of several, run in parallel (the pictures are the same as drawn alone: nothing of one
 *     call reaches another's).
 *   - atrt_encode_audio, atrt_draw, atrt_generate, atrt_edit, atrt_compose, atrt_stage_ms and
 *     atrt_reset_stage_times use the context's own state: one thread at a time for these calls on one context
 *     (the caller serialises them), in parallel with other threads' states.
 *   - atrt_close once no call taking the context is running (its states' calls may go on); atrt_state_free once
 *     none on the state is. A state keeps its context's bundle loaded, so it may be freed before or after the
 *     context; the memory goes with the last of them. A state belongs to the context it was made from: the
 *     atrt_state_* calls take no context, so no state can be used with another one.
 * Several contexts, on the same bundle or not, also run in parallel, each loading its own copy.
 * Everything else (atrt_abi_version, atrt_last_error, the *_init functions, atrt_mix_tokens) may be called from any
 * thread.
 */
#ifndef AUDIOTOKEN_RT_H
#define AUDIOTOKEN_RT_H

#include <stddef.h>
#include <stdint.h>

#if defined(AUDIOTOKEN_RT_BUILDING)
#define ATRT_API __attribute__((visibility("default")))
#else
#define ATRT_API
#endif

#if defined(__cplusplus)
#define ATRT_NOEXCEPT noexcept
#else
#define ATRT_NOEXCEPT
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ATRT_ABI_VERSION 1   /* raised only when an existing function or struct field changes meaning */
#define ATRT_TEXT_LENGTH 77  /* CLIP's context: BOS + 75 tokens + EOS */
#define ATRT_RANDOM_SEED (-1) /* a fresh random seed for the first picture (reported in seeds_out) */
/* A clip's sample rate must lie in ATRT_MIN_SAMPLE_RATE..ATRT_MAX_SAMPLE_RATE Hz (runtime/audio.py MIN_SAMPLE_RATE and
 * MAX_SAMPLE_RATE). Of its samples only the window is read: ATRT_CLIP_SECONDS from start_seconds, and
 * ATRT_RESAMPLE_MARGIN_SECONDS more for the resampler, ceil((10 + 0.1) * rate) frames; a host decoding a file may
 * pass just those. */
#define ATRT_MIN_SAMPLE_RATE 4000
#define ATRT_MAX_SAMPLE_RATE 384000
#define ATRT_CLIP_SECONDS 10.0
#define ATRT_RESAMPLE_MARGIN_SECONDS 0.1
/* Bounds on a drawing's options, checked before any work (runtime/pipeline.py MAX_PROMPT_BYTES and MAX_NUM_IMAGES,
 * runtime/sampling.py MAX_GUIDANCE, runtime/schedulers.py MAX_ETA): a prompt or negative prompt of at most
 * ATRT_MAX_PROMPT_BYTES UTF-8 bytes, a finite guidance in 1..ATRT_MAX_GUIDANCE, an eta in 0..ATRT_MAX_ETA (ddim's
 * and tcd's only), 1..ATRT_MAX_NUM_IMAGES pictures per call. */
#define ATRT_MAX_PROMPT_BYTES 1000
#define ATRT_MAX_GUIDANCE 50.0
#define ATRT_MAX_ETA 1.0
#define ATRT_MAX_NUM_IMAGES 100
#define ATRT_RECIPE_ETA (-1.0) /* atrt_draw_options.eta left to the recipe (what atrt_draw_options_init sets) */
/* Edit, compose and mix (runtime/pipeline.py MAX_FEATHER, EditOptions, ComposeOptions; runtime/regions.py
 * MAX_REGIONS and DEFAULT_BLEND; runtime/source_picture.py MAX_PIXELS): a picture of 1..ATRT_MAX_PICTURE_PIXELS
 * pixels, a strength in 0..1, a feather of 0..ATRT_MAX_FEATHER pixels, 1..ATRT_MAX_COMPOSE_SOUNDS tokens in a
 * composition (at most the bundle's token slots without a layout, one per region with one), a blend in (0, 1],
 * 1..ATRT_MAX_MIX_SOUNDS tokens in a mix. */
#define ATRT_MAX_PICTURE_PIXELS 67108864
#define ATRT_MAX_FEATHER 256
#define ATRT_DEFAULT_STRENGTH 0.6
#define ATRT_DEFAULT_FEATHER 8
#define ATRT_MAX_COMPOSE_SOUNDS 16
#define ATRT_DEFAULT_BLEND 0.125
#define ATRT_MAX_MIX_SOUNDS 1024

typedef enum atrt_status {
  ATRT_OK = 0,
  ATRT_INVALID_ARGUMENT = 1, /* a null pointer, a buffer too small, a struct_size this library does not know */
  ATRT_CONFIG_ERROR = 2,     /* an option or prompt out of range: scheduler, steps, guidance, seed, template */
  ATRT_AUDIO_ERROR = 3,      /* samples that cannot make a waveform: none, non-finite, a bad rate or channel count */
  ATRT_BUNDLE_ERROR = 4,     /* a bundle missing, tampered with (sha256), off the engine contract, or unreadable */
  ATRT_RUNTIME_ERROR = 5,    /* ONNX Runtime failed, or an execution provider is not really available */
  ATRT_OUT_OF_MEMORY = 6,
  ATRT_INTERNAL_ERROR = 7,
  ATRT_NUMERIC_ERROR = 8     /* a stage produced NaN or Inf (damaged weights, numbers out of range): no picture */
} atrt_status;

typedef enum atrt_downmix {
  ATRT_DOWNMIX_FIRST = 0,  /* channel 0, as the official inference */
  ATRT_DOWNMIX_MEAN = 1,   /* the mean of the channels */
  ATRT_DOWNMIX_SECOND = 2  /* channel 1 (channel 0 of a mono clip) */
} atrt_downmix;

typedef struct atrt_context atrt_context;
typedef struct atrt_state atrt_state; /* one thread's calls on a context (atrt_state_new) */

/* How to open a bundle. */
typedef struct atrt_open_options {
  uint32_t struct_size; /* sizeof(atrt_open_options), set by atrt_open_options_init */
  const char* device;   /* "cpu" (default when NULL), "cuda" or "tensorrt": ONNX Runtime's execution provider */
  int32_t threads;      /* ONNX Runtime intra-op threads; 0: its default */
} atrt_open_options;

/* A clip: float samples, full scale [-1, 1), `frames` frames of `channels` interleaved samples. */
typedef struct atrt_audio {
  uint32_t struct_size;  /* sizeof(atrt_audio), set by atrt_audio_init */
  const float* samples;  /* frames * channels values */
  uint64_t frames;
  uint32_t channels;     /* 1 (mono) or more (interleaved) */
  double sample_rate;    /* Hz, ATRT_MIN_SAMPLE_RATE..ATRT_MAX_SAMPLE_RATE: resampled to 16 kHz as the Python
                          * runtime does (soxr HQ) */
  double start_seconds;  /* where the 10 s window starts; a shorter rest is loop-tiled */
  int32_t downmix;       /* an atrt_downmix */
} atrt_audio;

/* How to draw. Fields left at their *_init value come from the bundle's recipe (its distillation preset's); a
 * recipe's eta and timestep spacing go with its scheduler: options naming another scheduler leave them behind (eta
 * 0, the scheduler config's spacing) unless they set them too. */
typedef struct atrt_draw_options {
  uint32_t struct_size;        /* sizeof(atrt_draw_options), set by atrt_draw_options_init; the size before eta
                                * and timestep_spacing (an older caller's) reads them as the recipe's */
  const char* prompt;          /* template holding <*> once; NULL: the bundle's template */
  const char* negative_prompt; /* the unconditional branch; NULL: "" */
  const char* scheduler;       /* "dpm++2m", "pndm", "ddim", "euler", "euler-a", "lcm", "tcd"; NULL: the
                                * recipe's */
  int32_t steps;               /* denoising steps; 0: the recipe's */
  float guidance;              /* classifier-free guidance, 1..ATRT_MAX_GUIDANCE; 0: the recipe's */
  int64_t seed;                /* first picture's seed, 0 .. 2^63-1; picture k gets seed + k; ATRT_RANDOM_SEED */
  int32_t num_images;          /* pictures to draw, 1..ATRT_MAX_NUM_IMAGES */
  int32_t fast;                /* nonzero: ask for the bundle's distillation preset (e.g. LCM, 4 steps, guidance 1)
                                * for unset fields; ATRT_CONFIG_ERROR for a bundle without one */
  float eta;                   /* ddim's fresh noise per step or tcd's gamma, 0 (deterministic) to ATRT_MAX_ETA;
                                * ATRT_RECIPE_ETA: the recipe's */
  const char* timestep_spacing; /* "leading", "trailing" (the first step at the last training timestep: for few
                                 * steps) or "linspace", not for lcm or tcd; NULL: the recipe's (else the bundle's
                                 * scheduler config's) */
  int32_t stereo;              /* nonzero (atrt_generate only): the clip's first and second channels each give a
                                * token, drawn on its side of the picture, the split where their energies balance;
                                * equal channels (or mono) give the plain picture. A struct of the size before it
                                * (an older caller's) reads 0. */
} atrt_draw_options;

/* A picture of the caller's: `height` rows of `width` pixels of `channels` bytes each, no padding between rows.
 * channels: 3 (RGB8) or 4 (RGBA8, straight alpha, 255 opaque); a mask may also be 1 (grey8). */
typedef struct atrt_picture {
  uint32_t struct_size; /* sizeof(atrt_picture), set by atrt_picture_init */
  const uint8_t* pixels;
  int32_t width, height;
  int32_t channels;
} atrt_picture;

/* How to edit a picture (SDEdit, optionally masked), as `audiotoken-rt edit`. */
typedef struct atrt_edit_options {
  uint32_t struct_size;      /* sizeof(atrt_edit_options), set by atrt_edit_options_init */
  double strength;           /* how far the picture may move, 0 (returned unchanged) to 1 (drawn anew from noise);
                              * ATRT_DEFAULT_STRENGTH */
  int32_t feather;           /* with a mask: its soft edge, 0..ATRT_MAX_FEATHER pixels of the picture, inside the
                              * white region; ATRT_DEFAULT_FEATHER */
  const atrt_picture* mask;  /* NULL: all may change; else where it may: white (>= 50% grey, times alpha) may
                              * change, darker stays exactly the picture's; another size is stretched (nearest) */
} atrt_edit_options;

/* How to draw several sounds in one picture, as `audiotoken-rt compose`. */
typedef struct atrt_compose_options {
  uint32_t struct_size;   /* sizeof(atrt_compose_options), set by atrt_compose_options_init */
  const char* layout;     /* NULL: one prompt holds <1>..<K> (default: the template, <*> read as '<1> and <2> ...');
                           * else a region per token: "left,right", "top,bottom" (and reversed), "ROWSxCOLS" (row by
                           * row), or boxes "x0,y0,x1,y1;..." in fractions (0,0 the top left); each region draws the
                           * one-sound prompt (<*>) with its token */
  const char* background; /* with a layout: the prompt (no sound) for what the regions leave; NULL: none */
  double blend;           /* with a layout: the soft edge between regions, a fraction in (0, 1] of the picture's
                           * shorter side; ATRT_DEFAULT_BLEND */
} atrt_compose_options;

/* What a bundle draws: picture size, token width, template and recipe. Strings live as long as the context. */
typedef struct atrt_bundle_info {
  uint32_t struct_size; /* sizeof(atrt_bundle_info), set by atrt_bundle_info_init */
  int32_t width, height;    /* pixels of each picture */
  int32_t token_dim;        /* D: floats in an audio token */
  const char* template_prompt;
  const char* scheduler;    /* the recipe's */
  int32_t steps;
  float guidance;
  int32_t fast;             /* nonzero: a distillation preset's LoRA fused, tiny decoder, a UNet of batch 1 */
  const char* device;       /* the execution provider the engines run on, e.g. "CPUExecutionProvider" */
  const char* bundle_id;    /* short id of the bundle's content */
  float eta;                /* the recipe's */
  const char* timestep_spacing; /* the recipe's; NULL: the bundle's scheduler config's */
} atrt_bundle_info;

ATRT_API uint32_t atrt_abi_version(void) ATRT_NOEXCEPT;
ATRT_API const char* atrt_version(void) ATRT_NOEXCEPT;
ATRT_API const char* atrt_last_error(void) ATRT_NOEXCEPT;
ATRT_API const char* atrt_last_error_hint(void) ATRT_NOEXCEPT;

ATRT_API void atrt_open_options_init(atrt_open_options* options) ATRT_NOEXCEPT;
ATRT_API void atrt_audio_init(atrt_audio* audio) ATRT_NOEXCEPT;
ATRT_API void atrt_draw_options_init(atrt_draw_options* options) ATRT_NOEXCEPT;
ATRT_API void atrt_bundle_info_init(atrt_bundle_info* info) ATRT_NOEXCEPT;
ATRT_API void atrt_picture_init(atrt_picture* picture) ATRT_NOEXCEPT;
ATRT_API void atrt_edit_options_init(atrt_edit_options* options) ATRT_NOEXCEPT;
ATRT_API void atrt_compose_options_init(atrt_compose_options* options) ATRT_NOEXCEPT;

/* Open the bundle in `folder`: its manifest read and checked as the Python runtime does (schema, every file's
 * sha256, the engines' I/O against the engine contract), its tokenizer loaded, the execution provider checked.
 * `options` may be NULL (CPU). On success *context is a new context for atrt_close; on failure it is NULL. */
ATRT_API atrt_status atrt_open(const char* folder, const atrt_open_options* options,
                               atrt_context** context) ATRT_NOEXCEPT;
ATRT_API void atrt_close(atrt_context* context) ATRT_NOEXCEPT; /* NULL is fine */

ATRT_API atrt_status atrt_bundle_info_get(atrt_context* context, atrt_bundle_info* info) ATRT_NOEXCEPT;

/* The prompt's CLIP input ids, padded to ATRT_TEXT_LENGTH. require_placeholder nonzero: `prompt` must hold <*>
 * (or <1>) exactly once, as a template. A prompt of more than 77 tokens is refused (ATRT_CONFIG_ERROR). */
ATRT_API atrt_status atrt_tokenize(atrt_context* context, const char* prompt, int32_t require_placeholder,
                                   int64_t ids_out[ATRT_TEXT_LENGTH]) ATRT_NOEXCEPT;

/* A clip -> its audio token (token_dim floats, see atrt_bundle_info). */
ATRT_API atrt_status atrt_encode_audio(atrt_context* context, const atrt_audio* audio, float* token_out,
                                       size_t token_capacity) ATRT_NOEXCEPT;

/* Pictures of a token: options->num_images RGB8 pictures, height x width x 3 bytes each, one after another in
 * `pixels_out` (capacity in bytes); `seeds_out` (may be NULL) receives each picture's seed. */
ATRT_API atrt_status atrt_draw(atrt_context* context, const float* token, size_t token_size,
                               const atrt_draw_options* options, uint8_t* pixels_out, size_t pixels_capacity,
                               int64_t* seeds_out) ATRT_NOEXCEPT;

/* The options a drawing with `options` (may be NULL: the *_init values) uses, into *resolved: every recipe field set
 * from the bundle's recipe (timestep_spacing NULL where it is the bundle's scheduler config's),
 * the prompt the bundle's template where NULL, and checked as atrt_draw checks them (ATRT_CONFIG_ERROR otherwise).
 * Its strings are the caller's own or the library's, valid as long as the context and the caller's strings. */
ATRT_API atrt_status atrt_resolve_draw_options(atrt_context* context, const atrt_draw_options* options,
                                               atrt_draw_options* resolved) ATRT_NOEXCEPT;

/* atrt_encode_audio then atrt_draw. */
ATRT_API atrt_status atrt_generate(atrt_context* context, const atrt_audio* audio, const atrt_draw_options* options,
                                   uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) ATRT_NOEXCEPT;

/* Milliseconds spent per stage since the context opened (or since the last reset): "encode_audio",
 * "encode_prompt", "denoise", "unet", "decode_latents"; 0 for an unknown stage. They count the calls on the
 * context's own state (atrt_encode_audio, atrt_draw, atrt_generate), not those of the states made from it. */
ATRT_API double atrt_stage_ms(const atrt_context* context, const char* stage) ATRT_NOEXCEPT;
ATRT_API void atrt_reset_stage_times(atrt_context* context) ATRT_NOEXCEPT;

/* A new state for drawing from `context` on one thread at a time (see Threads above): *state is it, for
 * atrt_state_free; NULL on failure. It is small (its stage times); the loaded bundle is the context's, shared. */
ATRT_API atrt_status atrt_state_new(atrt_context* context, atrt_state** state) ATRT_NOEXCEPT;
ATRT_API void atrt_state_free(atrt_state* state) ATRT_NOEXCEPT; /* NULL is fine */

/* atrt_encode_audio, atrt_draw, atrt_generate, atrt_stage_ms and atrt_reset_stage_times on a state made from the
 * context by atrt_state_new: the same checks, errors and pictures; the stage times are the state's. */
ATRT_API atrt_status atrt_state_encode_audio(atrt_state* state, const atrt_audio* audio, float* token_out,
                                             size_t token_capacity) ATRT_NOEXCEPT;
ATRT_API atrt_status atrt_state_draw(atrt_state* state, const float* token, size_t token_size,
                                     const atrt_draw_options* options, uint8_t* pixels_out, size_t pixels_capacity,
                                     int64_t* seeds_out) ATRT_NOEXCEPT;
ATRT_API atrt_status atrt_state_generate(atrt_state* state, const atrt_audio* audio,
                                         const atrt_draw_options* options, uint8_t* pixels_out,
                                         size_t pixels_capacity, int64_t* seeds_out) ATRT_NOEXCEPT;
ATRT_API double atrt_state_stage_ms(const atrt_state* state, const char* stage) ATRT_NOEXCEPT;
ATRT_API void atrt_state_reset_stage_times(atrt_state* state) ATRT_NOEXCEPT;

/* A mix of sounds: `count` tokens of `token_dim` floats one after another -> their weighted mean, the one token of
 * `audiotoken-rt generate --mix` (the weights normalised to sum 1; one may be negative, a sound taken away; they
 * must be finite and sum to a positive number: ATRT_CONFIG_ERROR otherwise). count 1..ATRT_MAX_MIX_SOUNDS; the
 * tokens must be finite. Needs no context. */
ATRT_API atrt_status atrt_mix_tokens(const float* tokens, uint32_t count, uint32_t token_dim, const double* weights,
                                     float* token_out) ATRT_NOEXCEPT;

/* Edits of `picture` by a token (as `audiotoken-rt edit`): the picture fitted to the bundle's size (scaled, margins
 * mirrored), encoded (vae_encoder), noised to edit->strength and denoised with the prompt holding the token, the
 * masked-out part kept on the picture's way; the result brought back to the picture's own size and, with a mask,
 * laid over it under the feathered mask. options->num_images pictures of the picture's width x height x channels
 * (its alpha put back) one after another in `pixels_out`; `edit` may be NULL (the *_init values). Strength 0 gives
 * the picture itself. options->stereo must be 0. */
ATRT_API atrt_status atrt_edit(atrt_context* context, const float* token, size_t token_size,
                               const atrt_picture* picture, const atrt_draw_options* options,
                               const atrt_edit_options* edit, uint8_t* pixels_out, size_t pixels_capacity,
                               int64_t* seeds_out) ATRT_NOEXCEPT;
ATRT_API atrt_status atrt_state_edit(atrt_state* state, const float* token, size_t token_size,
                                     const atrt_picture* picture, const atrt_draw_options* options,
                                     const atrt_edit_options* edit, uint8_t* pixels_out, size_t pixels_capacity,
                                     int64_t* seeds_out) ATRT_NOEXCEPT;

/* Several sounds in one picture (as `audiotoken-rt compose`): `token_count` tokens of `token_size` floats (the
 * bundle's D) one after another; `compose` may be NULL (no layout: the prompt holds <1>..<K>). Pictures as
 * atrt_draw's; options->stereo must be 0. */
ATRT_API atrt_status atrt_compose(atrt_context* context, const float* tokens, size_t token_count, size_t token_size,
                                  const atrt_draw_options* options, const atrt_compose_options* compose,
                                  uint8_t* pixels_out, size_t pixels_capacity, int64_t* seeds_out) ATRT_NOEXCEPT;
ATRT_API atrt_status atrt_state_compose(atrt_state* state, const float* tokens, size_t token_count,
                                        size_t token_size, const atrt_draw_options* options,
                                        const atrt_compose_options* compose, uint8_t* pixels_out,
                                        size_t pixels_capacity, int64_t* seeds_out) ATRT_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* AUDIOTOKEN_RT_H */
