// ONNX Runtime sessions over a bundle's ONNX files (see engines.hpp). Every Ort::Exception is caught here.
#include "engines.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <type_traits>
#include <utility>

#include <onnxruntime_cxx_api.h>

#include "contract.hpp"
#include "errors.hpp"

namespace atrt {
namespace {

const std::map<std::string, std::string> kProviders = {{"cpu", "CPUExecutionProvider"},
                                                       {"cuda", "CUDAExecutionProvider"},
                                                       {"tensorrt", "TensorrtExecutionProvider"}};
const char* const kGpuHint =
    "install ONNX Runtime's GPU build (onnxruntime-gpu's libonnxruntime) on an NVIDIA machine, or use the cpu device";
constexpr std::uint64_t kTensorRtLimit = 2ULL << 30;  // the TensorRT provider takes one protobuf: 2 GB at most

// The shared libraries each GPU provider loads (CUDA 12 builds, Linux names), probed to say what is missing.
std::vector<std::string> missing_libraries(const std::string& device) {
  static const std::map<std::string, std::vector<std::string>> kLibraries = {
      {"cuda",
       {"libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libnvrtc.so.12", "libcufft.so.11",
        "libcurand.so.10", "libcudnn.so.9"}},
      {"tensorrt", {"libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"}}};
  std::vector<std::string> missing;
  auto found = kLibraries.find(device);
  if (found == kLibraries.end()) return missing;
  for (const std::string& library : found->second) {
    void* handle = dlopen(library.c_str(), RTLD_LAZY | RTLD_LOCAL);
    if (handle == nullptr) {
      missing.push_back(library);
    } else {
      dlclose(handle);
    }
  }
  return missing;
}

// One environment for the process, never destroyed (sessions of unclosed contexts may outlive static destructors).
Ort::Env& environment() {
  static Ort::Env* env = new Ort::Env(ORT_LOGGING_LEVEL_ERROR, "audiotoken-rt");
  return *env;
}

std::string user_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string base = xdg && *xdg ? xdg : std::string(home ? home : ".") + "/.cache";
  return base + "/audiotoken-rt";
}

// Appends the CUDA or TensorRT provider with its options (ONNX Runtime's C API: create, update, append, release);
// throws Ort::Exception when the provider cannot start.
template <typename ProviderOptions>
void append_provider(Ort::SessionOptions& session, const std::vector<std::pair<std::string, std::string>>& settings) {
  const OrtApi& api = Ort::GetApi();
  ProviderOptions* options = nullptr;
  std::vector<const char*> keys, values;
  for (const auto& [key, value] : settings) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  if constexpr (std::is_same_v<ProviderOptions, OrtCUDAProviderOptionsV2>) {
    Ort::ThrowOnError(api.CreateCUDAProviderOptions(&options));
    std::unique_ptr<ProviderOptions, void (*)(ProviderOptions*)> owned(options, api.ReleaseCUDAProviderOptions);
    Ort::ThrowOnError(api.UpdateCUDAProviderOptions(options, keys.data(), values.data(), keys.size()));
    session.AppendExecutionProvider_CUDA_V2(*options);
  } else {
    Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&options));
    std::unique_ptr<ProviderOptions, void (*)(ProviderOptions*)> owned(options, api.ReleaseTensorRTProviderOptions);
    Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(options, keys.data(), values.data(), keys.size()));
    session.AppendExecutionProvider_TensorRT_V2(*options);
  }
}

}  // namespace

struct Engines::Sessions {
  struct Slot {
    std::mutex creating;                     // held while the session is looked up or created, never while it runs
    std::unique_ptr<Ort::Session> session;  // null until the engine's first run
  };
  std::map<std::string, Slot> by_engine;  // filled by the constructor, never changed after: read without a lock
};

std::string onnxruntime_version() { return OrtGetApiBase()->GetVersionString(); }

Engines::Engines(std::string root, const Manifest& manifest, std::string device, int threads)
    : root_(std::move(root)), manifest_(manifest), device_(std::move(device)), threads_(threads),
      sessions_(std::make_unique<Sessions>()) {
  auto provider = kProviders.find(device_);
  if (provider == kProviders.end()) {
    fail(ATRT_CONFIG_ERROR, "unknown device '" + device_ + "'; choose one of cpu, cuda, tensorrt");
  }
  provider_ = provider->second;
  if (device_ != "cpu") {
    for (const auto& [name, engine] : manifest_.engines) {
      if (engine.precision == "int8") {
        fail(ATRT_CONFIG_ERROR,
             root_ + ": engine " + name + " is int8, for ONNX Runtime's CPU provider; it cannot run on device " +
                 device_,
             "use the cpu device with it; export --precision fp16 for the GPU");
      }
    }
  }
  std::vector<std::string> available;
  try {
    environment();
    available = Ort::GetAvailableProviders();
  } catch (const Ort::Exception& e) {
    fail(ATRT_RUNTIME_ERROR, std::string("ONNX Runtime cannot start (") + e.what() + ")");
  }
  if (std::find(available.begin(), available.end(), provider_) == available.end()) {
    std::string names;
    for (const auto& name : available) names += (names.empty() ? "" : ", ") + name;
    fail(ATRT_RUNTIME_ERROR, "ONNX Runtime here has no " + provider_ + " (available: " + names + ")", kGpuHint);
  }
  for (const auto& entry : manifest_.engines) sessions_->by_engine[entry.first];
}

Engines::~Engines() = default;

Ort::Session& Engines::session(const std::string& engine) const {
  const auto slot = sessions_->by_engine.find(engine);
  if (slot == sessions_->by_engine.end()) {
    fail(ATRT_BUNDLE_ERROR, root_ + ": no engine '" + engine + "' in the manifest",
         "rebuild it: " + manifest_.rebuild_command(root_));
  }
  const std::lock_guard<std::mutex> lock(slot->second.creating);
  if (!slot->second.session) slot->second.session = open_session(engine);  // a failure leaves it null: tried again
  return *slot->second.session;
}

std::unique_ptr<Ort::Session> Engines::open_session(const std::string& engine) const {
  const auto entry = manifest_.engines.find(engine);  // there: session() found its slot
  const FileEntry& graph = entry->second.graph_for(device_);
  if (device_ == "tensorrt") {
    const std::uint64_t size = graph.size + (entry->second.data ? entry->second.data->size : 0);
    if (size > kTensorRtLimit) {
      fail(ATRT_CONFIG_ERROR,
           root_ + ": engine " + engine + " is " + std::to_string(size >> 20) +
               " MB; ONNX Runtime's TensorRT provider takes models up to 2 GB",
           "export --precision fp16 for the GPU (half the size), or use the cuda device");
    }
  }
  // the file the bundle check hashed, resolved (symlinks followed) and checked inside the bundle again right now,
  // as runtime/bundle.py Bundle.file_path does: a link swapped since atrt_open cannot lead outside
  std::error_code error;
  const std::filesystem::path folder = std::filesystem::canonical(root_, error);
  if (error) fail(ATRT_BUNDLE_ERROR, root_ + ": cannot be resolved (" + error.message() + ")");
  const std::string path = resolve_inside(folder, graph.field + ".path", graph.path).string();
  Ort::SessionOptions options;
  try {
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (engine != unet::kName) options.DisableCpuMemArena();  // a once-per-picture engine keeps no arena
    if (device_ != "cuda" && device_ != "tensorrt") options.DisableMemPattern();  // on the host: 300 MB less peak
    if (threads_ > 0) options.SetIntraOpNumThreads(threads_);
  } catch (const Ort::Exception& e) {
    fail(ATRT_RUNTIME_ERROR, std::string("ONNX Runtime session options: ") + e.what());
  }
  // The providers in order of preference; appending one ONNX Runtime cannot start is refused right here.
  try {
    if (device_ == "tensorrt") {
      const std::string cache =
          user_cache_dir() + "/onnxruntime-tensorrt/" + onnxruntime_version() + "/" + manifest_.key;
      std::error_code ignored;
      std::filesystem::create_directories(cache, ignored);
      // no fp16 flag: the ONNX file carries its precisions (as the Python backend)
      const std::vector<std::pair<std::string, std::string>> trt = {{"trt_fp16_enable", "0"},
                                                                    {"trt_engine_cache_enable", "1"},
                                                                    {"trt_engine_cache_path", cache},
                                                                    {"trt_timing_cache_enable", "1"},
                                                                    {"trt_timing_cache_path", cache}};
      append_provider<OrtTensorRTProviderOptionsV2>(options, trt);
    }
    if (device_ == "cuda" || device_ == "tensorrt") {
      append_provider<OrtCUDAProviderOptionsV2>(options, {{"cudnn_conv_algo_search", "HEURISTIC"}});
    }
  } catch (const Ort::Exception& e) {
    const std::vector<std::string> missing = missing_libraries(device_);
    std::string because;
    for (const auto& library : missing) because += (because.empty() ? ": " : ", ") + library;
    fail(ATRT_RUNTIME_ERROR,
         "ONNX Runtime could not start its " + provider_ + " for engine " + engine +
             (because.empty() ? " (" + std::string(e.what()) + ")" : because + " not found") +
             "; it would have run on CPUExecutionProvider",
         missing.empty() ? "check the driver with nvidia-smi" : kGpuHint);
  }
  try {
    return std::make_unique<Ort::Session>(environment(), path.c_str(), options);
  } catch (const Ort::Exception& e) {
    fail(ATRT_BUNDLE_ERROR, path + ": ONNX Runtime cannot load it (" + e.what() + ")", "re-export the bundle");
  }
}

std::vector<float> Engines::run(const std::string& engine, const std::vector<Input>& inputs,
                                std::vector<std::int64_t>* shape) const {
  Ort::Session& session = this->session(engine);
  try {
    const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    std::vector<const char*> names;
    for (const Input& input : inputs) {
      std::size_t count = 1;
      for (std::int64_t d : input.shape) count *= static_cast<std::size_t>(d);
      // ONNX Runtime reads inputs only; its API takes them non-const
      if (input.int64) {
        values.push_back(Ort::Value::CreateTensor<std::int64_t>(
            memory, const_cast<std::int64_t*>(static_cast<const std::int64_t*>(input.data)), count,
            input.shape.data(), input.shape.size()));
      } else {
        values.push_back(Ort::Value::CreateTensor<float>(memory,
                                                         const_cast<float*>(static_cast<const float*>(input.data)),
                                                         count, input.shape.data(), input.shape.size()));
      }
      names.push_back(input.name);
    }
    Ort::AllocatorWithDefaultOptions allocator;
    const Ort::AllocatedStringPtr output_name = session.GetOutputNameAllocated(0, allocator);
    const char* output_names[] = {output_name.get()};
    std::vector<Ort::Value> outputs =
        session.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(), output_names, 1);
    const Ort::TensorTypeAndShapeInfo info = outputs[0].GetTensorTypeAndShapeInfo();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      fail(ATRT_BUNDLE_ERROR, root_ + ": engine " + engine + " returned a tensor that is not float32",
           "re-export the bundle");
    }
    if (shape) *shape = info.GetShape();
    const float* data = outputs[0].GetTensorData<float>();
    return std::vector<float>(data, data + info.GetElementCount());
  } catch (const Ort::Exception& e) {
    fail(ATRT_RUNTIME_ERROR,
         root_ + ": ONNX Runtime failed running engine " + engine + " on " + device_ + " (" + e.what() + ")",
         "check free memory; `audiotoken-rt info` checks the bundle");
  }
}

}  // namespace atrt
