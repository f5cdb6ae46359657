// The bundle's engines on ONNX Runtime (its C API, through the header-only C++ wrapper that ships with it): one
// session per engine, created on first use, as runtime/backends.py `OnnxRuntimeBackend` does: full graph
// optimisation, a memory arena for the UNet only, no memory pattern on the host, the device's execution provider
// (CPU; CUDA; TensorRT then CUDA), and the same "provider really in use" refusal: a provider ONNX Runtime lacks or
// cannot start is an error naming what is missing, never a silent fall-back to the CPU.
//
// Place in the data flow: the pipeline calls run(engine, inputs) for audio_encoder, text_encoder, unet and
// vae_decoder; ONNX Runtime errors become RUNTIME errors.
//
// Threads: run is const and may be called from several threads at once, on one engine or several. ONNX Runtime's
// Session::Run is thread-safe; each engine's session is created by the first call that needs it while the engine's
// own lock is held (a second caller of that engine waits for it, callers of the other engines do not), and the
// lock is released before the session runs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace Ort {
struct Session;
}  // namespace Ort

namespace atrt {

struct Input {
  const char* name;
  const void* data;  // float or int64 values, as `int64` says
  bool int64;
  std::vector<std::int64_t> shape;
};

class Engines {
 public:
  Engines(std::string root, const Manifest& manifest, std::string device, int threads);
  ~Engines();
  Engines(const Engines&) = delete;
  Engines& operator=(const Engines&) = delete;

  // The engine's one output, its values and shape.
  std::vector<float> run(const std::string& engine, const std::vector<Input>& inputs,
                         std::vector<std::int64_t>* shape) const;
  const std::string& provider() const { return provider_; }  // e.g. CPUExecutionProvider

 private:
  struct Sessions;
  Ort::Session& session(const std::string& engine) const;  // created on first use, under the engine's lock
  std::unique_ptr<Ort::Session> open_session(const std::string& engine) const;
  std::string root_;
  const Manifest& manifest_;
  std::string device_, provider_;
  int threads_;
  std::unique_ptr<Sessions> sessions_;  // a slot per engine of the manifest, made in the constructor
};

// ONNX Runtime's version string (of the library loaded, not of the headers).
std::string onnxruntime_version();

}  // namespace atrt
