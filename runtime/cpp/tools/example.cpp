// audiotoken-rt-cpp: the example host program of the C++ library, a native twin of `audiotoken-rt generate`
// and of `audiotoken-rt bench` for one configuration.
//
//   audiotoken-rt-cpp generate clip.wav --engines DIR --out picture.png [--seed N] [--prompt T]
//       [--negative-prompt T] [--steps N] [--guidance G] [--scheduler S] [--eta E] [--spacing S] [--num-images N]
//       [--fast] [--start SECONDS] [--downmix first|mean|second] [--device cpu|cuda|tensorrt] [--threads N]
//       [--overwrite]
//   audiotoken-rt-cpp bench clip.wav --engines DIR [--steps N] [--scheduler S] [--rounds N] [--json PATH]
//   audiotoken-rt-cpp bench clip.wav --engines DIR --callers N [--contexts shared|own] [--pictures K] [--steps N]
//       [--scheduler S] [--threads N] [--json PATH]
//
// bench times one picture (the best of --rounds) by stage; with --callers, N threads draw K pictures each at once,
// each with its own State, on one Context (shared) or on a Context each (own): pictures per minute and the peak
// RSS of the process (tools/bench.sh runs each configuration in a process of its own).
//
// Data flow: clip file -> libsndfile (the 10 s window, clip_file.cpp) -> the library (downmix, soxr to 16 kHz,
// audio token, prompt, denoise, VAE, RGB8: audiotoken_rt.hpp) -> libpng (png_file.cpp). Several pictures are
// written as STEM-0.png, STEM-1.png, ... beside --out, each with the options it was drawn with as the library
// completes them (Context::resolve) in its PNG text. Errors: one line `error: ...` (and `hint: ...`), exit 1.
#include <sys/resource.h>

#include <cfloat>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "audiotoken_rt.hpp"
#include "clip_file.hpp"
#include "png_file.hpp"

namespace {

const char* const kUsage =
    "usage: audiotoken-rt-cpp generate CLIP --engines DIR --out PICTURE.png [--seed N] [--prompt T]\n"
    "           [--negative-prompt T] [--steps N] [--guidance G] [--scheduler S] [--eta E] [--spacing S]\n"
    "           [--num-images N] [--fast] [--start SECONDS] [--downmix first|mean|second] [--device D]\n"
    "           [--threads N] [--overwrite]\n"
    "       audiotoken-rt-cpp bench CLIP --engines DIR [--steps N] [--scheduler S] [--rounds N] [--json PATH]\n"
    "       audiotoken-rt-cpp bench CLIP --engines DIR --callers N [--contexts shared|own] [--pictures K]\n"
    "           [--steps N] [--scheduler S] [--threads N] [--json PATH]\n";

struct Arguments {
  std::string command, clip;
  std::map<std::string, std::string> values;
  bool has(const std::string& key) const { return values.count(key) > 0; }
  std::string get(const std::string& key, const std::string& otherwise = "") const {
    auto found = values.find(key);
    return found == values.end() ? otherwise : found->second;
  }
};

Arguments parse(int argc, char** argv) {
  static const char* const kFlags[] = {"--fast", "--overwrite"};
  Arguments args;
  std::vector<std::string> words(argv + 1, argv + argc);
  if (words.empty()) throw std::invalid_argument("no command");
  args.command = words[0];
  for (std::size_t i = 1; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word.rfind("--", 0) != 0) {
      if (!args.clip.empty()) throw std::invalid_argument("one clip at a time (got " + args.clip + " and " + word + ")");
      args.clip = word;
      continue;
    }
    bool flag = false;
    for (const char* known : kFlags) flag = flag || word == known;
    if (flag) {
      args.values[word] = "1";
    } else if (i + 1 < words.size()) {
      args.values[word] = words[++i];
    } else {
      throw std::invalid_argument(word + " needs a value");
    }
  }
  if (args.clip.empty()) throw std::invalid_argument("no clip given");
  if (!args.has("--engines")) throw std::invalid_argument("--engines DIR is required");
  return args;
}

long long integer(const Arguments& args, const std::string& key, long long otherwise) {
  if (!args.has(key)) return otherwise;
  std::size_t used = 0;
  const std::string text = args.get(key);
  const long long value = std::stoll(text, &used);
  if (used != text.size()) throw std::invalid_argument(key + " expects an integer, got '" + text + "'");
  return value;
}

double real(const Arguments& args, const std::string& key, double otherwise) {
  if (!args.has(key)) return otherwise;
  std::size_t used = 0;
  const std::string text = args.get(key);
  const double value = std::stod(text, &used);
  if (used != text.size()) throw std::invalid_argument(key + " expects a number, got '" + text + "'");
  return value;
}

audiotoken_rt::DrawOptions draw_options(const Arguments& args) {
  audiotoken_rt::DrawOptions options;
  options.prompt = args.get("--prompt");
  options.negative_prompt = args.get("--negative-prompt");
  options.scheduler = args.get("--scheduler");
  options.steps = static_cast<int>(integer(args, "--steps", 0));
  const double guidance = real(args, "--guidance", 0.0);  // beyond float's range: infinity, which the library refuses
  options.guidance = std::abs(guidance) <= static_cast<double>(FLT_MAX) ? static_cast<float>(guidance) : HUGE_VALF;
  const double eta = real(args, "--eta", ATRT_RECIPE_ETA);
  options.eta = std::abs(eta) <= static_cast<double>(FLT_MAX) ? static_cast<float>(eta) : HUGE_VALF;
  options.timestep_spacing = args.get("--spacing");
  options.seed = integer(args, "--seed", ATRT_RANDOM_SEED);
  options.num_images = static_cast<int>(integer(args, "--num-images", 1));
  options.fast = args.has("--fast");
  return options;
}

audiotoken_rt::Audio audio_of(const ClipWindow& clip, const Arguments& args) {
  audiotoken_rt::Audio audio =
      audiotoken_rt::Audio::interleaved(clip.samples.data(), clip.frames(), clip.channels, clip.sample_rate);
  const std::string downmix = args.get("--downmix", "first");
  if (downmix == "first") {
    audio.downmix = ATRT_DOWNMIX_FIRST;
  } else if (downmix == "mean") {
    audio.downmix = ATRT_DOWNMIX_MEAN;
  } else if (downmix == "second") {
    audio.downmix = ATRT_DOWNMIX_SECOND;
  } else {
    throw std::invalid_argument("--downmix expects first, mean or second, got '" + downmix + "'");
  }
  return audio;  // the window already starts at --start
}

std::vector<std::string> picture_paths(const std::string& out, int count) {
  if (count == 1) return {out};
  const std::filesystem::path path(out);
  std::vector<std::string> paths;
  for (int k = 0; k < count; ++k) {
    paths.push_back((path.parent_path() / (path.stem().string() + "-" + std::to_string(k) + path.extension().string())).string());
  }
  return paths;
}

int generate(const Arguments& args) {
  if (!args.has("--out")) throw std::invalid_argument("--out PICTURE.png is required");
  const audiotoken_rt::DrawOptions options = draw_options(args);
  const std::vector<std::string> paths = picture_paths(args.get("--out"), options.num_images > 0 ? options.num_images : 1);
  for (const std::string& path : paths) {
    if (std::filesystem::exists(path) && !args.has("--overwrite")) {
      throw audiotoken_rt::Error(ATRT_CONFIG_ERROR, path + ": already exists", "pass --overwrite to replace it");
    }
  }
  audiotoken_rt::Context context(args.get("--engines"), args.get("--device", "cpu"),
                                 static_cast<int>(integer(args, "--threads", 0)));
  const ClipWindow clip = read_clip_window(args.clip, real(args, "--start", 0.0));
  const std::vector<audiotoken_rt::Picture> pictures = context.generate(audio_of(clip, args), options);
  const audiotoken_rt::DrawOptions drawn = context.resolve(options);
  const atrt_bundle_info info = context.info();
  for (std::size_t k = 0; k < pictures.size(); ++k) {
    const audiotoken_rt::Picture& picture = pictures[k];
    std::ostringstream guidance, eta;
    guidance << drawn.guidance;
    eta << drawn.eta;
    std::vector<std::pair<std::string, std::string>> text = {
        {"audiotoken:clip", std::filesystem::path(args.clip).filename().string()},
        {"audiotoken:prompt", drawn.prompt},
        {"audiotoken:negative_prompt", drawn.negative_prompt},
        {"audiotoken:seed", std::to_string(picture.seed)},
        {"audiotoken:steps", std::to_string(drawn.steps)},
        {"audiotoken:scheduler", drawn.scheduler},
        {"audiotoken:guidance", guidance.str()},
        {"audiotoken:eta", eta.str()},
        {"audiotoken:bundle", info.bundle_id},
        {"audiotoken:runtime", "audiotoken-rt-cpp"}};
    if (!drawn.timestep_spacing.empty()) text.emplace_back("audiotoken:timestep_spacing", drawn.timestep_spacing);
    std::filesystem::path parent = std::filesystem::path(paths[k]).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    write_png(paths[k], picture.rgb.data(), picture.width, picture.height, text);
    std::printf("%s (seed %lld)\n", paths[k].c_str(), static_cast<long long>(picture.seed));
  }
  return 0;
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// --callers N threads drawing --pictures K each at once, a State each, on one Context or on one Context each.
int bench_callers(const Arguments& args) {
  const long long callers = integer(args, "--callers", 1);
  const long long pictures = integer(args, "--pictures", 4);
  const std::string contexts_given = args.get("--contexts", "shared");
  if (callers < 1 || callers > 64) throw std::invalid_argument("--callers must be 1 to 64");
  if (pictures < 1) throw std::invalid_argument("--pictures must be at least 1");
  if (contexts_given != "shared" && contexts_given != "own") {
    throw std::invalid_argument("--contexts expects shared or own, got '" + contexts_given + "'");
  }
  const bool shared = contexts_given == "shared";
  audiotoken_rt::DrawOptions options;
  options.scheduler = args.get("--scheduler");
  options.steps = static_cast<int>(integer(args, "--steps", 0));
  audiotoken_rt::DrawOptions warm_up = options;
  warm_up.steps = options.steps > 0 && options.steps < 2 ? options.steps : 2;  // sessions created, caches filled
  warm_up.seed = 0;
  const ClipWindow clip = read_clip_window(args.clip, 0.0);
  const audiotoken_rt::Audio audio = audio_of(clip, args);
  std::vector<audiotoken_rt::Context> contexts;
  for (long long k = 0; k < (shared ? 1 : callers); ++k) {
    contexts.emplace_back(args.get("--engines"), args.get("--device", "cpu"), static_cast<int>(integer(args, "--threads", 0)));
  }
  std::vector<audiotoken_rt::State> states;
  for (long long k = 0; k < callers; ++k) {
    states.emplace_back(contexts[shared ? 0 : static_cast<std::size_t>(k)]);
    states.back().generate(audio, warm_up);  // before the clock starts, one caller after another
  }
  std::mutex gate_mutex;
  std::condition_variable gate;
  bool open = false;
  std::vector<std::string> failures(states.size());
  std::vector<std::thread> workers;
  for (std::size_t k = 0; k < states.size(); ++k) {
    workers.emplace_back([&, k] {
      {
        std::unique_lock<std::mutex> lock(gate_mutex);
        gate.wait(lock, [&] { return open; });
      }
      try {
        for (long long i = 0; i < pictures; ++i) {
          audiotoken_rt::DrawOptions mine = options;
          mine.seed = static_cast<std::int64_t>(k) * 1000 + i;
          states[k].generate(audio, mine);
        }
      } catch (const std::exception& e) {
        failures[k] = e.what();
      }
    });
  }
  const auto started = std::chrono::steady_clock::now();
  {
    const std::lock_guard<std::mutex> lock(gate_mutex);
    open = true;
  }
  gate.notify_all();
  for (std::thread& worker : workers) worker.join();
  const double elapsed = elapsed_ms(started);
  for (const std::string& failure : failures) {
    if (!failure.empty()) throw std::runtime_error(failure);
  }
  const double per_minute = static_cast<double>(callers * pictures) / elapsed * 60000.0;
  const double peak_mb = peak_rss_mb();
  const audiotoken_rt::DrawOptions drawn = contexts[0].resolve(options);
  std::printf("audiotoken-rt-cpp bench: %s, %lld callers on %s, %lld pictures each, %d steps of %s\n",
              args.get("--engines").c_str(), callers, shared ? "one context" : "a context each", pictures, drawn.steps,
              drawn.scheduler.c_str());
  std::printf("  %-20s %10.1f\n  %-20s %10.1f ms\n  %-20s %10.1f MB\n", "pictures per minute", per_minute,
              "wall time", elapsed, "peak rss", peak_mb);
  if (args.has("--json")) {
    std::ofstream json(args.get("--json"));
    json << "{\"callers\": " << callers << ", \"contexts\": \"" << contexts_given << "\", \"pictures\": " << pictures
         << ", \"steps\": " << drawn.steps << ", \"wall_ms\": " << elapsed << ", \"pictures_per_minute\": " << per_minute
         << ", \"peak_rss_mb\": " << peak_mb << "}\n";
  }
  return 0;
}

int bench(const Arguments& args) {
  if (args.has("--callers")) return bench_callers(args);
  const auto opened = std::chrono::steady_clock::now();
  audiotoken_rt::Context context(args.get("--engines"), args.get("--device", "cpu"),
                                 static_cast<int>(integer(args, "--threads", 0)));
  const double open_ms = elapsed_ms(opened);
  audiotoken_rt::DrawOptions options;
  options.scheduler = args.get("--scheduler");
  options.steps = static_cast<int>(integer(args, "--steps", 0));
  options.seed = 0;
  const int rounds = static_cast<int>(integer(args, "--rounds", 3));
  if (rounds < 1) throw std::invalid_argument("--rounds must be at least 1");
  audiotoken_rt::DrawOptions warm_up = options;
  warm_up.steps = options.steps > 0 && options.steps < 2 ? options.steps : 2;  // sessions created, caches filled
  {
    const ClipWindow clip = read_clip_window(args.clip, 0.0);
    context.generate(audio_of(clip, args), warm_up);
  }
  const atrt_bundle_info info = context.info();
  const audiotoken_rt::DrawOptions drawn = context.resolve(options);
  const int steps = drawn.steps;
  static const char* const kStages[] = {"encode_audio", "encode_prompt", "denoise", "unet", "decode_latents"};
  double best_total = 1e300;
  std::map<std::string, double> best_stages;
  for (int round = 0; round < rounds; ++round) {  // the best round counts: a shared CPU drifts
    context.reset_stage_times();
    const auto started = std::chrono::steady_clock::now();
    const ClipWindow clip = read_clip_window(args.clip, 0.0);
    const double load_ms = elapsed_ms(started);
    context.generate(audio_of(clip, args), options);
    const double total = elapsed_ms(started);
    if (total < best_total) {
      best_total = total;
      best_stages = {{"load_audio", load_ms}};
      for (const char* stage : kStages) best_stages[stage] = context.stage_ms(stage);
    }
  }
  const double peak_mb = peak_rss_mb();
  std::printf("audiotoken-rt-cpp bench: %s, %d steps of %s, %dx%d, %s\n", args.get("--engines").c_str(), steps,
              drawn.scheduler.c_str(), info.width, info.height,
              info.device);
  for (const auto& [stage, ms] : best_stages) std::printf("  %-15s %10.1f ms\n", stage.c_str(), ms);
  std::printf("  %-15s %10.1f ms per picture (best of %d)\n", "total", best_total, rounds);
  std::printf("  %-15s %10.2f ms\n", "unet step", best_stages["unet"] / steps);
  std::printf("  %-15s %10.1f MB\n", "peak rss", peak_mb);
  if (args.has("--json")) {
    std::ofstream json(args.get("--json"));
    json << "{\"total_ms\": " << best_total << ", \"unet_step_ms\": " << best_stages["unet"] / steps
         << ", \"open_ms\": " << open_ms << ", \"peak_rss_mb\": " << peak_mb << ", \"steps\": " << steps
         << ", \"stages\": {";
    bool first = true;
    for (const auto& [stage, ms] : best_stages) {
      json << (first ? "" : ", ") << "\"" << stage << "\": " << ms;
      first = false;
    }
    json << "}}\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Arguments args = parse(argc, argv);
    if (args.command == "generate") return generate(args);
    if (args.command == "bench") return bench(args);
    throw std::invalid_argument("unknown command '" + args.command + "'");
  } catch (const audiotoken_rt::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), kUsage);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
