// audiotoken-rt-cpp-check: the test driver of tests/test_cpp.py (built, never installed). It runs the library's
// parts on inputs the Python tests write, and prints what the Python runtime is compared with:
//   noise SEED USE COUNT                 the float32 bit patterns of NoiseStream(SEED, USE), hex, one per line
//   tokenize TOKENIZER_DIR               stdin: one JSON string per line -> the raw ids (BOS ... EOS) as a JSON
//                                        array per line, or {"error": message}
//   schedule NAME STEPS SEED CONFIG IN OUT [ETA SPACING]   a full scheduler loop on a stand-in model (eps =
//                                        0.9 * input + offset_i), built as a recipe's (sampling.hpp: ETA, default
//                                        0; SPACING laid over CONFIG's, "-" for none): IN holds the initial noise
//                                        [n] then offsets [T, n] (float32); OUT gets the timesteps [T] (float64)
//                                        then the latents after each step [T, n] (float32)
//   schedule ... ETA SPACING STRENGTH    img2img at STRENGTH: IN holds the initial noise [n], the source latents
//                                        [n], then offsets [T, n]; the loop starts from add_noise(source, noise, 0);
//                                        OUT gets the timesteps [T], add_noise(source, noise, i) for each step
//                                        [T, n], then the latents after each step [T, n]
//   pieces                               stdin: one JSON request per line {"fn": ..., arguments} for the edit and
//                                        compose building blocks (regions, mixes, Python's text rules); one JSON
//                                        answer per line, {"error": message, "hint": hint} for a refusal; bytes
//                                        and number arrays travel as hex (see pieces())
//   sampling                             the presets, bounds and what each scheduler takes (sampling.hpp), and the
//                                        recipe fields atrt_draw_options_init leaves unset, as one JSON object
//   bad-input BUNDLE                     bad input through the C API (bad_input.c): one line per case
//   philox-kat FILE                      each known-answer line of FILE (Random123's kat_vectors format) again, its
//                                        output words computed by philox4x64_10 from its counter and key
//   lru                                  LruCache of capacity 2 after put a, b; get a; put c; put b: the value of a,
//                                        b, c (or "-" when forgotten) and the size, one per line
//   uncond-cache BUNDLE                  the unconditional cache's capacity C, then its size after each of C + 2
//                                        drawings (1 step) with as many different negative prompts
//   threads BUNDLE THREADS               THREADS jobs (each its own clip, prompt, negative prompt, scheduler and
//                                        seed) drawn alone one after another on a Context, then all at once, twice
//                                        each, from THREADS threads with a State each on the same Context: per job
//                                        "job K same|differs" (its pictures at once against alone), then "distinct N"
//                                        (how many different pictures the jobs drew alone), "state-stage-ms-unet
//                                        positive|zero" (every State timed its own calls) and "context-stage-ms-unet
//                                        zero|positive" (the Context's own stage times untouched by its States)
//   external-locations FILE...           per FILE one line: the external-data locations it names as a JSON array
//                                        of strings (invalid UTF-8 replaced), or {"malformed": message}
//   wrapper-bad-input BUNDLE             bad input through the C++ wrapper (audiotoken_rt.hpp) that the C API
//                                        cannot see (a vector's size): one line "<case> <status> <message>" each,
//                                        the status of the audiotoken_rt::Error thrown, "-1 <what>" for another
//                                        exception, "0" for none
//   contracts D HEIGHT WIDTH SLOTS BATCHES   Manifest::contracts of a bundle of these sizes (BATCHES: 2, 1 or 1,2)
//                                        as JSON: {engine: [inputs, outputs]}, each [name, dtype, shape]
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "audiotoken_rt.hpp"
#include "errors.hpp"
#include "external_data.hpp"
#include "lru_cache.hpp"
#include "manifest.hpp"
#include "mix.hpp"
#include "noise.hpp"
#include "pipeline.hpp"
#include "python_text.hpp"
#include "regions.hpp"
#include "source_picture.hpp"
#include "sampling.hpp"
#include "schedulers.hpp"
#include "tokenizer.hpp"
#include "waveform.hpp"

extern "C" int run_bad_input(const char* bundle);

namespace {

int noise(std::uint64_t seed, std::uint64_t use, std::size_t count) {
  for (float value : atrt::NoiseStream(seed, use).standard_normal(count)) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    std::printf("%08x\n", bits);
  }
  return 0;
}

int tokenize(const std::string& folder) {
  const atrt::Tokenizer tokenizer = atrt::Tokenizer::from_folder(folder);
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::json out;
    try {
      out = tokenizer.raw_ids(nlohmann::json::parse(line).get<std::string>());
    } catch (const atrt::Error& e) {
      out = {{"error", e.what()}};
    }
    std::cout << out.dump() << "\n";
  }
  return 0;
}

int schedule(const std::string& name, int steps, std::uint64_t seed, const std::string& config_path,
             const std::string& in_path, const std::string& out_path, double eta, const std::string& spacing,
             std::optional<double> strength) {
  std::ifstream config_file(config_path);
  const nlohmann::json config = nlohmann::json::parse(config_file);
  const auto scheduler =
      atrt::make_scheduler(atrt::Sampling{name, steps, 1.0, eta, spacing}, config, strength.value_or(1.0));
  const std::size_t count = scheduler->timesteps().size();
  std::ifstream in(in_path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t leading = strength ? 2 : 1;  // the noise, and the source latents for img2img
  const std::size_t n = bytes.size() / sizeof(float) / (count + leading);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  std::vector<float> latents(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(n));
  std::vector<float> noised;  // img2img: add_noise(source, noise, i) for each step
  if (strength) {
    const float* source = values.data() + n;
    noised.resize(count * n);
    for (std::size_t i = 0; i < count; ++i) scheduler->add_noise(source, values.data(), noised.data() + i * n, n, i);
    std::copy(noised.begin(), noised.begin() + static_cast<std::ptrdiff_t>(n), latents.begin());
  } else {
    const auto sigma = static_cast<float>(scheduler->init_noise_sigma());
    for (float& value : latents) value = value * sigma;
  }
  atrt::NoiseStream step_noise(seed, atrt::kStepNoise);
  atrt::History history;
  std::vector<float> input(n), eps(n), trajectory;
  for (std::size_t i = 0; i < count; ++i) {
    scheduler->scale_model_input(latents.data(), input.data(), n, i);
    const float* offset = values.data() + (i + leading) * n;
    for (std::size_t k = 0; k < n; ++k) eps[k] = 0.9f * input[k] + offset[k];
    scheduler->step(eps.data(), i, latents.data(), n, history, &step_noise);
    trajectory.insert(trajectory.end(), latents.begin(), latents.end());
  }
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(scheduler->timesteps().data()),
            static_cast<std::streamsize>(count * sizeof(double)));
  out.write(reinterpret_cast<const char*>(noised.data()), static_cast<std::streamsize>(noised.size() * sizeof(float)));
  out.write(reinterpret_cast<const char*>(trajectory.data()),
            static_cast<std::streamsize>(trajectory.size() * sizeof(float)));
  return 0;
}

// --- pieces: one JSON request per line -----------------------------------------------------------------------

std::string to_hex(const void* data, std::size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0xF];
  }
  return out;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

template <typename T>
std::vector<T> hex_values(const nlohmann::json& hex) {
  const std::string bytes = from_hex(hex.get<std::string>());
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

template <typename T>
std::string values_hex(const std::vector<T>& values) {
  return to_hex(values.data(), values.size() * sizeof(T));
}

nlohmann::json boxes_json(const std::vector<atrt::Box>& boxes) {
  nlohmann::json out = nlohmann::json::array();
  for (const atrt::Box& box : boxes) out.push_back({box.x0, box.y0, box.x1, box.y1});
  return out;
}

// A request's text: "text" (UTF-8) or "text_hex" (any bytes)
std::string text_of(const nlohmann::json& request) {
  return request.contains("text_hex") ? from_hex(request["text_hex"]) : request.at("text").get<std::string>();
}

// Requests (fn and its arguments -> the answer's fields):
//   parse_layout text|text_hex -> boxes [[x0, y0, x1, y1], ...]
//   region_weights text, height, width, background, blend -> weights (float32 [C, h, w], hex)
//   stereo_boxes left, right -> boxes
//   mix_weights weights (float64, hex) -> weights (float64, hex)
//   mix_tokens weights (float64 hex), tokens (float32 [K, D] hex), dim -> token (float32 hex)
//   mean_square wave (float32 hex) -> energy (float64 hex)
//   repr | lower text|text_hex -> text_hex;   float text|text_hex -> value (float64 hex) or null
//   float_repr | format_g value (float64 hex) -> text
//   the edit's pictures (source_picture.hpp; pixels uint8 hex, masks float32 hex; sizes [width, height]):
//   fit picture, engine -> framing {content, offset};  to_engine | mask_to_engine | from_engine picture, engine,
//   pixels -> pixels;  resize_lanczos size, channels, out, pixels -> pixels;  to_engine_image size, pixels ->
//   image (float32);  latent_mask size, latent, pixels -> mask;  composite size, edited, rgb, [alpha], [mask],
//   feather -> rgb;  mask_from_pixels size, rgb, [alpha], picture, name, label -> mask, note;
//   check_picture_size size, label, max_pixels -> {} or the error
nlohmann::json picture_piece(const std::string& fn, const nlohmann::json& request) {
  const auto size_of = [&](const char* key) { return request.at(key).get<std::pair<int, int>>(); };
  const auto bytes_of = [&](const char* key) { return hex_values<std::uint8_t>(request.at(key)); };
  const auto framing = [&] {
    const auto [w, h] = size_of("picture");
    const auto [ew, eh] = size_of("engine");
    return atrt::Framing::fit(w, h, ew, eh);
  };
  if (fn == "fit") {
    const atrt::Framing f = framing();
    return {{"content", {f.content_w, f.content_h}}, {"offset", {f.left, f.top}}};
  }
  if (fn == "to_engine") return {{"pixels", values_hex(framing().to_engine(bytes_of("pixels")))}};
  if (fn == "mask_to_engine") {
    return {{"pixels", values_hex(framing().mask_to_engine(hex_values<float>(request.at("pixels"))))}};
  }
  if (fn == "from_engine") return {{"pixels", values_hex(framing().from_engine(bytes_of("pixels")))}};
  if (fn == "resize_lanczos") {
    const auto [w, h] = size_of("size");
    const auto [ow, oh] = size_of("out");
    return {{"pixels",
             values_hex(atrt::resize_lanczos(bytes_of("pixels"), w, h, request.at("channels").get<int>(), ow, oh))}};
  }
  if (fn == "to_engine_image") {
    const auto [w, h] = size_of("size");
    return {{"image", values_hex(atrt::to_engine_image(bytes_of("pixels"), w, h))}};
  }
  if (fn == "latent_mask") {
    const auto [w, h] = size_of("size");
    const auto [lw, lh] = size_of("latent");
    return {{"mask", values_hex(atrt::latent_mask(hex_values<float>(request.at("pixels")), w, h, lw, lh))}};
  }
  atrt::Pixels source;
  std::tie(source.width, source.height) = size_of("size");
  if (request.contains("rgb")) source.rgb = bytes_of("rgb");
  if (request.contains("alpha")) source.alpha = bytes_of("alpha");
  if (fn == "composite") {
    std::vector<float> mask;
    if (request.contains("mask")) mask = hex_values<float>(request.at("mask"));
    const std::vector<std::uint8_t> rgb =
        atrt::composite(bytes_of("edited"), source, request.contains("mask") ? &mask : nullptr,
                        request.at("feather").get<int>());
    return {{"rgb", values_hex(rgb)}};
  }
  if (fn == "mask_from_pixels") {
    const auto [w, h] = size_of("picture");
    const atrt::Mask mask = atrt::mask_from_pixels(source, w, h, request.at("name"), request.at("label"));
    return {{"mask", values_hex(mask.may_change)}, {"note", mask.note}};
  }
  if (fn == "check_picture_size") {
    const auto size = request.at("size").get<std::pair<std::int64_t, std::int64_t>>();
    atrt::check_picture_size(size.first, size.second, request.at("label"),
                             request.at("max_pixels").get<std::int64_t>());
    return nlohmann::json::object();
  }
  return {{"unknown", fn}};
}

nlohmann::json piece(const nlohmann::json& request) {
  const std::string fn = request.at("fn").get<std::string>();
  if (fn == "parse_layout") return {{"boxes", boxes_json(atrt::parse_layout(text_of(request)))}};
  if (fn == "region_weights") {
    const std::vector<float> weights =
        atrt::region_weights(atrt::parse_layout(text_of(request)), request.at("height").get<int>(),
                             request.at("width").get<int>(), request.at("background").get<bool>(),
                             request.value("blend", atrt::kDefaultBlend));
    return {{"weights", values_hex(weights)}};
  }
  if (fn == "stereo_boxes") {
    const auto [left, right] = atrt::stereo_boxes(hex_values<double>(request.at("left"))[0],
                                                  hex_values<double>(request.at("right"))[0]);
    return {{"boxes", boxes_json({left, right})}};
  }
  if (fn == "mix_weights") {
    return {{"weights", values_hex(atrt::mix_weights(hex_values<double>(request.at("weights"))))}};
  }
  if (fn == "mix_tokens") {
    const std::vector<float> flat = hex_values<float>(request.at("tokens"));
    const auto dim = request.at("dim").get<std::size_t>();
    std::vector<std::vector<float>> tokens;
    for (std::size_t at = 0; at < flat.size(); at += dim) {
      tokens.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(at),
                          flat.begin() + static_cast<std::ptrdiff_t>(at + dim));
    }
    return {{"token", values_hex(atrt::mix_tokens(hex_values<double>(request.at("weights")), tokens))}};
  }
  if (fn == "mean_square") {
    const double energy = atrt::mean_square(hex_values<float>(request.at("wave")));
    return {{"energy", to_hex(&energy, sizeof energy)}};
  }
  if (fn == "repr" || fn == "lower") {
    const std::string text = text_of(request);
    const std::string out = fn == "repr" ? atrt::python::repr(text) : atrt::python::lower(text);
    return {{"text_hex", to_hex(out.data(), out.size())}};
  }
  if (fn == "float") {
    const std::optional<double> value = atrt::python::parse_float(text_of(request));
    return {{"value", value ? nlohmann::json(to_hex(&*value, sizeof *value)) : nlohmann::json()}};
  }
  if (fn == "float_repr" || fn == "format_g") {
    const double value = hex_values<double>(request.at("value"))[0];
    return {{"text", fn == "float_repr" ? atrt::python::float_repr(value) : atrt::python::format_g(value)}};
  }
  return picture_piece(fn, request);
}

int pieces() {
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::json out;
    try {
      out = piece(nlohmann::json::parse(line));
    } catch (const atrt::Error& e) {
      out = {{"error", e.what()}, {"hint", e.hint()}};
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

nlohmann::json sampling_json(const atrt::Sampling& s) {
  return {{"scheduler", s.scheduler},
          {"steps", s.steps},
          {"guidance", s.guidance},
          {"eta", s.eta},
          {"timestep_spacing", s.timestep_spacing.empty() ? nlohmann::json() : nlohmann::json(s.timestep_spacing)}};
}

int sampling() {
  nlohmann::json schedulers = nlohmann::json::object();
  for (const char* name : atrt::kSchedulerNames) {
    schedulers[name] = {{"eta", atrt::takes_eta(name)}, {"spacing", atrt::spaces_timesteps(name)}};
  }
  atrt_draw_options unset;
  atrt_draw_options_init(&unset);
  nlohmann::json presets = nlohmann::json::array();
  for (const atrt::Preset& preset : atrt::kPresets) {
    presets.push_back({{"name", preset.name},
                       {"lora_name", preset.lora_name},
                       {"unet_batch", preset.unet_batch},
                       {"tiny_decoder", preset.tiny_decoder},
                       {"needs", atrt::needs(preset)},
                       {"export_flags", atrt::export_flags(preset)},
                       {"found", atrt::find_preset(preset.name) == &preset}});
  }
  const nlohmann::json out = {
      {"default", sampling_json(atrt::kDefaultSampling)},
      {"presets", presets},
      {"max_eta", atrt::kMaxEta},
      {"spacings", std::vector<std::string>(std::begin(atrt::kTimestepSpacings), std::end(atrt::kTimestepSpacings))},
      {"schedulers", schedulers},
      {"unset", {{"scheduler", unset.scheduler == nullptr}, {"steps", unset.steps}, {"guidance", unset.guidance},
                 {"eta", unset.eta}, {"timestep_spacing", unset.timestep_spacing == nullptr}}},
  };
  std::cout << out.dump() << "\n";
  return 0;
}

int philox_kat(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string name, rounds;
    atrt::PhiloxCounter counter{};
    atrt::PhiloxKey key{};
    words >> name >> rounds >> std::hex;
    for (auto& word : counter) words >> word;
    for (auto& word : key) words >> word;
    const atrt::PhiloxCounter out = atrt::philox4x64_10(counter, key);
    std::printf("%s %s", name.c_str(), rounds.c_str());
    for (auto word : counter) std::printf(" %016llx", static_cast<unsigned long long>(word));
    for (auto word : key) std::printf(" %016llx", static_cast<unsigned long long>(word));
    std::printf("  ");
    for (auto word : out) std::printf(" %016llx", static_cast<unsigned long long>(word));
    std::printf("\n");
  }
  return 0;
}

int lru() {
  atrt::LruCache<std::string, int> cache(2);
  cache.put("a", 1);
  cache.put("b", 2);
  cache.get("a");     // a is now the most recently used
  cache.put("c", 3);  // forgets b
  cache.put("b", 4);  // forgets a
  for (const char* key : {"a", "b", "c"}) {
    const std::optional<int> value = cache.get(key);
    std::printf("%s %s\n", key, value ? std::to_string(*value).c_str() : "-");
  }
  std::printf("size %zu\n", cache.size());
  return 0;
}

int uncond_cache(const std::string& bundle) {
  atrt::Pipeline pipeline(bundle, "cpu", 1);
  std::printf("capacity %zu\n", atrt::kUnconditionalCacheSize);
  const std::vector<float> token(static_cast<std::size_t>(pipeline.manifest().token_dim), 0.1f);
  std::vector<std::uint8_t> pixels(pipeline.picture_bytes());
  std::vector<std::int64_t> seeds;
  atrt::PipelineState state;
  atrt::DrawOptions options;
  options.sampling.steps = 1;
  options.seed = 0;
  options.sampling.guidance = 2.0;  // guided: the unconditional branch is drawn
  for (std::size_t k = 0; k < atrt::kUnconditionalCacheSize + 2; ++k) {
    options.negative_prompt = "blurry " + std::to_string(k);
    pipeline.draw(token, options, pixels.data(), seeds, state);
    std::printf("size %zu\n", pipeline.cached_negative_prompts());
  }
  return 0;
}

// One thread's job in `threads`: a clip (a tone of its own pitch) and the options it is drawn with.
struct ThreadJob {
  std::vector<float> samples;
  audiotoken_rt::DrawOptions options;
};

std::vector<ThreadJob> thread_jobs(int count) {
  static const char* const kPrompts[] = {"a photo of <*>", "a painting of <*>", "<*> at night, 4k", "a drawing of <*>"};
  static const char* const kNegatives[] = {"blurry", "blurry", "", "low quality, dark"};  // jobs 0, 1 share one
  static const char* const kSchedulers[] = {"dpm++2m", "ddim", "euler-a", "pndm"};
  std::vector<ThreadJob> jobs(static_cast<std::size_t>(count));
  for (std::size_t k = 0; k < jobs.size(); ++k) {
    ThreadJob& job = jobs[k];
    job.samples.resize(16000);
    const double pitch = 220.0 * static_cast<double>(k + 1);
    for (std::size_t i = 0; i < job.samples.size(); ++i) {
      job.samples[i] = static_cast<float>(0.5 * std::sin(6.283185307179586 * pitch * static_cast<double>(i) / 16000.0));
    }
    job.options.prompt = kPrompts[k % 4];
    job.options.negative_prompt = kNegatives[k % 4];
    job.options.scheduler = kSchedulers[k % 4];
    if (job.options.scheduler == "ddim") job.options.eta = 0.5f;  // fresh noise per step, from the picture's stream
    job.options.steps = 8;
    job.options.guidance = 3.0f;
    job.options.seed = 100 + static_cast<std::int64_t>(k) * 7;
    job.options.num_images = 1 + static_cast<int>(k % 2);
  }
  return jobs;
}

std::vector<std::uint8_t> joined(const std::vector<audiotoken_rt::Picture>& pictures) {
  std::vector<std::uint8_t> bytes;
  for (const audiotoken_rt::Picture& picture : pictures) {
    bytes.insert(bytes.end(), picture.rgb.begin(), picture.rgb.end());
  }
  return bytes;
}

int threads(const std::string& bundle, int count) {
  audiotoken_rt::Context context(bundle, "cpu", 1);
  const std::vector<ThreadJob> jobs = thread_jobs(count);
  std::vector<std::vector<std::uint8_t>> alone;
  for (const ThreadJob& job : jobs) {  // on the Context's own state, one after another
    alone.push_back(joined(context.generate(audiotoken_rt::Audio::mono(job.samples, 16000.0), job.options)));
  }
  context.reset_stage_times();
  constexpr int kRounds = 3;
  std::vector<std::vector<std::vector<std::uint8_t>>> together(jobs.size());
  std::vector<std::string> failures(jobs.size());
  std::vector<double> unet_ms(jobs.size());
  std::mutex gate_mutex;
  std::condition_variable gate;
  bool open = false;
  std::vector<std::thread> workers;
  for (std::size_t k = 0; k < jobs.size(); ++k) {
    workers.emplace_back([&, k] {
      try {
        audiotoken_rt::State state(context);
        {
          std::unique_lock<std::mutex> lock(gate_mutex);
          gate.wait(lock, [&] { return open; });  // every thread starts drawing at once
        }
        for (int round = 0; round < kRounds; ++round) {
          const ThreadJob& job = jobs[k];
          together[k].push_back(joined(state.generate(audiotoken_rt::Audio::mono(job.samples, 16000.0), job.options)));
        }
        unet_ms[k] = state.stage_ms("unet");
      } catch (const std::exception& e) {
        failures[k] = e.what();
      }
    });
  }
  {
    const std::lock_guard<std::mutex> lock(gate_mutex);
    open = true;
  }
  gate.notify_all();
  for (std::thread& worker : workers) worker.join();
  for (std::size_t k = 0; k < jobs.size(); ++k) {
    bool same = failures[k].empty() && together[k].size() == kRounds;
    for (const std::vector<std::uint8_t>& drawn : together[k]) same = same && drawn == alone[k];
    std::printf("job %zu %s%s\n", k, same ? "same" : "differs", failures[k].empty() ? "" : (" " + failures[k]).c_str());
  }
  std::vector<std::vector<std::uint8_t>> distinct = alone;
  std::sort(distinct.begin(), distinct.end());
  std::printf("distinct %zu\n",
              static_cast<std::size_t>(std::unique(distinct.begin(), distinct.end()) - distinct.begin()));
  const bool timed = std::all_of(unet_ms.begin(), unet_ms.end(), [](double ms) { return ms > 0; });
  std::printf("state-stage-ms-unet %s\n", timed ? "positive" : "zero");
  std::printf("context-stage-ms-unet %s\n", context.stage_ms("unet") == 0 ? "zero" : "positive");
  return 0;
}

// The wrapper's refusals (see the usage above): each must be an audiotoken_rt::Error before the library reads or
// the wrapper allocates anything the call's sizes do not justify (AddressSanitizer reports an over-read; a
// std::bad_alloc or length_error is "-1").
int wrapper_bad_input(const std::string& bundle) {
  audiotoken_rt::Context context(bundle, "cpu", 1);
  std::vector<float> samples(16000);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    samples[i] = static_cast<float>(0.5 * std::sin(6.283185307179586 * 440.0 * static_cast<double>(i) / 16000.0));
  }
  const std::vector<float> token = context.encode_audio(audiotoken_rt::Audio::mono(samples, 16000.0));
  audiotoken_rt::DrawOptions options;
  options.steps = 2;  // an edit at the default strength 0.6 runs int(2 * 0.6) = 1 of them
  options.seed = 0;
  const auto show = [](const char* name, const std::function<void()>& call) {
    try {
      call();
      std::printf("%s 0\n", name);
    } catch (const audiotoken_rt::Error& e) {
      std::printf("%s %d %s\n", name, static_cast<int>(e.status()), e.what());
    } catch (const std::exception& e) {
      std::printf("%s -1 %s\n", name, e.what());
    }
  };
  audiotoken_rt::DrawOptions huge = options;
  huge.num_images = 1 << 30;  // 2^30 pictures: refused by the library, never allocated by the wrapper
  show("draw-huge-num-images", [&] { context.draw(token, huge); });
  audiotoken_rt::State state(context);
  show("state-draw-huge-num-images", [&] { state.draw(token, huge); });
  const std::vector<float> shorter(token.begin(), token.end() - 1);
  show("compose-uneven-tokens", [&] { context.compose({token, shorter}, options); });
  show("state-compose-uneven-tokens", [&] { state.compose({token, shorter}, options); });
  audiotoken_rt::Picture picture;
  picture.width = 16;
  picture.height = 16;
  picture.rgb.assign(16 * 16 * 3 - 1, 128);  // a byte short
  show("edit-short-rgb", [&] { context.edit(token, picture, options); });
  picture.rgb.push_back(128);
  audiotoken_rt::Picture mask = picture;
  mask.channels = 1;  // grey8 over RGB8's bytes: 16 * 16 wanted, three times as many held
  audiotoken_rt::EditOptions editing;
  editing.mask = &mask;
  show("edit-mask-of-another-size-than-its-rgb", [&] { context.edit(token, picture, options, editing); });
  audiotoken_rt::Picture negative;
  negative.width = -1;
  negative.height = 1 << 30;
  show("edit-negative-width", [&] { state.edit(token, negative, options); });
  audiotoken_rt::Picture vast;
  vast.width = 1 << 20;
  vast.height = 1 << 20;  // 2^40 pixels (3 TiB of RGB8) held in none: refused before anything is sized for it
  show("edit-vast-picture", [&] { context.edit(token, vast, options); });
  show("edit", [&] { context.edit(token, picture, options); });
  return 0;
}

int print_external_locations(const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    nlohmann::json line;
    try {
      line = atrt::external_locations(path);
    } catch (const atrt::MalformedProtobuf& e) {
      line = {{"malformed", e.what()}};
    }
    std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

int contracts(const std::vector<std::string>& sizes) {
  atrt::Manifest manifest;
  manifest.token_dim = std::stoi(sizes[0]);
  manifest.height = std::stoi(sizes[1]);
  manifest.width = std::stoi(sizes[2]);
  manifest.token_slots = std::stoi(sizes[3]);
  manifest.recipe.unet_batches.clear();
  std::istringstream batches(sizes[4]);
  for (std::string batch; std::getline(batches, batch, ',');) manifest.recipe.unet_batches.push_back(std::stoi(batch));
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [engine, specs] : manifest.contracts()) {
    for (const auto* side : {&specs.first, &specs.second}) {
      nlohmann::json listed = nlohmann::json::array();
      for (const atrt::TensorSpec& spec : *side) listed.push_back({spec.name, spec.dtype, spec.shape});
      out[engine].push_back(listed);
    }
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 4 && args[0] == "noise") {
      return noise(std::stoull(args[1]), std::stoull(args[2]), std::stoull(args[3]));
    }
    if (args.size() == 2 && args[0] == "tokenize") return tokenize(args[1]);
    if ((args.size() == 7 || args.size() == 9 || args.size() == 10) && args[0] == "schedule") {
      const double eta = args.size() >= 9 ? std::stod(args[7]) : 0.0;
      const std::string spacing = args.size() >= 9 && args[8] != "-" ? args[8] : "";
      std::optional<double> strength;  // (assigned, not a conditional expression: GCC 12 for aarch64 at -O3 takes
      if (args.size() == 10) strength = std::stod(args[9]);  // the latter's payload for uninitialised, -Werror)
      return schedule(args[1], std::stoi(args[2]), std::stoull(args[3]), args[4], args[5], args[6], eta, spacing,
                      strength);
    }
    if (args.size() == 1 && args[0] == "pieces") return pieces();
    if (args.size() == 1 && args[0] == "sampling") {
      return sampling();
    }
    if (args.size() == 2 && args[0] == "bad-input") return run_bad_input(args[1].c_str());
    if (args.size() == 2 && args[0] == "wrapper-bad-input") return wrapper_bad_input(args[1]);
    if (args.size() == 2 && args[0] == "philox-kat") return philox_kat(args[1]);
    if (args.size() == 1 && args[0] == "lru") return lru();
    if (args.size() == 2 && args[0] == "uncond-cache") return uncond_cache(args[1]);
    if (args.size() == 3 && args[0] == "threads") return threads(args[1], std::stoi(args[2]));
    if (args.size() >= 2 && args[0] == "external-locations") {
      return print_external_locations({args.begin() + 1, args.end()});
    }
    if (args.size() == 6 && args[0] == "contracts") return contracts({args.begin() + 1, args.end()});
  } catch (const atrt::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return 1;
  }
  std::fprintf(stderr,
               "usage: audiotoken-rt-cpp-check noise|tokenize|schedule|pieces|sampling|bad-input|wrapper-bad-input|"
               "philox-kat|lru|"
               "uncond-cache|threads|external-locations|contracts ... "
               "(see check.cpp)\n");
  return 2;
}
