// The bundle's engines on ONNX Runtime (its C API, through the header-only C++ wrapper that ships with it): one
// session per engine, created on first use, as runtime/backends.py `OnnxRuntimeBackend` does: full graph
// optimisation, a memory arena for the UNet only, no memory pattern on the host, the device's execution provider
// (CPU; CUDA; TensorRT then CUDA), and the same "provider really in use" refusal: a provider ONNX Runtime lacks or
// cannot start is an error naming what is missing, never a silent fall-back to the CPU.
//
// Place in the data flow: the pipeline calls run(engine, inputs) for audio_encoder, text_encoder, unet and
// vae_decoder; ONNX Runtime errors become RUNTIME errors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "manifest.hpp"

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
  std::vector<float> run(const std::string& engine, const std::vector<Input>& inputs, std::vector<std::int64_t>* shape);
  const std::string& provider() const { return provider_; }  // e.g. CPUExecutionProvider

 private:
  struct Sessions;
  void open_session(const std::string& engine);
  std::string root_;
  const Manifest& manifest_;
  std::string device_, provider_;
  int threads_;
  std::unique_ptr<Sessions> sessions_;
};

// ONNX Runtime's version string (of the library loaded, not of the headers).
std::string onnxruntime_version();

}  // namespace atrt
