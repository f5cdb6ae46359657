// libFuzzer harness: any bytes as a bundle's manifest.json -> verify_bundle (manifest.cpp), what atrt_open runs
// first: the JSON read, the schema, the key, every path checked and resolved against a bundle folder that holds a
// file, the tokenizer folder, a symlink out of the bundle and a symlink loop, the files hashed, the engine contract
// at the manifest's dims, the rebuild command; then every scheduler built from the manifest's scheduler_config
// (schedulers.cpp), and the recipe's (its spacing laid over the config's: sampling.cpp), as atrt_draw does. A
// BUNDLE or CONFIG error is the answer to bad bytes; any other exception, a crash, a leak or undefined behaviour is
// a finding (tests/test_cpp.py, `just fuzz`).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "errors.hpp"
#include "manifest.hpp"
#include "sampling.hpp"
#include "schedulers.hpp"

namespace fs = std::filesystem;

namespace {

fs::path bundle;  // made once per process, removed at a normal exit

void write(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string name = (fs::temp_directory_path() / "atrt-fuzz-manifest-XXXXXX").string();  // $TMPDIR: the test's folder
  if (mkdtemp(name.data()) == nullptr) std::abort();
  bundle = fs::canonical(name);
  write(bundle / "model.onnx", "onnx\n");  // the seeds name it with its sha256, 7e89398a...
  fs::create_directory(bundle / "tokenizer");
  write(bundle / "tokenizer" / "tokenizer.json", "{}");
  write(bundle / "tokenizer" / "tokenizer_config.json", "{}");
  fs::create_directory_symlink("/", bundle / "out");
  fs::create_symlink("loop", bundle / "loop");
  fs::create_directory(bundle / "cache");
  setenv("XDG_CACHE_HOME", (bundle / "cache").c_str(), 1);  // verify_bundle's hash cache
  std::atexit([] {
    std::error_code error;
    fs::remove_all(bundle, error);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  write(bundle / "manifest.json", text);
  try {
    atrt::verify_bundle(bundle.string());
  } catch (const atrt::Error&) {  // the one way bad input may end
  }
  try {
    const atrt::Manifest manifest = atrt::parse_manifest(text, "manifest.json");
    for (const char* name : atrt::kSchedulerNames) {
      for (const int steps : {1, 25, 1000}) {
        try {
          atrt::make_scheduler(name, manifest.scheduler_config, steps);
        } catch (const atrt::Error&) {
        }
      }
    }
    try {
      atrt::make_scheduler(manifest.recipe.sampling, manifest.scheduler_config);
    } catch (const atrt::Error&) {
    }
  } catch (const atrt::Error&) {
  }
  return 0;
}
