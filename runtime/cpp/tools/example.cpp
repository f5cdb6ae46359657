// audiotoken-rt-cpp: the example host program of the C++ library, a native twin of `audiotoken-rt generate`,
// `edit` and `compose`, and of `audiotoken-rt bench` for one configuration. Each command's options are the Python
// CLI's of the same name (`audiotoken-rt-cpp COMMAND --help` lists them); --out names the picture file itself
// (STEM-0.png, STEM-1.png, ... beside it for several), where the Python CLI takes a folder.
//
//   audiotoken-rt-cpp generate CLIP --engines DIR --out PICTURE.png [--mix A:0.7,B:0.3] [--stereo] [options]
//   audiotoken-rt-cpp edit PICTURE.png CLIP --engines DIR --out PICTURE.png [--strength S] [--mask MASK.png]
//       [--feather PX] [--mix ...] [options]
//   audiotoken-rt-cpp compose CLIP... --engines DIR --out PICTURE.png [--layout L] [--background P] [--blend B]
//       [options]
//   audiotoken-rt-cpp bench CLIP --engines DIR [--steps N] [--scheduler S] [--rounds N] [--json PATH]
//   audiotoken-rt-cpp bench CLIP --engines DIR --callers N [--contexts shared|own] [--pictures K] [--json PATH]
//
// bench times one picture (the best of --rounds) by stage; with --callers, N threads draw K pictures each at once,
// each with its own State, on one Context (shared) or on a Context each (own): pictures per minute and the peak
// RSS of the process (tools/bench.sh runs each configuration in a process of its own).
//
// Data flow: clip file -> libsndfile (the 10 s window, clip_file.cpp) -> the library (downmix, soxr to 16 kHz,
// audio token, a mix's weighted mean, prompt, denoise, VAE, RGB8: audiotoken_rt.hpp) -> libpng (png_file.cpp);
// edit reads its picture and mask in the formats the Python side reads (picture_file.cpp). Each picture
// is written with the options it was drawn with as the library completes them (Context::resolve) in its PNG text.
// Errors: one line `error: ...` (and `hint: ...` from the library), exit 1; --help exits 0.
#include <sys/resource.h>

#include <algorithm>
#include <cfloat>
#include <climits>
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
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "audiotoken_rt.hpp"
#include "clip_file.hpp"
#include "picture_file.hpp"
#include "png_file.hpp"

namespace {

const char* const kProgramHelp =
    "usage: audiotoken-rt-cpp COMMAND ... (COMMAND --help for its options)\n"
    "\n"
    "Sounds into pictures with an engine bundle from `audiotoken-rt export`.\n"
    "\n"
    "commands:\n"
    "  generate  draw a picture of a clip (or a --mix of clips, or --stereo)\n"
    "  edit      move a picture toward what a clip sounds like\n"
    "  compose   draw several clips in one picture\n"
    "  bench     time a picture, or threads drawing at once\n";

const char* const kDrawingHelp =
    "  --engines DIR        engine bundle folder (from `audiotoken-rt export`)\n"
    "  --out PICTURE.png    where the picture goes (STEM-K.png for several)\n"
    "  --overwrite          replace pictures that exist\n"
    "  --seed N             seed of the first picture; picture k gets N+k\n"
    "                       (-1 or unset: a random one)\n"
    "  --num-images N       pictures to draw, 1 to 100 (default 1)\n"
    "  --steps N            denoising steps (default: the bundle's recipe)\n"
    "  --guidance G         classifier-free guidance, 1 to 50\n"
    "  --scheduler S        dpm++2m, pndm, ddim, euler, euler-a, lcm, tcd\n"
    "  --eta E              ddim and tcd only: fresh noise per step, 0 to 1\n"
    "  --spacing S          leading, trailing or linspace (not lcm, tcd)\n"
    "  --negative-prompt T  the unconditional branch (at most 1000 bytes)\n"
    "  --fast               the bundle's distillation preset\n"
    "  --start SECONDS      where each clip's 10 s window starts (default 0)\n"
    "  --downmix MODE       first (default), mean or second channel\n"
    "  --device D           cpu (default), cuda or tensorrt\n"
    "  --threads N          ONNX Runtime's threads (0: its default)\n"
    "  -h, --help           show this help\n";

const char* const kGenerateHelp =
    "usage: audiotoken-rt-cpp generate CLIP --engines DIR --out PICTURE.png\n"
    "                                   [options]\n"
    "       audiotoken-rt-cpp generate --mix A.wav:0.7,B.wav:0.3 --engines DIR\n"
    "                                   --out PICTURE.png [options]\n"
    "\n"
    "Draw a picture of a sound clip (WAV, FLAC, OGG, MP3; 10 s from --start).\n"
    "\n"
    "options:\n"
    "  --prompt T           template holding <*> once (default: the bundle's)\n"
    "  --mix A:W,B:W        a mix of clips drawn as one sound, instead of CLIP:\n"
    "                       its token is the weighted mean of theirs\n"
    "  --stereo             the clip's left and right channels each on its\n"
    "                       side, widths following their energies; equal\n"
    "                       channels (or mono) give the plain picture\n";

const char* const kEditHelp =
    "usage: audiotoken-rt-cpp edit PICTURE.png CLIP --engines DIR\n"
    "                               --out PICTURE.png [options]\n"
    "\n"
    "Edit a picture (PNG, JPEG, WebP, AVIF, GIF, BMP or TIFF; any size,\n"
    "transparency kept) with a sound clip: it moves toward what the sound\n"
    "means, as far as --strength lets it, only where --mask is white. The edit\n"
    "comes back at the picture's own size, written as PNG.\n"
    "\n"
    "options:\n"
    "  --strength S         how far the picture may move, 0-1: 0 returns it\n"
    "                       unchanged, 1 draws anew (default 0.6)\n"
    "  --mask MASK         white may change, black stays the picture's\n"
    "                       (another size is stretched to the picture's)\n"
    "  --feather PX         with --mask: the soft edge, 0 to 256 pixels,\n"
    "                       inside the white region (default 8)\n"
    "  --prompt T           template holding <*> once (default: the bundle's)\n"
    "  --mix A:W,B:W        a mix of clips as the sound, instead of CLIP\n";

const char* const kComposeHelp =
    "usage: audiotoken-rt-cpp compose CLIP... --engines DIR --out PICTURE.png\n"
    "                                  [options]\n"
    "\n"
    "Draw several sounds in one picture: \"a photo of <1> next to <2>\", or each\n"
    "sound in its region (--layout left,right) around a --background.\n"
    "\n"
    "options:\n"
    "  --prompt T           without --layout: one prompt holding <1>..<K>\n"
    "                       (default: the template, <*> read as '<1> and <2>');\n"
    "                       with --layout: every region's prompt, holding <*>\n"
    "  --layout L           a region per clip: left,right | top,bottom (and\n"
    "                       reversed) | ROWSxCOLS, e.g. 2x2 | boxes as\n"
    "                       fractions x0,y0,x1,y1;x0,y0,x1,y1 (0,0 top left)\n"
    "  --background T       with --layout: the prompt for what regions leave\n"
    "  --blend B            with --layout: the soft edge between regions, a\n"
    "                       fraction of the shorter side (default 0.125)\n";

const char* const kBenchHelp =
    "usage: audiotoken-rt-cpp bench CLIP --engines DIR [--steps N]\n"
    "           [--scheduler S] [--rounds N] [--json PATH]\n"
    "       audiotoken-rt-cpp bench CLIP --engines DIR --callers N\n"
    "           [--contexts shared|own] [--pictures K] [--steps N]\n"
    "           [--scheduler S] [--threads N] [--json PATH]\n"
    "\n"
    "Time one picture by stage (the best of --rounds), or --callers threads\n"
    "drawing --pictures each at once: pictures per minute and peak RSS.\n";

// The options each command takes; those in kFlags take no value.
const std::set<std::string> kFlags = {"--fast", "--overwrite", "--stereo"};
const std::set<std::string> kDrawingOptions = {
    "--engines", "--out", "--overwrite", "--seed", "--num-images", "--steps", "--guidance", "--scheduler", "--eta",
    "--spacing", "--negative-prompt", "--fast", "--start", "--downmix", "--device", "--threads", "--prompt"};
const std::map<std::string, std::set<std::string>> kCommandOptions = {
    {"generate", {"--mix", "--stereo"}},
    {"edit", {"--strength", "--mask", "--feather", "--mix"}},
    {"compose", {"--layout", "--background", "--blend"}},
    {"bench", {"--engines", "--steps", "--scheduler", "--rounds", "--json", "--callers", "--contexts", "--pictures",
               "--threads", "--device", "--downmix"}},
};

// Help asked for: the text to print (exit 0).
struct HelpAsked {
  const char* text;
};

struct Arguments {
  std::string command;
  std::vector<std::string> positional;  // clips (and edit's picture first)
  std::map<std::string, std::string> values;
  bool has(const std::string& key) const { return values.count(key) > 0; }
  std::string get(const std::string& key, const std::string& otherwise = "") const {
    auto found = values.find(key);
    return found == values.end() ? otherwise : found->second;
  }
};

const char* help_of(const std::string& command) {
  if (command == "generate") return kGenerateHelp;
  if (command == "edit") return kEditHelp;
  if (command == "compose") return kComposeHelp;
  return kBenchHelp;
}

Arguments parse(int argc, char** argv) {
  Arguments args;
  std::vector<std::string> words(argv + 1, argv + argc);
  if (words.empty()) throw std::invalid_argument("no command: generate, edit, compose or bench (--help)");
  args.command = words[0];
  if (args.command == "--help" || args.command == "-h") throw HelpAsked{kProgramHelp};
  const auto known = kCommandOptions.find(args.command);
  if (known == kCommandOptions.end()) {
    throw std::invalid_argument("unknown command '" + args.command + "': generate, edit, compose or bench (--help)");
  }
  const bool drawing = args.command != "bench";
  bool options_done = false;  // after "--", every word is a clip
  for (std::size_t i = 1; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (options_done || word.rfind("-", 0) != 0 || word == "-") {
      args.positional.push_back(word);
      continue;
    }
    if (word == "--") {
      options_done = true;
      continue;
    }
    if (word == "--help" || word == "-h") throw HelpAsked{help_of(args.command)};
    if (known->second.count(word) == 0 && !(drawing && kDrawingOptions.count(word) > 0)) {
      throw std::invalid_argument(args.command + ": no such option " + word + " (audiotoken-rt-cpp " + args.command +
                                  " --help)");
    }
    if (kFlags.count(word) > 0) {
      args.values[word] = "1";
    } else if (i + 1 < words.size()) {
      args.values[word] = words[++i];
    } else {
      throw std::invalid_argument(word + " needs a value");
    }
  }
  if (!args.has("--engines")) throw std::invalid_argument("--engines DIR is required");
  if (drawing && !args.has("--out")) throw std::invalid_argument("--out PICTURE.png is required");
  return args;
}

long long integer(const Arguments& args, const std::string& key, long long otherwise) {
  if (!args.has(key)) return otherwise;
  const std::string text = args.get(key);
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) throw std::invalid_argument(key + " expects an integer, got '" + text + "'");
  return value;
}

double real(const Arguments& args, const std::string& key, double otherwise) {
  if (!args.has(key)) return otherwise;
  const std::string text = args.get(key);
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::out_of_range&) {
    value = text.find('-') == 0 ? -HUGE_VAL : HUGE_VAL;  // beyond double: refused by the bounds as infinite
    used = text.size();
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) throw std::invalid_argument(key + " expects a number, got '" + text + "'");
  return value;
}

// An integer option the library takes as an int: one beyond int's range is refused here, naming the value given
// (clamped, the library would name another).
int int_option(const Arguments& args, const std::string& key, int otherwise) {
  const long long value = integer(args, key, otherwise);
  if (value < INT_MIN || value > INT_MAX) {
    throw std::invalid_argument(key + " is " + args.get(key) + "; far out of range (at most " +
                                std::to_string(INT_MAX) + ")");
  }
  return static_cast<int>(value);
}

float to_float(double value) {  // beyond float's range: infinity, which the library refuses; NaN stays NaN
  return std::isnan(value) || std::abs(value) <= static_cast<double>(FLT_MAX) ? static_cast<float>(value)
                                                                                : HUGE_VALF;
}

audiotoken_rt::DrawOptions draw_options(const Arguments& args) {
  audiotoken_rt::DrawOptions options;
  options.prompt = args.get("--prompt");
  options.negative_prompt = args.get("--negative-prompt");
  options.scheduler = args.get("--scheduler");
  options.steps = int_option(args, "--steps", 0);
  options.guidance = to_float(real(args, "--guidance", 0.0));
  options.eta = to_float(real(args, "--eta", ATRT_RECIPE_ETA));
  options.timestep_spacing = args.get("--spacing");
  options.seed = integer(args, "--seed", ATRT_RANDOM_SEED);
  const long long num_images = integer(args, "--num-images", 1);
  if (num_images < 1 || num_images > ATRT_MAX_NUM_IMAGES) {  // before a path is made for each (the Python CLI's words)
    throw std::invalid_argument("--num-images is " + args.get("--num-images") +
                                "; it must be a whole number from 1 to " + std::to_string(ATRT_MAX_NUM_IMAGES));
  }
  options.num_images = static_cast<int>(num_images);
  options.fast = args.has("--fast");
  options.stereo = args.has("--stereo");
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

// --mix A.wav:0.7,B.wav:0.3 -> (clip, weight) pairs, as runtime/commands/jobs.py parse_mix reads and checks it.
std::vector<std::pair<std::string, double>> parse_mix(const std::string& text) {
  std::vector<std::pair<std::string, double>> pairs;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const std::size_t first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    const std::size_t colon = item.rfind(':');
    double weight = NAN;
    if (colon != std::string::npos && colon > 0) {
      try {
        std::size_t used = 0;
        weight = std::stod(item.substr(colon + 1), &used);
        if (used != item.size() - colon - 1) weight = NAN;
      } catch (const std::exception&) {
        weight = NAN;
      }
    }
    if (!std::isfinite(weight)) throw std::invalid_argument("--mix: '" + item + "' is not CLIP:WEIGHT");
    const std::string path = item.substr(0, colon);
    if (!std::filesystem::is_regular_file(path)) throw std::invalid_argument("--mix: " + path + ": no such clip");
    pairs.emplace_back(path, weight);
  }
  if (text.empty() || text.back() == ',') throw std::invalid_argument("--mix: '' is not CLIP:WEIGHT");
  std::vector<double> weights;
  for (const auto& pair : pairs) weights.push_back(pair.second);
  // the weights checked now, by the library's own rule (a mix of one-float stand-ins), before any clip is read
  audiotoken_rt::mix_tokens(std::vector<std::vector<float>>(pairs.size(), std::vector<float>(1, 0.0f)), weights);
  return pairs;
}

// A clip's token, its 10 s window read from --start.
std::vector<float> clip_token(audiotoken_rt::Context& context, const std::string& path, const Arguments& args) {
  const ClipWindow clip = read_clip_window(path, real(args, "--start", 0.0));
  return context.encode_audio(audio_of(clip, args));
}

// The one sound of generate or edit: a clip's token, or a --mix's (the weighted mean of its clips' tokens).
std::vector<float> sound_token(audiotoken_rt::Context& context, const std::vector<std::string>& clips,
                               const Arguments& args) {
  if (!args.has("--mix")) return clip_token(context, clips[0], args);
  std::vector<std::vector<float>> tokens;
  std::vector<double> weights;
  for (const auto& [path, weight] : parse_mix(args.get("--mix"))) {
    tokens.push_back(clip_token(context, path, args));
    weights.push_back(weight);
  }
  return audiotoken_rt::mix_tokens(tokens, weights);
}

// The sound's name for the PNG text: the clip's file name, or the mix as its clips' names and weights.
std::string sound_label(const std::vector<std::string>& clips, const Arguments& args) {
  if (!args.has("--mix")) return std::filesystem::path(clips[0]).filename().string();
  std::string label;
  for (const auto& [path, weight] : parse_mix(args.get("--mix"))) {
    std::ostringstream item;
    item << std::filesystem::path(path).filename().string() << ":" << weight;
    label += (label.empty() ? "" : ",") + item.str();
  }
  return label;
}

std::vector<std::string> picture_paths(const std::string& out, int count) {
  if (count == 1) return {out};
  const std::filesystem::path path(out);
  std::vector<std::string> paths;
  for (int k = 0; k < count; ++k) {
    paths.push_back(
        (path.parent_path() / (path.stem().string() + "-" + std::to_string(k) + path.extension().string())).string());
  }
  return paths;
}

// The pictures' paths, refused when one is a folder, or exists and --overwrite is not given.
std::vector<std::string> output_paths(const Arguments& args, int num_images) {
  const std::vector<std::string> paths = picture_paths(args.get("--out"), num_images > 0 ? num_images : 1);
  for (const std::string& path : paths) {
    if (std::filesystem::is_directory(path)) {
      throw audiotoken_rt::Error(ATRT_CONFIG_ERROR, "--out " + path + ": is a folder",
                                 "name a PNG file, e.g. --out " + (std::filesystem::path(path) / "out.png").string());
    }
    if (std::filesystem::exists(path) && !args.has("--overwrite")) {
      throw audiotoken_rt::Error(ATRT_CONFIG_ERROR, path + ": already exists", "pass --overwrite to replace it");
    }
  }
  return paths;
}

// Each picture to its path, with what drew it in its PNG text (the prompt drawn; `extra`: the command's own), one
// line on stdout each.
void write_pictures(const std::vector<audiotoken_rt::Picture>& pictures, const std::vector<std::string>& paths,
                    audiotoken_rt::Context& context, const audiotoken_rt::DrawOptions& options,
                    const std::string& prompt, const std::string& sound,
                    const std::vector<std::pair<std::string, std::string>>& extra) {
  audiotoken_rt::DrawOptions asked = options;
  asked.stereo = false;
  asked.prompt.clear();  // the recipe completed; the prompt is the caller's (a composition's holds <1>..<K>)
  const audiotoken_rt::DrawOptions drawn = context.resolve(asked);
  const atrt_bundle_info info = context.info();
  for (std::size_t k = 0; k < pictures.size(); ++k) {
    const audiotoken_rt::Picture& picture = pictures[k];
    std::ostringstream guidance, eta;
    guidance << drawn.guidance;
    eta << drawn.eta;
    std::vector<std::pair<std::string, std::string>> text = {
        {"audiotoken:clip", sound},
        {"audiotoken:prompt", prompt},
        {"audiotoken:negative_prompt", drawn.negative_prompt},
        {"audiotoken:seed", std::to_string(picture.seed)},
        {"audiotoken:steps", std::to_string(drawn.steps)},
        {"audiotoken:scheduler", drawn.scheduler},
        {"audiotoken:guidance", guidance.str()},
        {"audiotoken:eta", eta.str()},
        {"audiotoken:bundle", info.bundle_id},
        {"audiotoken:runtime", "audiotoken-rt-cpp"}};
    if (!drawn.timestep_spacing.empty()) text.emplace_back("audiotoken:timestep_spacing", drawn.timestep_spacing);
    text.insert(text.end(), extra.begin(), extra.end());
    std::filesystem::path parent = std::filesystem::path(paths[k]).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    write_png(paths[k], picture.rgb.data(), picture.width, picture.height, text, picture.channels);
    std::printf("%s (seed %lld)\n", paths[k].c_str(), static_cast<long long>(picture.seed));
  }
}

// The one-sound prompt drawn: the caller's, or the bundle's template.
std::string template_prompt(const audiotoken_rt::DrawOptions& options, audiotoken_rt::Context& context) {
  return options.prompt.empty() ? std::string(context.info().template_prompt) : options.prompt;
}

audiotoken_rt::Context open_context(const Arguments& args) {
  return audiotoken_rt::Context(args.get("--engines"), args.get("--device", "cpu"),
                                int_option(args, "--threads", 0));
}

int generate(const Arguments& args) {
  const std::vector<std::string>& clips = args.positional;
  if (clips.size() > 1) {
    throw std::invalid_argument("generate: one clip at a time (got " + clips[0] + " and " + clips[1] + ")");
  }
  if (clips.empty() == !args.has("--mix")) throw std::invalid_argument("generate: give a CLIP or a --mix, one of them");
  if (args.has("--stereo") && args.has("--mix")) {
    throw std::invalid_argument("--stereo places one clip's two channels; it does not take a --mix");
  }
  const audiotoken_rt::DrawOptions options = draw_options(args);
  const std::vector<std::string> paths = output_paths(args, options.num_images);
  if (args.has("--mix")) parse_mix(args.get("--mix"));  // a bad --mix refused before the bundle opens
  audiotoken_rt::Context context = open_context(args);
  std::vector<audiotoken_rt::Picture> pictures;
  if (args.has("--mix")) {
    context.resolve(options);  // bad options refused before the clips are encoded
    pictures = context.draw(sound_token(context, clips, args), options);
  } else {
    const ClipWindow clip = read_clip_window(clips[0], real(args, "--start", 0.0));
    pictures = context.generate(audio_of(clip, args), options);
  }
  std::vector<std::pair<std::string, std::string>> extra;
  if (options.stereo) extra.emplace_back("audiotoken:stereo", "1");
  write_pictures(pictures, paths, context, options, template_prompt(options, context), sound_label(clips, args),
                 extra);
  return 0;
}

// A picture file as the C API takes it: RGB8, or RGBA8 where the file has transparency.
audiotoken_rt::Picture picture_of(const PictureFile& file) {
  audiotoken_rt::Picture picture;
  picture.width = file.width;
  picture.height = file.height;
  if (file.alpha.empty()) {
    picture.rgb = file.rgb;  // [H, W, 3]
    return picture;
  }
  picture.channels = 4;
  picture.rgb.resize(file.alpha.size() * 4);  // [H, W, 4]
  for (std::size_t i = 0; i < file.alpha.size(); ++i) {
    std::copy_n(file.rgb.begin() + static_cast<std::ptrdiff_t>(3 * i), 3,
                picture.rgb.begin() + static_cast<std::ptrdiff_t>(4 * i));
    picture.rgb[4 * i + 3] = file.alpha[i];
  }
  return picture;
}

int edit(const Arguments& args) {
  const std::vector<std::string>& given = args.positional;
  if (given.empty()) throw std::invalid_argument("edit: give the PICTURE to edit, then a CLIP (or a --mix)");
  const std::vector<std::string> clips(given.begin() + 1, given.end());
  if (clips.size() > 1) {
    throw std::invalid_argument("edit: one clip at a time (got " + clips[0] + " and " + clips[1] + ")");
  }
  if (clips.empty() == !args.has("--mix")) throw std::invalid_argument("edit: give a CLIP or a --mix, one of them");
  const audiotoken_rt::DrawOptions options = draw_options(args);
  audiotoken_rt::EditOptions editing;
  editing.strength = real(args, "--strength", ATRT_DEFAULT_STRENGTH);
  const long long feather = integer(args, "--feather", ATRT_DEFAULT_FEATHER);
  if (feather < 0 || feather > ATRT_MAX_FEATHER) {  // the library says the same of an int; this of any integer
    throw std::invalid_argument("--feather is " + std::to_string(feather) +
                                " pixels; it must be a whole number from 0 (a hard edge) to " +
                                std::to_string(ATRT_MAX_FEATHER));
  }
  editing.feather = static_cast<int>(feather);
  const std::vector<std::string> paths = output_paths(args, options.num_images);
  const audiotoken_rt::Picture source = picture_of(read_picture(given[0], ATRT_MAX_PICTURE_PIXELS));
  audiotoken_rt::Picture mask;
  if (args.has("--mask")) {
    mask = picture_of(read_picture(args.get("--mask"), ATRT_MAX_PICTURE_PIXELS));
    editing.mask = &mask;
  }
  if (args.has("--mix")) parse_mix(args.get("--mix"));  // a bad --mix refused before the bundle opens
  audiotoken_rt::Context context = open_context(args);
  context.resolve(options);  // bad options refused before the clips are encoded
  const std::vector<audiotoken_rt::Picture> pictures =
      context.edit(sound_token(context, clips, args), source, options, editing);
  std::ostringstream strength;
  strength << editing.strength;
  std::vector<std::pair<std::string, std::string>> extra = {
      {"audiotoken:source", std::filesystem::path(given[0]).filename().string()},
      {"audiotoken:strength", strength.str()}};
  if (editing.mask != nullptr) {
    extra.emplace_back("audiotoken:mask", std::filesystem::path(args.get("--mask")).filename().string());
    extra.emplace_back("audiotoken:feather", std::to_string(editing.feather));
  }
  write_pictures(pictures, paths, context, options, template_prompt(options, context), sound_label(clips, args),
                 extra);
  return 0;
}

int compose(const Arguments& args) {
  const std::vector<std::string>& clips = args.positional;
  if (clips.empty()) throw std::invalid_argument("compose: name the clips, one per placeholder or region");
  if (clips.size() > ATRT_MAX_COMPOSE_SOUNDS) {
    throw std::invalid_argument("compose: " + std::to_string(clips.size()) + " clips; at most " +
                                std::to_string(ATRT_MAX_COMPOSE_SOUNDS));
  }
  const audiotoken_rt::DrawOptions options = draw_options(args);
  audiotoken_rt::ComposeOptions composing;
  if (args.has("--layout")) composing.layout = args.get("--layout");
  if (args.has("--background")) composing.background = args.get("--background");
  composing.blend = real(args, "--blend", ATRT_DEFAULT_BLEND);
  const std::vector<std::string> paths = output_paths(args, options.num_images);
  audiotoken_rt::Context context = open_context(args);
  audiotoken_rt::DrawOptions recipe = options;
  recipe.prompt.clear();  // (a composition's prompt holds <1>..<K>: the library checks it as it composes)
  context.resolve(recipe);  // bad options refused before the clips are encoded
  std::vector<std::vector<float>> tokens;
  for (const std::string& clip : clips) tokens.push_back(clip_token(context, clip, args));
  const std::vector<audiotoken_rt::Picture> pictures = context.compose(tokens, options, composing);
  std::string label;
  for (const std::string& clip : clips) {
    label += (label.empty() ? "" : " | ") + std::filesystem::path(clip).filename().string();
  }
  std::vector<std::pair<std::string, std::string>> extra;
  if (composing.layout) extra.emplace_back("audiotoken:layout", *composing.layout);
  if (composing.background) extra.emplace_back("audiotoken:background", *composing.background);
  std::string prompt = template_prompt(options, context);
  if (options.prompt.empty() && !composing.layout) {  // the template, <*> read as '<1> and <2> ...'
    std::string together;
    for (std::size_t k = 1; k <= clips.size(); ++k) together += (k > 1 ? " and <" : "<") + std::to_string(k) + ">";
    for (std::size_t at = 0; (at = prompt.find("<*>", at)) != std::string::npos; at += together.size()) {
      prompt.replace(at, 3, together);
    }
  }
  write_pictures(pictures, paths, context, options, prompt, label, extra);
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

const std::string& bench_clip(const Arguments& args) {
  if (args.positional.size() != 1) throw std::invalid_argument("bench: give one CLIP");
  return args.positional[0];
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
  options.steps = int_option(args, "--steps", 0);
  audiotoken_rt::DrawOptions warm_up = options;
  warm_up.steps = options.steps > 0 && options.steps < 2 ? options.steps : 2;  // sessions created, caches filled
  warm_up.seed = 0;
  const ClipWindow clip = read_clip_window(bench_clip(args), 0.0);
  const audiotoken_rt::Audio audio = audio_of(clip, args);
  std::vector<audiotoken_rt::Context> contexts;
  for (long long k = 0; k < (shared ? 1 : callers); ++k) {
    contexts.emplace_back(args.get("--engines"), args.get("--device", "cpu"), int_option(args, "--threads", 0));
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
         << ", \"steps\": " << drawn.steps << ", \"wall_ms\": " << elapsed
         << ", \"pictures_per_minute\": " << per_minute << ", \"peak_rss_mb\": " << peak_mb << "}\n";
  }
  return 0;
}

int bench(const Arguments& args) {
  bench_clip(args);
  if (args.has("--callers")) return bench_callers(args);
  const auto opened = std::chrono::steady_clock::now();
  audiotoken_rt::Context context(args.get("--engines"), args.get("--device", "cpu"),
                                 int_option(args, "--threads", 0));
  const double open_ms = elapsed_ms(opened);
  audiotoken_rt::DrawOptions options;
  options.scheduler = args.get("--scheduler");
  options.steps = int_option(args, "--steps", 0);
  options.seed = 0;
  const int rounds = int_option(args, "--rounds", 3);
  if (rounds < 1) throw std::invalid_argument("--rounds must be at least 1");
  audiotoken_rt::DrawOptions warm_up = options;
  warm_up.steps = options.steps > 0 && options.steps < 2 ? options.steps : 2;  // sessions created, caches filled
  {
    const ClipWindow clip = read_clip_window(bench_clip(args), 0.0);
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
    const ClipWindow clip = read_clip_window(bench_clip(args), 0.0);
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
    if (args.command == "edit") return edit(args);
    if (args.command == "compose") return compose(args);
    return bench(args);
  } catch (const HelpAsked& help) {
    std::fputs(help.text, stdout);
    if (help.text != kProgramHelp && help.text != kBenchHelp) std::fputs(kDrawingHelp, stdout);
    return 0;
  } catch (const audiotoken_rt::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
  } catch (const PictureError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
