/* Bad input through the C API, in C (the header must serve C callers): each case prints one line
 * "<case> <status> <message>" for tests/test_cpp.py, which checks every status; built with AddressSanitizer and
 * UBSan in the test build, so a crash, a leak or undefined behaviour fails the run. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audiotoken_rt.h"

/* The option structs as ABI 1 first shipped them, before eta and timestep_spacing were added at their ends: a caller
 * built then passes these sizes. Frozen here, apart from the header, so that a field inserted before eta (which would
 * move where the library believes an older caller's struct ends) fails to compile. */
typedef struct {
  uint32_t struct_size;
  const char* prompt;
  const char* negative_prompt;
  const char* scheduler;
  int32_t steps;
  float guidance;
  int64_t seed;
  int32_t num_images;
  int32_t fast;
} draw_options_v1;
typedef struct {
  uint32_t struct_size;
  int32_t width, height;
  int32_t token_dim;
  const char* template_prompt;
  const char* scheduler;
  int32_t steps;
  float guidance;
  int32_t fast;
  const char* device;
  const char* bundle_id;
} bundle_info_v1;
_Static_assert(sizeof(draw_options_v1) == offsetof(atrt_draw_options, eta), "atrt_draw_options changed before eta");
_Static_assert(sizeof(bundle_info_v1) == offsetof(atrt_bundle_info, eta), "atrt_bundle_info changed before eta");
/* atrt_draw_options as it was before stereo was appended, and the edit and compose structs as they first shipped. */
typedef struct {
  draw_options_v1 v1;
  float eta;
  const char* timestep_spacing;
} draw_options_v2;
typedef struct {
  uint32_t struct_size;
  const uint8_t* pixels;
  int32_t width, height;
  int32_t channels;
} picture_v1;
typedef struct {
  uint32_t struct_size;
  double strength;
  int32_t feather;
  const atrt_picture* mask;
} edit_options_v1;
typedef struct {
  uint32_t struct_size;
  const char* layout;
  const char* background;
  double blend;
} compose_options_v1;
_Static_assert(sizeof(draw_options_v2) == offsetof(atrt_draw_options, stereo),
               "atrt_draw_options changed before stereo");
_Static_assert(sizeof(picture_v1) == sizeof(atrt_picture), "atrt_picture changed");
_Static_assert(offsetof(atrt_picture, channels) == offsetof(picture_v1, channels), "atrt_picture's fields moved");
_Static_assert(sizeof(edit_options_v1) == sizeof(atrt_edit_options), "atrt_edit_options changed");
_Static_assert(offsetof(atrt_edit_options, mask) == offsetof(edit_options_v1, mask), "atrt_edit_options' fields moved");
_Static_assert(sizeof(compose_options_v1) == sizeof(atrt_compose_options), "atrt_compose_options changed");
_Static_assert(offsetof(atrt_compose_options, blend) == offsetof(compose_options_v1, blend),
               "atrt_compose_options' fields moved");

static void show(const char* name, atrt_status status) {
  printf("%s %d %s\n", name, (int)status, status == ATRT_OK ? "" : atrt_last_error());
}

static atrt_audio clip(float* samples, uint64_t frames) {
  atrt_audio audio;
  atrt_audio_init(&audio);
  audio.samples = samples;
  audio.frames = frames;
  return audio;
}

int run_bad_input(const char* bundle) {
  atrt_context* context = NULL;
  show("open-null-folder", atrt_open(NULL, NULL, &context));
  show("open-null-context", atrt_open(bundle, NULL, NULL));
  show("open-missing-folder", atrt_open("/nonexistent/audiotoken-bundle", NULL, &context));
  atrt_open_options open_options;
  atrt_open_options_init(&open_options);
  open_options.device = "quantum";
  show("open-unknown-device", atrt_open(bundle, &open_options, &context));
  open_options.device = "cpu";
  open_options.struct_size = 3;
  show("open-uninitialised-options", atrt_open(bundle, &open_options, &context));
  atrt_status opened = atrt_open(bundle, NULL, &context);
  show("open", opened);
  if (opened != ATRT_OK) return 0;

  atrt_bundle_info info;
  atrt_bundle_info_init(&info);
  show("info-null-context", atrt_bundle_info_get(NULL, &info));
  show("info", atrt_bundle_info_get(context, &info));
  {
    atrt_bundle_info older; /* a caller built before eta and timestep_spacing: they are not written */
    atrt_bundle_info_init(&older);
    older.struct_size = (uint32_t)sizeof(bundle_info_v1);
    older.eta = 9.0f;
    show("info-before-eta", atrt_bundle_info_get(context, &older));
    printf("info-before-eta-kept %g\n", older.eta);
  }
  const size_t dim = (size_t)info.token_dim;
  const size_t picture = (size_t)info.width * (size_t)info.height * 3;

  int64_t ids[ATRT_TEXT_LENGTH];
  char long_prompt[2000] = "a photo of <*>";
  for (int i = 0; i < 80; ++i) strcat(long_prompt, " dog");
  show("tokenize-null-prompt", atrt_tokenize(context, NULL, 1, ids));
  show("tokenize-null-ids", atrt_tokenize(context, "a photo of <*>", 1, NULL));
  show("tokenize-no-placeholder", atrt_tokenize(context, "a photo of a dog", 1, ids));
  show("tokenize-two-placeholders", atrt_tokenize(context, "<*> and <*>", 1, ids));
  show("tokenize-over-77-tokens", atrt_tokenize(context, long_prompt, 1, ids));
  show("tokenize-invalid-utf8", atrt_tokenize(context, "a photo of <*> \xff\xfe", 1, ids));
  char* huge_prompt = calloc(ATRT_MAX_PROMPT_BYTES + 2, 1);
  memset(huge_prompt, 'a', ATRT_MAX_PROMPT_BYTES + 1); /* one word: BPE's cost grows with its square */
  memcpy(huge_prompt, "<*> ", 4);
  show("tokenize-over-the-byte-bound", atrt_tokenize(context, huge_prompt, 1, ids));
  show("tokenize", atrt_tokenize(context, "a photo of <*>", 1, ids));

  const uint64_t frames = 16000;
  float* samples = calloc(frames * 2, sizeof(float));
  float* token = calloc(dim, sizeof(float));
  uint8_t* pixels = calloc(picture * 2, 1);
  for (uint64_t i = 0; i < frames * 2; ++i) samples[i] = 0.5f * sinf((float)i * 0.05f);
  atrt_audio audio = clip(samples, frames);
  show("encode-null-context", atrt_encode_audio(NULL, &audio, token, dim));
  show("encode-null-audio", atrt_encode_audio(context, NULL, token, dim));
  show("encode-null-token", atrt_encode_audio(context, &audio, NULL, dim));
  show("encode-small-token", atrt_encode_audio(context, &audio, token, dim - 1));
  atrt_audio bad = clip(NULL, frames);
  show("encode-null-samples", atrt_encode_audio(context, &bad, token, dim));
  bad = clip(samples, 0);
  show("encode-empty", atrt_encode_audio(context, &bad, token, dim));
  bad = clip(samples, frames);
  bad.struct_size = 0;
  show("encode-uninitialised-audio", atrt_encode_audio(context, &bad, token, dim));
  bad = clip(samples, frames);
  bad.channels = 0;
  show("encode-no-channels", atrt_encode_audio(context, &bad, token, dim));
  bad = clip(samples, frames);
  bad.sample_rate = 0;
  show("encode-zero-rate", atrt_encode_audio(context, &bad, token, dim));
  bad.sample_rate = 1.0; /* 16000 frames at 1 Hz: 4.4 hours of audio to resample */
  show("encode-1hz-rate", atrt_encode_audio(context, &bad, token, dim));
  bad.sample_rate = ATRT_MIN_SAMPLE_RATE - 0.5;
  show("encode-rate-below-bound", atrt_encode_audio(context, &bad, token, dim));
  bad.sample_rate = ATRT_MAX_SAMPLE_RATE + 0.5;
  show("encode-rate-above-bound", atrt_encode_audio(context, &bad, token, dim));
  bad.sample_rate = ATRT_MAX_SAMPLE_RATE;
  show("encode-rate-at-bound", atrt_encode_audio(context, &bad, token, dim));
  bad.sample_rate = NAN;
  show("encode-nan-rate", atrt_encode_audio(context, &bad, token, dim));
  bad = clip(samples, frames);
  bad.start_seconds = 5.0;
  show("encode-start-past-end", atrt_encode_audio(context, &bad, token, dim));
  bad.start_seconds = -1.0;
  show("encode-negative-start", atrt_encode_audio(context, &bad, token, dim));
  bad = clip(samples, frames);
  bad.downmix = 7;
  show("encode-unknown-downmix", atrt_encode_audio(context, &bad, token, dim));
  samples[100] = NAN;
  show("encode-nan-samples", atrt_encode_audio(context, &audio, token, dim));
  samples[100] = INFINITY;
  show("encode-inf-samples", atrt_encode_audio(context, &audio, token, dim));
  samples[100] = 0.0f;
  bad = clip(samples, frames / 2);
  bad.channels = 2;
  bad.sample_rate = 44100.0;
  bad.downmix = ATRT_DOWNMIX_MEAN;
  show("encode-stereo-44k", atrt_encode_audio(context, &bad, token, dim));
  show("encode", atrt_encode_audio(context, &audio, token, dim));
  {
    /* only the window (10 s + the resampler's margin) is read: a clip that claims a hundred times more frames than
     * its buffer holds is read within the buffer (AddressSanitizer reports any read past it) */
    const uint64_t window = (uint64_t)ceil((ATRT_CLIP_SECONDS + ATRT_RESAMPLE_MARGIN_SECONDS) * 16000.0);
    float* long_clip = calloc(window, sizeof(float));
    atrt_audio longer = clip(long_clip, window * 100);
    show("encode-reads-only-the-window", atrt_encode_audio(context, &longer, token, dim));
    free(long_clip);
  }

  atrt_draw_options options;
  atrt_draw_options_init(&options);
  options.steps = 2;
  options.seed = 1;
  show("draw-null-context", atrt_draw(NULL, token, dim, &options, pixels, picture, NULL));
  show("draw-null-token", atrt_draw(context, NULL, dim, &options, pixels, picture, NULL));
  show("draw-short-token", atrt_draw(context, token, dim - 1, &options, pixels, picture, NULL));
  /* `token` holds dim floats: a larger token_size is refused before anything is read past them */
  show("draw-long-token", atrt_draw(context, token, dim + 1, &options, pixels, picture, NULL));
  show("draw-huge-token", atrt_draw(context, token, SIZE_MAX, &options, pixels, picture, NULL));
  show("draw-null-pixels", atrt_draw(context, token, dim, &options, NULL, picture, NULL));
  show("draw-small-pixels", atrt_draw(context, token, dim, &options, pixels, picture - 1, NULL));
  float saved = token[0];
  token[0] = NAN;
  show("draw-nan-token", atrt_draw(context, token, dim, &options, pixels, picture, NULL));
  token[0] = saved;
#define DRAW_CASE(name, field, value)                                                   \
  do {                                                                                  \
    atrt_draw_options o = options;                                                      \
    o.field = value;                                                                    \
    show(name, atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));          \
  } while (0)
  DRAW_CASE("draw-unknown-scheduler", scheduler, "nope");
  DRAW_CASE("draw-negative-steps", steps, -1);
  DRAW_CASE("draw-too-many-steps", steps, 100000);
  {
    atrt_draw_options o = options; /* 1000 steps of dpm++2m on Stable Diffusion's schedule drew NaN latents */
    o.scheduler = "dpm++2m";
    o.steps = 1000;
    show("draw-dpm-at-1000-steps", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
  }
  DRAW_CASE("draw-low-guidance", guidance, 0.5f);
  DRAW_CASE("draw-guidance-over-the-bound", guidance, (float)ATRT_MAX_GUIDANCE + 1.0f);
  DRAW_CASE("draw-infinite-guidance", guidance, INFINITY);
  DRAW_CASE("draw-too-many-images", num_images, ATRT_MAX_NUM_IMAGES + 1);
  DRAW_CASE("draw-negative-over-the-byte-bound", negative_prompt, huge_prompt);
  DRAW_CASE("draw-nan-guidance", guidance, NAN);
  DRAW_CASE("draw-negative-seed", seed, -5);
  DRAW_CASE("draw-no-images", num_images, 0);
  DRAW_CASE("draw-template-without-placeholder", prompt, "a photo of a dog");
  DRAW_CASE("draw-template-over-77-tokens", prompt, long_prompt);
  DRAW_CASE("draw-negative-over-77-tokens", negative_prompt, long_prompt);
  DRAW_CASE("draw-fast-on-plain-bundle", fast, 1);
  DRAW_CASE("draw-uninitialised-options", struct_size, 1);
  DRAW_CASE("draw-eta-without-ddim", eta, 0.5f); /* the recipe's scheduler, dpm++2m, has none */
  DRAW_CASE("draw-unknown-spacing", timestep_spacing, "sideways");
  {
    atrt_draw_options o = options;
    o.scheduler = "ddim";
    o.eta = (float)ATRT_MAX_ETA + 0.5f;
    show("draw-eta-over-the-bound", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
    o.eta = NAN;
    show("draw-nan-eta", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
    o.eta = -0.5f;
    show("draw-negative-eta", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
    o.eta = 0.5f;
    o.timestep_spacing = "trailing";
    show("draw-ddim-eta-trailing", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
    o.scheduler = "lcm";
    o.eta = 0.0f;
    show("draw-spacing-for-lcm", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
    o = options; /* a caller built before eta and timestep_spacing: what lies past its struct is not read */
    o.struct_size = (uint32_t)sizeof(draw_options_v1);
    o.eta = NAN;
    o.timestep_spacing = "sideways";
    show("draw-options-before-eta", atrt_draw(context, token, dim, &o, pixels, picture * 2, NULL));
  }
  {
    atrt_draw_options resolved;
    atrt_draw_options_init(&resolved);
    show("resolve-null-resolved", atrt_resolve_draw_options(context, &options, NULL));
    atrt_draw_options o = options;
    o.fast = 1;
    show("resolve-fast-on-plain-bundle", atrt_resolve_draw_options(context, &o, &resolved));
    show("resolve", atrt_resolve_draw_options(context, &options, &resolved));
    printf("resolved %s %d %g %g %s %s\n", resolved.scheduler, (int)resolved.steps, (double)resolved.guidance,
           (double)resolved.eta, resolved.timestep_spacing ? resolved.timestep_spacing : "-",
           strcmp(resolved.prompt, info.template_prompt) == 0 ? "template" : resolved.prompt);
    o = options;
    o.scheduler = "ddim";
    o.eta = 0.25f;
    o.timestep_spacing = "trailing";
    show("resolve-ddim", atrt_resolve_draw_options(context, &o, &resolved));
    printf("resolved-ddim %s %d %g %g %s\n", resolved.scheduler, (int)resolved.steps, (double)resolved.guidance,
           (double)resolved.eta, resolved.timestep_spacing ? resolved.timestep_spacing : "-");
  }
  atrt_draw_options two = options;
  two.num_images = 2;
  two.seed = INT64_MAX;  /* the second picture's seed would not fit */
  show("draw-seed-past-the-last", atrt_draw(context, token, dim, &two, pixels, picture * 2, NULL));
  two.seed = 1;
  int64_t seeds[2] = {0, 0};
  show("draw", atrt_draw(context, token, dim, &two, pixels, picture * 2, seeds));
  printf("seeds %lld %lld\n", (long long)seeds[0], (long long)seeds[1]);
  show("generate-nan-samples", (samples[7] = NAN, atrt_generate(context, &audio, &options, pixels, picture, NULL)));
  samples[7] = 0.0f;
  show("generate", atrt_generate(context, &audio, &options, pixels, picture, NULL));
  printf("stage-ms-unet %s\n", atrt_stage_ms(context, "unet") > 0 ? "positive" : "zero");
  printf("stage-ms-null %g\n", atrt_stage_ms(NULL, "unet"));

  {
    /* mix, compose, edit and stereo: bad input refused in one line, before anything past a buffer is read */
    float* two_tokens = calloc(dim * 5, sizeof(float)); /* room for five: the slots' bound is tried too */
    memcpy(two_tokens, token, dim * sizeof(float));
    memcpy(two_tokens + dim, token, dim * sizeof(float));
    double weights[2] = {0.7, 0.3};
    float* mixed = calloc(dim, sizeof(float));
    show("mix-null-tokens", atrt_mix_tokens(NULL, 2, (uint32_t)dim, weights, mixed));
    show("mix-null-weights", atrt_mix_tokens(two_tokens, 2, (uint32_t)dim, NULL, mixed));
    show("mix-no-tokens", atrt_mix_tokens(two_tokens, 0, (uint32_t)dim, weights, mixed));
    show("mix-zero-dim", atrt_mix_tokens(two_tokens, 2, 0, weights, mixed));
    weights[1] = -0.7;
    show("mix-weights-summing-to-zero", atrt_mix_tokens(two_tokens, 2, (uint32_t)dim, weights, mixed));
    weights[1] = NAN;
    show("mix-nan-weight", atrt_mix_tokens(two_tokens, 2, (uint32_t)dim, weights, mixed));
    weights[1] = 0.3;
    two_tokens[dim] = INFINITY;
    show("mix-inf-token", atrt_mix_tokens(two_tokens, 2, (uint32_t)dim, weights, mixed));
    two_tokens[dim] = token[0];
    weights[0] = 2.0; /* normalised to 1 and 0: the first token itself, to the bit */
    weights[1] = 0.0;
    two_tokens[dim] = 5.0f;
    show("mix", atrt_mix_tokens(two_tokens, 2, (uint32_t)dim, weights, mixed));
    printf("mix-weighted-one-and-zero %s\n", memcmp(mixed, token, dim * sizeof(float)) == 0 ? "first" : "differs");
    two_tokens[dim] = token[0];

    atrt_compose_options compose;
    atrt_compose_options_init(&compose);
    show("compose-null-tokens", atrt_compose(context, NULL, 2, dim, &options, &compose, pixels, picture, NULL));
    show("compose-no-tokens", atrt_compose(context, two_tokens, 0, dim, &options, &compose, pixels, picture, NULL));
    show("compose-too-many-tokens", atrt_compose(context, two_tokens, ATRT_MAX_COMPOSE_SOUNDS + 1, dim, &options,
                                                 &compose, pixels, picture, NULL));
    show("compose-short-token",
         atrt_compose(context, two_tokens, 2, dim - 1, &options, &compose, pixels, picture, NULL));
    show("compose-small-pixels",
         atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture - 1, NULL));
    show("compose-five-sounds-four-slots", atrt_compose(context, two_tokens, 5, dim, &options, &compose, pixels,
                                                        picture, NULL));
    {
      atrt_draw_options o = options;
      o.prompt = "<1> next to <3>";
      show("compose-stray-placeholder", atrt_compose(context, two_tokens, 2, dim, &o, &compose, pixels, picture, NULL));
      o.prompt = "<1> alone";
      show("compose-missing-placeholder",
           atrt_compose(context, two_tokens, 2, dim, &o, &compose, pixels, picture, NULL));
      o = options;
      o.stereo = 1;
      show("compose-stereo", atrt_compose(context, two_tokens, 2, dim, &o, &compose, pixels, picture, NULL));
    }
    compose.layout = "left,right,middle";
    show("compose-bad-layout", atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.layout = "2x2";
    show("compose-regions-not-sounds",
         atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.layout = "0,0,0.2,1;0.8,0,1,1";
    show("compose-uncovered-without-background",
         atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.layout = "left,right";
    compose.blend = 0.0;
    show("compose-zero-blend", atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.blend = NAN;
    show("compose-nan-blend", atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.blend = ATRT_DEFAULT_BLEND;
    compose.layout = NULL;
    compose.background = "a park";
    show("compose-background-without-layout",
         atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.background = long_prompt;
    compose.layout = "left,right";
    show("compose-background-over-77-tokens",
         atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    compose.background = NULL;
    compose.struct_size = 3;
    show("compose-uninitialised-options",
         atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    atrt_compose_options_init(&compose);
    show("compose", atrt_compose(context, two_tokens, 2, dim, &options, &compose, pixels, picture, NULL));
    show("compose-null-options", atrt_compose(context, two_tokens, 2, dim, &options, NULL, pixels, picture, NULL));

    /* edit: a 5x3 RGBA picture */
    uint8_t source[5 * 3 * 4];
    for (size_t i = 0; i < sizeof source; ++i) source[i] = (uint8_t)(i * 7);
    atrt_picture given;
    atrt_picture_init(&given);
    given.pixels = source;
    given.width = 5;
    given.height = 3;
    given.channels = 4;
    uint8_t edited[5 * 3 * 4];
    atrt_edit_options edit;
    atrt_edit_options_init(&edit);
    show("edit-null-picture", atrt_edit(context, token, dim, NULL, &options, &edit, edited, sizeof edited, NULL));
    show("edit-null-pixels-out", atrt_edit(context, token, dim, &given, &options, &edit, NULL, sizeof edited, NULL));
    show("edit-small-pixels-out",
         atrt_edit(context, token, dim, &given, &options, &edit, edited, sizeof edited - 1, NULL));
    show("edit-short-token", atrt_edit(context, token, dim - 1, &given, &options, &edit, edited, sizeof edited, NULL));
    {
      atrt_picture p = given;
      p.channels = 2;
      show("edit-two-channels", atrt_edit(context, token, dim, &p, &options, &edit, edited, sizeof edited, NULL));
      p = given;
      p.width = 0;
      show("edit-no-pixels", atrt_edit(context, token, dim, &p, &options, &edit, edited, sizeof edited, NULL));
      p = given;
      p.width = 1 << 14;
      p.height = 1 << 13; /* 128 Mi pixels: over the bound, refused before any is read */
      show("edit-too-many-pixels", atrt_edit(context, token, dim, &p, &options, &edit, edited, sizeof edited, NULL));
      p = given;
      p.pixels = NULL;
      show("edit-null-picture-pixels",
           atrt_edit(context, token, dim, &p, &options, &edit, edited, sizeof edited, NULL));
      p = given;
      p.struct_size = 1;
      show("edit-uninitialised-picture",
           atrt_edit(context, token, dim, &p, &options, &edit, edited, sizeof edited, NULL));
    }
    {
      atrt_edit_options e = edit;
      e.strength = 1.5;
      show("edit-strength-over-one", atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      e.strength = NAN;
      show("edit-nan-strength", atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      e = edit;
      e.feather = ATRT_MAX_FEATHER + 1;
      show("edit-feather-over-the-bound",
           atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      e.feather = -1;
      show("edit-negative-feather", atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      e = edit;
      e.struct_size = 2;
      show("edit-uninitialised-options",
           atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      e = edit;
      uint8_t black[5 * 3];
      memset(black, 0, sizeof black);
      atrt_picture mask;
      atrt_picture_init(&mask);
      mask.pixels = black;
      mask.width = 5;
      mask.height = 3;
      mask.channels = 1;
      e.mask = &mask;
      show("edit-all-black-mask", atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      mask.channels = 2;
      show("edit-two-channel-mask", atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      e = edit;
      e.strength = 0.0;
      show("edit-strength-zero", atrt_edit(context, token, dim, &given, &options, &e, edited, sizeof edited, NULL));
      printf("edit-strength-zero-is-the-picture %s\n", memcmp(edited, source, sizeof edited) == 0 ? "same" : "differs");
      atrt_draw_options o = options;
      o.stereo = 1;
      show("edit-stereo", atrt_edit(context, token, dim, &given, &o, &e, edited, sizeof edited, NULL));
    }
    show("edit", atrt_edit(context, token, dim, &given, &options, &edit, edited, sizeof edited, NULL));
    show("edit-null-options", atrt_edit(context, token, dim, &given, &options, NULL, edited, sizeof edited, NULL));
    {
      atrt_draw_options o = options;
      o.stereo = 1;
      show("draw-stereo", atrt_draw(context, token, dim, &o, pixels, picture, NULL));
      show("generate-stereo", atrt_generate(context, &audio, &o, pixels, picture, NULL));
      o.struct_size = (uint32_t)sizeof(draw_options_v2); /* an older caller's: stereo past its end is not read */
      show("generate-options-before-stereo", atrt_generate(context, &audio, &o, pixels, picture, NULL));
      atrt_draw_options older;
      atrt_draw_options_init(&older);
      older.struct_size = (uint32_t)sizeof(draw_options_v2);
      older.stereo = 5;
      show("resolve-before-stereo", atrt_resolve_draw_options(context, &options, &older));
      printf("resolve-before-stereo-kept %d\n", (int)older.stereo);
    }
    free(mixed);
    free(two_tokens);
  }

  /* a state: the same checks as the context's calls, its own stage times, and the bundle kept past atrt_close */
  atrt_state* state = NULL;
  show("state-new-null-context", atrt_state_new(NULL, &state));
  printf("state-new-null-context-out %s\n", state == NULL ? "null" : "set");
  show("state-new-null-state", atrt_state_new(context, NULL));
  show("state-new", atrt_state_new(context, &state));
  atrt_reset_stage_times(context);
  show("state-encode-null-state", atrt_state_encode_audio(NULL, &audio, token, dim));
  show("state-encode-null-audio", atrt_state_encode_audio(state, NULL, token, dim));
  show("state-encode-small-token", atrt_state_encode_audio(state, &audio, token, dim - 1));
  bad = clip(samples, frames);
  bad.struct_size = 0;
  show("state-encode-uninitialised-audio", atrt_state_encode_audio(state, &bad, token, dim));
  show("state-encode", atrt_state_encode_audio(state, &audio, token, dim));
  show("state-draw-null-state", atrt_state_draw(NULL, token, dim, &options, pixels, picture, NULL));
  show("state-draw-short-token", atrt_state_draw(state, token, dim - 1, &options, pixels, picture, NULL));
  show("state-draw-small-pixels", atrt_state_draw(state, token, dim, &options, pixels, picture - 1, NULL));
  {
    atrt_draw_options o = options;
    o.struct_size = 1;
    show("state-draw-uninitialised-options", atrt_state_draw(state, token, dim, &o, pixels, picture, NULL));
    o = options;
    o.struct_size = (uint32_t)sizeof(draw_options_v1);
    o.eta = NAN;
    show("state-draw-options-before-eta", atrt_state_draw(state, token, dim, &o, pixels, picture, NULL));
    o = options;
    o.guidance = NAN;
    show("state-generate-nan-guidance", atrt_state_generate(state, &audio, &o, pixels, picture, NULL));
  }
  show("state-generate-null-state", atrt_state_generate(NULL, &audio, &options, pixels, picture, NULL));
  show("state-generate-null-audio", atrt_state_generate(state, NULL, &options, pixels, picture, NULL));
  show("state-generate", atrt_state_generate(state, &audio, &options, pixels, picture, NULL));
  printf("state-stage-ms-unet %s\n", atrt_state_stage_ms(state, "unet") > 0 ? "positive" : "zero");
  printf("state-stage-ms-null %g %g\n", atrt_state_stage_ms(NULL, "unet"), atrt_state_stage_ms(state, NULL));
  printf("state-leaves-context-stage-ms %s\n", atrt_stage_ms(context, "unet") == 0 ? "zero" : "positive");
  atrt_state_reset_stage_times(state);
  printf("state-stage-ms-reset %g\n", atrt_state_stage_ms(state, "unet"));
  atrt_state_reset_stage_times(NULL);
  {
    /* the same picture from the context's own state and from the state, then from the state after atrt_close */
    const size_t bytes = picture;
    uint8_t* own = calloc(bytes, 1);
    atrt_generate(context, &audio, &options, own, bytes, NULL);
    atrt_state_generate(state, &audio, &options, pixels, bytes, NULL);
    printf("state-picture-is-the-contexts %s\n", memcmp(own, pixels, bytes) == 0 ? "same" : "differs");
    atrt_close(context);
    memset(pixels, 0, bytes);
    show("state-generate-after-close", atrt_state_generate(state, &audio, &options, pixels, bytes, NULL));
    printf("state-picture-after-close %s\n", memcmp(own, pixels, bytes) == 0 ? "same" : "differs");
    free(own);
  }
  atrt_state_free(state);
  atrt_state_free(NULL);
  atrt_close(NULL);
  free(huge_prompt);
  free(samples);
  free(token);
  free(pixels);
  return 0;
}
