// manifest.json -> Manifest, and the bundle check of runtime/bundle.py `verify` (see manifest.hpp).
#include "manifest.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

#include "errors.hpp"
#include "external_data.hpp"
#include "json_integer.hpp"
#include "sha256.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace atrt {

namespace {

const char* const kRebuildHint = "rebuild the bundle with audiotoken-rt export --force";
const char* const kUntrustedHint =
    "get the bundle again from a publisher you trust, or rebuild it with audiotoken-rt export --force";

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// A value for a one-line message: JSON-quoted (control characters escaped, invalid UTF-8 replaced), long ones cut.
std::string shown(const std::string& value) {
  constexpr std::size_t kShown = 120;
  const std::string cut = value.size() > kShown ? value.substr(0, kShown) + "..." : value;
  return json(cut).dump(-1, ' ', false, json::error_handler_t::replace);
}

[[noreturn]] void refuse(const std::string& source, const std::string& field, const std::string& value,
                         const std::string& why) {
  fail(ATRT_BUNDLE_ERROR, source + ": " + field + " " + shown(value) + " " + why,
       "this bundle was not made by audiotoken-rt export, or was tampered with: rebuild it with export --force");
}

void check_hex64(const std::string& source, const std::string& field, const std::string& value) {
  const bool hex = value.size() == 64 && std::all_of(value.begin(), value.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!hex) refuse(source, field, value, "is not 64 lowercase hex digits");
}

// A path the manifest names: relative POSIX, every part a name (no '', '.', '..'), no backslash, no NUL or other
// control character (a path is printed in one-line messages).
void check_relative_path(const std::string& source, const std::string& field, const std::string& value) {
  if (value.empty()) refuse(source, field, value, "is empty; expected a relative path inside the bundle");
  if (value.find('\0') != std::string::npos) refuse(source, field, value, "holds a NUL byte");
  if (std::any_of(value.begin(), value.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; })) {
    refuse(source, field, value, "holds a control character");
  }
  if (value.find('\\') != std::string::npos) refuse(source, field, value, "holds a backslash; expected a POSIX path");
  if (value.front() == '/') refuse(source, field, value, "is absolute; expected a relative path inside the bundle");
  if (value.size() > kMaxPathBytes) {
    refuse(source, field, value, "is longer than " + std::to_string(kMaxPathBytes) + " bytes");
  }
  for (std::size_t start = 0; start <= value.size();) {
    std::size_t end = value.find('/', start);
    if (end == std::string::npos) end = value.size();
    const std::string part = value.substr(start, end - start);
    if (part.empty()) refuse(source, field, value, "has an empty part; expected a relative path inside the bundle");
    if (part == "..") refuse(source, field, value, "climbs out with '..'; expected a relative path inside the bundle");
    if (part == ".") refuse(source, field, value, "has a '.' part; expected a plain relative path");
    if (part.size() > kMaxPartBytes) {
      refuse(source, field, value, "has a part longer than " + std::to_string(kMaxPartBytes) + " bytes");
    }
    start = end + 1;
  }
}

FileEntry file_entry(const json& j, const std::string& field, const std::string& source) {
  FileEntry entry{field, j.at("path").get<std::string>(), j.at("sha256").get<std::string>(),
                  json_integer<std::uint64_t>(j.at("size"))};
  check_relative_path(source, field + ".path", entry.path);
  check_hex64(source, field + ".sha256", entry.sha256);
  return entry;
}

TensorSpec tensor_spec(const json& j) {
  return TensorSpec{j.at("name").get<std::string>(), j.at("dtype").get<std::string>(),
                    json_integers<std::int64_t>(j.at("shape"))};
}

std::vector<TensorSpec> tensor_specs(const json& j) {
  std::vector<TensorSpec> specs;
  for (const auto& item : j) specs.push_back(tensor_spec(item));
  return specs;
}

EngineEntry engine_entry(const std::string& name, const json& j, const std::string& source) {
  EngineEntry engine;
  engine.name = j.at("name").get<std::string>();
  const std::string field = "engines." + name;
  engine.file = file_entry(j.at("file"), field + ".file", source);
  if (!j.at("data").is_null()) engine.data = file_entry(j.at("data"), field + ".data", source);
  engine.precision = j.at("precision").get<std::string>();
  engine.inputs = tensor_specs(j.at("inputs"));
  engine.outputs = tensor_specs(j.at("outputs"));
  j.at("parity");  // present in every manifest (its figures are for audiotoken-rt info)
  for (const auto& plan : j.at("plans")) {
    engine.plans.push_back(
        file_entry(plan.at("file"), field + ".plans[" + std::to_string(engine.plans.size()) + "].file", source));
  }
  if (j.contains("variants")) {
    for (const auto& variant : j.at("variants")) {
      const std::string at = field + ".variants[" + std::to_string(engine.variants.size()) + "].file";
      engine.variants.push_back(
          Variant{file_entry(variant.at("file"), at, source), variant.at("devices").get<std::vector<std::string>>()});
    }
  }
  return engine;
}

// Where the Python runtime remembers the files it has hashed for a bundle (runtime/bundle.py hash_cache_path):
// $XDG_CACHE_HOME/audiotoken-rt/verified/<key>.json, {path: [absolute path, size, mtime in ns, sha256]}.
fs::path hash_cache_path(const std::string& key) {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const fs::path base = xdg && *xdg ? fs::path(xdg) : fs::path(home ? home : ".") / ".cache";
  return base / "audiotoken-rt" / "verified" / (key + ".json");
}

// [absolute path, size, mtime_ns, sha256 expected]: what a check saw; an unchanged stamp needs no new hash
json stamp_of(const fs::path& path, const std::string& sha256) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return json();
  const std::int64_t mtime_ns = static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
  return json::array({path.string(), static_cast<std::int64_t>(info.st_size), mtime_ns, sha256});
}

// Why ONNX Runtime would read `graph`'s weights from a file the manifest does not hash, or "" (runtime/bundle.py
// external_data_problem): ONNX Runtime opens each tensor's external location relative to the ONNX file's folder, and
// an engine's graphs may name only the engine's data file, spelled exactly as the manifest does (so no '..', no
// absolute path, no second spelling of the same file); the bytes are compared as they stand.
std::string external_data_problem(const fs::path& folder, const EngineEntry& engine, const FileEntry& graph) {
  std::set<std::string> locations;  // sorted by bytes, as Python sorts the (UTF-8) strings
  try {
    const std::vector<std::string> found =
        external_locations(resolve_inside(folder, graph.field + ".path", graph.path).string());
    locations.insert(found.begin(), found.end());
  } catch (const MalformedProtobuf& e) {
    return graph.path + " is not an ONNX file (" + e.what() + ")";
  } catch (const std::system_error& e) {
    return graph.path + " cannot be read (" + e.code().message() + ")";
  }
  const std::size_t slash = graph.path.rfind('/');
  const std::string base = slash == std::string::npos ? "" : graph.path.substr(0, slash);
  for (const std::string& location : locations) {
    const std::string named = base.empty() ? location : base + "/" + location;
    if (!engine.data || named != engine.data->path) {
      const std::string may_read = engine.data ? "its data file " + engine.data->path
                                               : "no other file (the manifest lists no data file)";
      return graph.path + " reads external data from " + shown(location) + "; an engine's ONNX files may read " +
             may_read;
    }
  }
  return "";
}

// "1, 2, 3, 4": the schema versions this library reads (every one up to its own, as runtime/bundle.py's
// READABLE_VERSIONS; tests/test_cpp.py compares the two).
std::string readable_versions() {
  std::string text = "1";
  for (int version = 2; version <= kSchemaVersion; ++version) text += ", " + std::to_string(version);
  return text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string shell_quoted(const std::string& word) {
  if (word.empty()) return "''";
  const bool safe = std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string("_@%+=:,./-").find(c) != std::string::npos;
  });
  if (safe) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\"'\"'") : std::string(1, c);
  return quoted + "'";
}

std::string TensorSpec::describe() const { return name + " " + dtype + " " + shape_text(shape); }

const FileEntry& EngineEntry::graph_for(const std::string& device) const {
  for (const auto& variant : variants) {
    if (std::find(variant.devices.begin(), variant.devices.end(), device) != variant.devices.end()) {
      return variant.file;
    }
  }
  return file;
}

bool Recipe::holds(int batch) const {
  return std::find(unet_batches.begin(), unet_batches.end(), batch) != unet_batches.end();
}

bool Recipe::holds(const Preset& wanted) const {
  return lora && preset == wanted.name && (!wanted.tiny_decoder || decoder == "taesd") && holds(wanted.unet_batch);
}

const Preset* Recipe::fast_preset() const {
  const Preset* own = find_preset(preset);
  return own != nullptr && holds(*own) ? own : nullptr;
}

std::string Manifest::rebuild_command(const std::string& folder) const {
  auto ref = [&](const char* role) {
    auto found = source_refs.find(role);
    return found == source_refs.end() ? std::string("?") : found->second;
  };
  std::string batches;
  for (std::size_t i = 0; i < recipe.unet_batches.size(); ++i) {
    batches += (i ? "," : "") + std::to_string(recipe.unet_batches[i]);
  }
  std::vector<std::string> words = {"audiotoken-rt", "export", "--sd", ref("sd"), "--beats", ref("beats"),
                                    "--embedder", ref("embedder"), "--out", folder, "--height",
                                    std::to_string(height), "--width", std::to_string(width), "--precision",
                                    precision, "--template", template_prompt, "--unet-batch", batches};
  if (source_refs.count("lora") && recipe.lora && !recipe.preset.empty()) {  // bundle.py's LORA_SOURCE
    char scale[32];
    std::snprintf(scale, sizeof scale, "%g", recipe.lora_scale);
    words.insert(words.end(), {"--lora", ref("lora"), "--preset", recipe.preset, "--lora-scale", scale});
  }
  if (source_refs.count("tiny_vae")) words.insert(words.end(), {"--tiny-vae", ref("tiny_vae")});
  if (source_refs.count("unet")) words.insert(words.end(), {"--unet", ref("unet")});  // bundle.py's UNET_SOURCE
  words.push_back("--force");
  std::string command;
  for (std::size_t i = 0; i < words.size(); ++i) command += (i ? " " : "") + shell_quoted(words[i]);
  return command;
}

std::vector<const FileEntry*> Manifest::entries() const {
  std::vector<const FileEntry*> all;
  for (const auto& file : files) all.push_back(&file);
  for (const auto& [name, engine] : engines) {
    all.push_back(&engine.file);
    if (engine.data) all.push_back(&*engine.data);
    for (const auto& plan : engine.plans) all.push_back(&plan);
    for (const auto& variant : engine.variants) all.push_back(&variant.file);
  }
  return all;
}

std::map<std::string, std::pair<std::vector<TensorSpec>, std::vector<TensorSpec>>> Manifest::contracts() const {
  const std::int64_t n = recipe.unet_batches.size() == 1 ? recipe.unet_batches[0] : kDynamic;
  const auto size = [&](const ContractDim& dim) -> std::int64_t {
    switch (dim.symbol) {
      case SizeSymbol::none: return dim.number;
      case SizeSymbol::D: return token_dim;
      case SizeSymbol::S: return token_slots;
      case SizeSymbol::N: return n;
      case SizeSymbol::h: return height / kVaeFactor;
      case SizeSymbol::w: return width / kVaeFactor;
      case SizeSymbol::H: return height;
      case SizeSymbol::W: return width;
    }
    return 0;  // not reached: -Wswitch (an error) names a symbol the contract gained and this switch lacks
  };
  const auto specs = [&](const ContractTensor* const* tensors, std::size_t count) {
    std::vector<TensorSpec> found;
    for (std::size_t i = 0; i < count; ++i) {
      TensorSpec spec{tensors[i]->name, tensors[i]->dtype, {}};
      for (std::size_t k = 0; k < tensors[i]->rank; ++k) {
        const ContractDim& dim = tensors[i]->shape[k];
        if (dim.symbol == kSlotsSymbol && token_slots == 1) continue;  // one slot: audio_token [1, D]
        spec.shape.push_back(size(dim));
      }
      found.push_back(spec);
    }
    return found;
  };
  std::map<std::string, std::pair<std::vector<TensorSpec>, std::vector<TensorSpec>>> contracts;
  for (const EngineContract& engine : kEngineContracts) {
    contracts[engine.name] = {specs(engine.inputs, engine.input_count), specs(engine.outputs, engine.output_count)};
  }
  return contracts;
}

Manifest parse_manifest(const std::string& text, const std::string& source) {
  json d;
  try {
    d = json::parse(text);
  } catch (const json::exception& e) {
    fail(ATRT_BUNDLE_ERROR, source + ": not valid JSON (" + e.what() + ")", kRebuildHint);
  }
  int version = 0;
  try {
    version = json_integer<int>(d.at("schema_version"));
  } catch (const json::exception&) {  // absent, not an integer, or out of range: refused just below
  }
  if (version < 1 || version > kSchemaVersion) {
    fail(ATRT_BUNDLE_ERROR,
         source + ": manifest schema version " + (version ? std::to_string(version) : std::string("None")) +
             ", this audiotoken-rt reads versions " + readable_versions(),
         "rebuild the bundle with this version's audiotoken-rt export --force");
  }
  Manifest m;
  try {
    m.schema_version = version;
    m.key = d.at("key").get<std::string>();
    check_hex64(source, "key", m.key);  // it names the per-user hash cache file
    m.precision = d.at("precision").get<std::string>();
    json_integer<int>(d.at("opset"));
    m.token_dim = json_integer<int>(d.at("token_dim"));
    m.placeholder = d.at("placeholder").get<std::string>();
    m.placeholder_id = json_integer<std::int64_t>(d.at("placeholder_id"));
    m.template_prompt = d.at("template").get<std::string>();
    m.height = json_integer<int>(d.at("height"));
    m.width = json_integer<int>(d.at("width"));
    m.vae_scaling_factor = d.at("vae_scaling_factor").get<double>();
    m.prediction_type = d.at("prediction_type").get<std::string>();
    m.scheduler_config = d.at("scheduler_config");
    if (!m.scheduler_config.is_object()) {
      throw json::type_error::create(302, "scheduler_config is not an object", nullptr);
    }
    m.tokenizer = d.at("tokenizer").get<std::string>();
    check_relative_path(source, "tokenizer", m.tokenizer);
    d.at("created_with");
    for (const auto& source_item : d.at("sources")) {
      std::string role = source_item.at("role").get<std::string>();
      if (version < 5 && role == "lcm_lora") role = "lora";  // the LoRA's role before schema 5
      m.source_refs[role] = source_item.at("ref").get<std::string>();
    }
    for (const auto& file : d.at("files")) {
      m.files.push_back(file_entry(file, "files[" + std::to_string(m.files.size()) + "]", source));
    }
    for (const auto& [name, engine] : d.at("engines").items()) m.engines[name] = engine_entry(name, engine, source);
    if (version >= 2) {
      const json& r = d.at("recipe");
      m.recipe.unet_batches = json_integers<int>(r.at("unet_batches"));
      m.recipe.decoder = r.at("decoder").get<std::string>();
      m.recipe.lora = !r.at("lora").is_null();
      if (m.recipe.lora) m.recipe.lora_scale = r.at("lora").at("scale").get<double>();
      m.recipe.preset = m.recipe.lora ? kPresets[0].name : "";  // before schema 5: the one preset there was
      if (version >= 5) {
        const json& preset = r.at("preset");
        m.recipe.preset = preset.is_null() ? "" : preset.get<std::string>();
      }
      m.recipe.sampling.scheduler = r.at("scheduler").get<std::string>();
      m.recipe.sampling.steps = json_integer<int>(r.at("steps"));
      m.recipe.sampling.guidance = r.at("guidance").get<double>();
      if (version >= 4) {
        m.recipe.sampling.eta = r.at("eta").get<double>();
        const json& spacing = r.at("timestep_spacing");
        m.recipe.sampling.timestep_spacing = spacing.is_null() ? "" : spacing.get<std::string>();
      }
    }
    m.token_slots = version >= 3 ? json_integer<int>(d.at("token_slots")) : 1;
  } catch (const json::exception& e) {
    fail(ATRT_BUNDLE_ERROR, source + ": manifest lacks or mistypes a field (" + e.what() + ")", kRebuildHint);
  }
  auto bound = [&](const char* field, int value, int low, int high, int multiple) {
    if (value < low || value > high || value % multiple) {
      fail(ATRT_BUNDLE_ERROR,
           source + ": " + field + " " + std::to_string(value) + " is outside " + std::to_string(low) + " to " +
               std::to_string(high) + (multiple > 1 ? " or not a multiple of " + std::to_string(multiple) : ""),
           kRebuildHint);
    }
  };
  bound("token_dim", m.token_dim, 1, kMaxTokenDim, 1);
  bound("height", m.height, kVaeFactor, kMaxPictureSide, kVaeFactor);
  bound("width", m.width, kVaeFactor, kMaxPictureSide, kVaeFactor);
  bound("token_slots", m.token_slots, 1, kTokenSlots, 1);
  const std::vector<int>& batches = m.recipe.unet_batches;
  const bool batches_ok = !batches.empty() && batches.size() <= 2 &&
                          std::all_of(batches.begin(), batches.end(),
                                      [](int b) { return b == kSingleBatch || b == kGuidedBatch; }) &&
                          !(batches.size() == 2 && batches[0] == batches[1]);
  if (!batches_ok) {
    std::string listed;
    for (int b : batches) listed += (listed.empty() ? "" : ", ") + std::to_string(b);
    fail(ATRT_BUNDLE_ERROR, source + ": recipe.unet_batches [" + listed + "] is not [1], [2] or [1, 2]", kRebuildHint);
  }
  const std::string recipe_problem = sampling_problem(m.recipe.sampling);
  if (!recipe_problem.empty()) fail(ATRT_BUNDLE_ERROR, source + ": recipe: " + recipe_problem, kRebuildHint);
  if (!(m.vae_scaling_factor > 0 && std::isfinite(m.vae_scaling_factor))) {
    fail(ATRT_BUNDLE_ERROR, source + ": vae_scaling_factor is not a positive number", kRebuildHint);
  }
  return m;
}

fs::path resolve_inside(const fs::path& folder, const std::string& field, const std::string& path) {
  std::error_code error;
  const fs::path resolved = fs::weakly_canonical(folder / path, error);  // symlinks followed where they exist
  const fs::path inside = error ? fs::path() : resolved.lexically_relative(folder);
  if (inside.empty() || *inside.begin() == "..") {
    refuse((folder / "manifest.json").string(), field, path,
           error ? "cannot be resolved (" + error.message() + ")"
                 : "resolves outside the bundle, to " + shown(resolved.string()));
  }
  return resolved;
}

Manifest verify_bundle(const std::string& folder_name) {
  std::error_code error;
  if (folder_name.empty() || !fs::exists(folder_name, error)) {
    fail(ATRT_BUNDLE_ERROR, folder_name + ": bundle folder does not exist",
         "check the path, or build one with audiotoken-rt export --out FOLDER");
  }
  const fs::path folder = fs::canonical(folder_name, error);
  if (error) fail(ATRT_BUNDLE_ERROR, folder_name + ": cannot be resolved (" + error.message() + ")");
  const fs::path manifest_path = folder / "manifest.json";
  if (!fs::is_regular_file(manifest_path, error)) {
    fail(ATRT_BUNDLE_ERROR, folder_name + ": no manifest.json; expected an engine bundle folder",
         "build one with audiotoken-rt export --out FOLDER");
  }
  Manifest m = parse_manifest(read_text(manifest_path), manifest_path.string());
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {  // what Tokenizer::from_folder reads
    resolve_inside(folder, "tokenizer", m.tokenizer + "/" + name);
  }

  // As the Python runtime opens a bundle: a file whose size and modification time are those of its last successful
  // check (the same per-user cache) is not hashed again; anything else is.
  const fs::path cache_path = hash_cache_path(m.key);
  json checked = json::object(), seen = json::object();
  try {
    checked = json::parse(read_text(cache_path));
    if (!checked.is_object()) checked = json::object();
  } catch (const json::exception&) {
    checked = json::object();
  }
  std::vector<std::string> problems;
  for (const FileEntry* entry : m.entries()) {
    const fs::path path = resolve_inside(folder, entry->field + ".path", entry->path);
    if (!fs::is_regular_file(path, error)) {
      problems.push_back(entry->path + " is missing");
      continue;
    }
    const json stamp = stamp_of(path, entry->sha256);
    seen[entry->path] = stamp;
    if (!stamp.is_null() && checked.contains(entry->path) && checked[entry->path] == stamp) continue;
    std::string digest, why;
    if (!file_sha256(path.string(), digest, why)) {
      problems.push_back(entry->path + " cannot be read (" + why + ")");
    } else if (digest != entry->sha256) {
      problems.push_back(entry->path + " has sha256 " + digest.substr(0, 12) + "..., the manifest says " +
                         entry->sha256.substr(0, 12) + "...");
    }
  }
  std::vector<std::string> missing;
  std::string engine_names;
  for (const EngineContract& engine : kEngineContracts) {
    if (!m.engines.count(engine.name)) missing.push_back(engine.name);
    engine_names += (engine_names.empty() ? "" : ", ") + std::string(engine.name);
  }
  if (!missing.empty()) {
    std::string names;
    for (std::size_t i = 0; i < missing.size(); ++i) names += (i ? ", " : "") + missing[i];
    problems.push_back("engines " + names + " are not in the manifest");
  }
  const auto contracts = m.contracts();
  for (const auto& [name, engine] : m.engines) {
    auto expected = contracts.find(name);
    if (expected == contracts.end()) {
      problems.push_back("engine '" + name + "' is not one of " + engine_names);
      continue;
    }
    const std::pair<const char*, std::pair<const std::vector<TensorSpec>*, const std::vector<TensorSpec>*>> kinds[] = {
        {"inputs", {&engine.inputs, &expected->second.first}},
        {"outputs", {&engine.outputs, &expected->second.second}}};
    for (const auto& [kind, pair] : kinds) {
      if (*pair.first == *pair.second) continue;
      auto describe = [](const std::vector<TensorSpec>& specs) {
        std::string text;
        for (std::size_t i = 0; i < specs.size(); ++i) text += (i ? ", " : "") + specs[i].describe();
        return text.empty() ? std::string("none") : text;
      };
      problems.push_back(name + " " + kind + " are " + describe(*pair.first) + "; this runtime expects " +
                         describe(*pair.second));
    }
  }
  if (!problems.empty()) {
    std::string joined;
    for (std::size_t i = 0; i < problems.size(); ++i) joined += (i ? "; " : "") + problems[i];
    fail(ATRT_BUNDLE_ERROR, "bundle " + folder.string() + ": " + joined,
         "rebuild it: " + m.rebuild_command(folder.string()));
  }
  for (const auto& [name, engine] : m.engines) {
    std::vector<const FileEntry*> graphs = {&engine.file};  // its own graph and its variants' (one data file)
    for (const auto& variant : engine.variants) graphs.push_back(&variant.file);
    for (const FileEntry* graph : graphs) {
      const std::string problem = external_data_problem(folder, engine, *graph);
      if (!problem.empty()) fail(ATRT_BUNDLE_ERROR, "bundle " + folder.string() + ": " + problem, kUntrustedHint);
    }
  }
  // best effort (a read-only home costs the next open a re-hash); written aside then renamed, so that a context
  // opening the same bundle in another thread or process reads the old cache or the new one, never half of one
  fs::create_directories(cache_path.parent_path(), error);
  static std::atomic<unsigned> writes{0};
  const fs::path partial = cache_path.string() + "." + std::to_string(::getpid()) + "." + std::to_string(writes++);
  if (std::ofstream(partial) << seen.dump()) fs::rename(partial, cache_path, error);
  fs::remove(partial, error);
  return m;
}

}  // namespace atrt
