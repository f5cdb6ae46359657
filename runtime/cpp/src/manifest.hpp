// The bundle manifest (manifest.json), read and checked as runtime/bundle.py does: schema versions 1-5, every
// file's existence and sha256, every engine present and its recorded I/O equal to the engine contract
// (runtime/contract.py) at the bundle's dims. A mismatch is one BUNDLE error naming each problem and the export
// command that rebuilds the bundle. Then every engine graph (and variant) may read external data only from its
// engine's data file, spelled as the manifest spells it (external_data.hpp reads the locations): else one BUNDLE
// error naming the graph and the location it names.
//
// A bundle may come from anyone, so nothing in it is used as given: every path is relative POSIX, without '..',
// '.', empty parts, backslashes or NUL, and resolves (symlinks followed) inside the bundle folder; the key and every
// sha256 are 64 lowercase hex digits; dims, UNet batches and token slots lie in their ranges; the recipe's sampling
// (sampling.hpp; eta and timestep_spacing from schema 4, before it eta 0 and the scheduler config's spacing) holds
// its bounds; the distillation preset is named from schema 5 (before it a fused LoRA is the lcm preset's, and the
// LoRA's source role lcm_lora is read as lora). Anything else is one BUNDLE error naming the field and its value.
//
// Place in the data flow: atrt_open -> read_manifest + verify_bundle -> the pipeline reads the dims, the recipe,
// the scheduler config, the tokenizer folder and each engine's ONNX file (per device) from here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "contract.hpp"
#include "sampling.hpp"

namespace atrt {

constexpr int kSchemaVersion = 5;

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  bool operator==(const TensorSpec& other) const {
    return name == other.name && dtype == other.dtype && shape == other.shape;
  }
  std::string describe() const;  // "name dtype [a, b]", as the Python runtime prints it
};

constexpr int kMaxPictureSide = 4096;  // pixels: height and width of a bundle's pictures (runtime/bundle.py's)
constexpr int kMaxTokenDim = 8192;     // D: CLIP ViT-L is 768, OpenCLIP ViT-bigG 1280 (runtime/bundle.py's)
constexpr std::size_t kMaxPathBytes = 4095;  // a manifest path (Linux's PATH_MAX less the NUL), runtime/bundle.py's
constexpr std::size_t kMaxPartBytes = 255;   // one part of it (NAME_MAX)

struct FileEntry {
  std::string field;  // where the manifest names it, e.g. "engines.unet.data", for messages
  std::string path;   // relative to the bundle folder, checked
  std::string sha256;
  std::uint64_t size = 0;
};

struct Variant {
  FileEntry file;
  std::vector<std::string> devices;
};

struct EngineEntry {
  std::string name;
  FileEntry file;
  std::optional<FileEntry> data;
  std::string precision;
  std::vector<TensorSpec> inputs, outputs;
  std::vector<FileEntry> plans;
  std::vector<Variant> variants;
  // the ONNX file to run on `device`: a variant made for it, else the engine's own graph
  const FileEntry& graph_for(const std::string& device) const;
};

struct Recipe {
  std::vector<int> unet_batches{2};
  std::string decoder = "sd-vae";
  bool lora = false;
  double lora_scale = 1.0;
  Sampling sampling = kDefaultSampling;
  std::string preset;  // the distillation preset of the fused LoRA (a kPresets name); empty without one
  bool holds(const Preset& wanted) const;  // its LoRA fused, the tiny decoder where it needs one, its UNet batch
  bool holds(int batch) const;
  // The distillation preset `fast` draws with: the fused LoRA's, where the bundle holds all it needs; else nullptr.
  const Preset* fast_preset() const;
};

struct Manifest {
  int schema_version = 0;
  std::string key;
  std::string precision;
  int token_dim = 0;
  std::string placeholder;
  std::int64_t placeholder_id = 0;
  std::string template_prompt;
  int height = 0, width = 0;
  double vae_scaling_factor = 0;
  std::string prediction_type;
  nlohmann::json scheduler_config;
  std::string tokenizer;  // folder of tokenizer.json, relative to the bundle
  std::vector<FileEntry> files;
  std::map<std::string, EngineEntry> engines;
  std::map<std::string, std::string> source_refs;  // role -> ref, for the rebuild command
  Recipe recipe;
  int token_slots = 1;

  std::string bundle_id() const { return key.substr(0, 16); }
  std::vector<const FileEntry*> entries() const;  // every file it names: files, engine graphs, data, plans, variants
  std::string rebuild_command(const std::string& folder) const;
  // the engines' I/O at this bundle's dims (runtime/contract.py engine_contracts)
  std::map<std::string, std::pair<std::vector<TensorSpec>, std::vector<TensorSpec>>> contracts() const;
};

// shlex.quote: a word of safe characters as it is, anything else in single quotes (for commands in messages)
std::string shell_quoted(const std::string& word);

Manifest parse_manifest(const std::string& text, const std::string& source);  // BUNDLE error when malformed
// folder / `path` with symlinks resolved, when it lies inside `folder` (canonical); else a BUNDLE error naming
// `field` and `path`. `path` is a manifest path that parse_manifest accepted.
std::filesystem::path resolve_inside(const std::filesystem::path& folder, const std::string& field,
                                     const std::string& path);
// Read folder/manifest.json and check every file, the engines, their contract and the external data their graphs
// read; BUNDLE error otherwise.
Manifest verify_bundle(const std::string& folder);

}  // namespace atrt
