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
//   contracts D HEIGHT WIDTH SLOTS BATCHES   Manifest::contracts of a bundle of these sizes (BATCHES: 2, 1 or 1,2)
//                                        as JSON: {engine: [inputs, outputs]}, each [name, dtype, shape]
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "audiotoken_rt.hpp"
#include "errors.hpp"
#include "external_data.hpp"
#include "lru_cache.hpp"
#include "manifest.hpp"
#include "noise.hpp"
#include "pipeline.hpp"
#include "sampling.hpp"
#include "schedulers.hpp"
#include "tokenizer.hpp"

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
             const std::string& in_path, const std::string& out_path, double eta, const std::string& spacing) {
  std::ifstream config_file(config_path);
  const nlohmann::json config = nlohmann::json::parse(config_file);
  const auto scheduler = atrt::make_scheduler(atrt::Sampling{name, steps, 1.0, eta, spacing}, config);
  const std::size_t count = scheduler->timesteps().size();
  std::ifstream in(in_path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t n = bytes.size() / sizeof(float) / (count + 1);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  std::vector<float> latents(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(n));
  const auto sigma = static_cast<float>(scheduler->init_noise_sigma());
  for (float& value : latents) value = value * sigma;
  atrt::NoiseStream step_noise(seed, atrt::kStepNoise);
  atrt::History history;
  std::vector<float> input(n), eps(n), trajectory;
  for (std::size_t i = 0; i < count; ++i) {
    scheduler->scale_model_input(latents.data(), input.data(), n, i);
    const float* offset = values.data() + (i + 1) * n;
    for (std::size_t k = 0; k < n; ++k) eps[k] = 0.9f * input[k] + offset[k];
    scheduler->step(eps.data(), i, latents.data(), n, history, &step_noise);
    trajectory.insert(trajectory.end(), latents.begin(), latents.end());
  }
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(scheduler->timesteps().data()),
            static_cast<std::streamsize>(count * sizeof(double)));
  out.write(reinterpret_cast<const char*>(trajectory.data()),
            static_cast<std::streamsize>(trajectory.size() * sizeof(float)));
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
  for (const audiotoken_rt::Picture& picture : pictures) bytes.insert(bytes.end(), picture.rgb.begin(), picture.rgb.end());
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
  std::printf("distinct %zu\n", static_cast<std::size_t>(std::unique(distinct.begin(), distinct.end()) - distinct.begin()));
  const bool timed = std::all_of(unet_ms.begin(), unet_ms.end(), [](double ms) { return ms > 0; });
  std::printf("state-stage-ms-unet %s\n", timed ? "positive" : "zero");
  std::printf("context-stage-ms-unet %s\n", context.stage_ms("unet") == 0 ? "zero" : "positive");
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
    if ((args.size() == 7 || args.size() == 9) && args[0] == "schedule") {
      const double eta = args.size() == 9 ? std::stod(args[7]) : 0.0;
      const std::string spacing = args.size() == 9 && args[8] != "-" ? args[8] : "";
      return schedule(args[1], std::stoi(args[2]), std::stoull(args[3]), args[4], args[5], args[6], eta, spacing);
    }
    if (args.size() == 1 && args[0] == "sampling") {
      return sampling();
    }
    if (args.size() == 2 && args[0] == "bad-input") return run_bad_input(args[1].c_str());
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
               "usage: audiotoken-rt-cpp-check noise|tokenize|schedule|sampling|bad-input|philox-kat|lru|uncond-cache|"
               "threads|external-locations|contracts ... "
               "(see check.cpp)\n");
  return 2;
}
