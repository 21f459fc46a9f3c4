// Freshrank's live ranker as a Triton backend: TorchScript run inside tritonserver itself.
//
// The embedded Triton (the nvidia-pytriton wheel) ships only the Python backend, whose every
// request crosses into a separate stub process and back: two wake-ups and a forward on cold
// caches, most of Triton's cost against scoring in-process. This backend runs the forward on
// Triton's own model thread, as production's pytorch_libtorch backend does, with libtorch
// from this environment's torch wheel. It is built on first use by
// ``freshrank.embedded.live_backend`` against the Triton C API headers of the pinned
// ``triton-sys`` crate (crates.io), never committed here.
//
// One long-lived model serves every version of a ranker in place (the contract of
// ``freshrank.core.model_repo``): a loader thread watches the ranker's versions directory
// (config parameter ``versions_dir``, relative to this model's directory), loads each new
// ``model.pt``, runs it twice on a tiny input (verified and warmed up) and only then serves
// it; the newest ``FRESHRANK_LIVE_KEEP`` (3) stay loaded. A request names its version in the
// ``model_version`` input (0: the newest loaded); a version not loaded (yet) is answered with
// an error containing "is not loaded in the live model", the ranking service's readiness
// probe. Requests of one dynamic batch with the same version and shapes share one forward.
//
// Environment: FRESHRANK_TRITON_THREADS (torch intra-op threads, 1), FRESHRANK_TRITON_DEVICE
// ("cpu", or "cuda[:n]": libtorch_cuda is loaded then), FRESHRANK_LIVE_KEEP,
// FRESHRANK_LIVE_POLL_S (0.05).

#include <dlfcn.h>
#include <sys/stat.h>

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "triton/core/tritonbackend.h"

namespace freshrank {
namespace {

constexpr const char* kInputs[] = {"user_row", "history_rows", "candidate_rows"};
constexpr int kInputCount = 3;
constexpr const char* kVersionInput = "model_version";
constexpr const char* kOutput = "scores";
constexpr const char* kNotLoaded = "is not loaded in the live model";

using Module = std::shared_ptr<torch::jit::Module>;

#define FRESHRANK_RETURN_IF_ERROR(X)          \
  do {                                        \
    TRITONSERVER_Error* error__ = (X);        \
    if (error__ != nullptr) return error__;   \
  } while (false)

void Log(TRITONSERVER_LogLevel level, const std::string& message) {
  TRITONSERVER_Error* error =
      TRITONSERVER_LogMessage(level, __FILE__, __LINE__, message.c_str());
  if (error != nullptr) TRITONSERVER_ErrorDelete(error);
}

TRITONSERVER_Error* Error(TRITONSERVER_Error_Code code, const std::string& message) {
  return TRITONSERVER_ErrorNew(code, message.c_str());
}

std::string Env(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The value of parameters { key: "<key>" value: { string_value: "..." } } in the model
// config Triton hands us as JSON ({"parameters":{"<key>":{"string_value":"..."}}}). One
// string is all this backend reads, so a JSON library would be a dependency for one lookup.
std::string StringParameter(const std::string& json, const std::string& key) {
  const size_t parameters = json.find("\"parameters\"");
  if (parameters == std::string::npos) return "";
  const size_t at = json.find("\"" + key + "\"", parameters);
  if (at == std::string::npos) return "";
  const size_t field = json.find("\"string_value\"", at);
  if (field == std::string::npos) return "";
  const size_t open = json.find('"', json.find(':', field) + 1);
  const size_t close = json.find('"', open + 1);
  if (open == std::string::npos || close == std::string::npos) return "";
  return json.substr(open + 1, close - open - 1);
}

// What tells a version directory apart from an earlier one of the same number (a failed
// export removed and written again): an inode alone can be reused at once, with the times
// and the size it cannot.
struct Identity {
  uint64_t inode = 0;
  int64_t changed_ns = 0;
  int64_t model_modified_ns = 0;
  int64_t model_size = 0;

  auto Key() const { return std::tie(inode, changed_ns, model_modified_ns, model_size); }
  bool operator==(const Identity& other) const { return Key() == other.Key(); }
  bool operator<(const Identity& other) const { return Key() < other.Key(); }
};

int64_t Nanoseconds(const struct timespec& time) {
  return static_cast<int64_t>(time.tv_sec) * 1000000000 + time.tv_nsec;
}

class LiveModels {
 public:
  LiveModels(std::string versions_dir, size_t keep, std::chrono::milliseconds poll,
             torch::Device device)
      : versions_dir_(std::move(versions_dir)),
        keep_(std::max<size_t>(1, keep)),
        poll_(poll),
        device_(device) {}

  ~LiveModels() { Stop(); }

  // READY means the newest version on disk is served: load it before the thread starts.
  void Start() {
    LoadNew();
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // The module serving ``version`` (<= 0: the newest loaded), or null when not loaded.
  Module Get(int64_t version) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (version <= 0) return models_.empty() ? nullptr : models_.rbegin()->second;
    const auto found = models_.find(version);
    if (found != models_.end()) return found->second;
    woken_ = true;  // asked for a version we lack: look now, not at the next poll
    wake_.notify_one();
    return nullptr;
  }

  const torch::Device& device() const { return device_; }

 private:
  std::map<int64_t, Identity> OnDisk() const {
    std::map<int64_t, Identity> found;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(versions_dir_, error)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
      struct stat folder, model;
      if (stat(entry.path().c_str(), &folder) != 0) continue;  // pruned meanwhile
      if (stat((entry.path() / "model.pt").c_str(), &model) != 0) continue;
      found[std::stoll(name)] = Identity{folder.st_ino, Nanoseconds(folder.st_ctim),
                                         Nanoseconds(model.st_mtim), model.st_size};
    }
    return found;
  }

  Module LoadVerified(const std::string& path) const {
    auto module = std::make_shared<torch::jit::Module>(torch::jit::load(path, device_));
    module->eval();
    c10::InferenceMode inference;
    const auto rows = torch::TensorOptions().dtype(torch::kInt64).device(device_);
    std::vector<torch::jit::IValue> probe{torch::zeros({1, 1}, rows), torch::zeros({1, 1}, rows),
                                          torch::zeros({1, 2}, rows)};
    torch::Tensor scores;
    for (int run = 0; run < 2; ++run) scores = module->forward(probe).toTensor();
    if (scores.dim() != 2 || scores.size(0) != 1 || scores.size(1) != 2) {
      throw std::runtime_error(path + ": scores of shape " + c10::str(scores.sizes()) +
                               " for 2 candidates");
    }
    return module;
  }

  // Load the versions on disk newer than the newest loaded (the newest ``keep_`` only), and
  // reload a loaded version whose directory was replaced.
  void LoadNew() {
    int64_t newest = 0;
    std::map<int64_t, Identity> loaded;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!models_.empty()) newest = models_.rbegin()->first;
      loaded = identity_;
    }
    const auto disk = OnDisk();
    std::vector<int64_t> wanted;
    for (const auto& [version, identity] : disk) {
      const auto known = loaded.find(version);
      if (version > newest || (known != loaded.end() && !(known->second == identity))) {
        wanted.push_back(version);
      }
    }
    if (wanted.size() > keep_) wanted.erase(wanted.begin(), wanted.end() - keep_);
    for (const int64_t version : wanted) {
      const Identity& identity = disk.at(version);
      if (failed_.count({version, identity}) != 0) continue;
      const std::string path =
          (std::filesystem::path(versions_dir_) / std::to_string(version) / "model.pt").string();
      const auto started = std::chrono::steady_clock::now();
      Module module;
      try {
        module = LoadVerified(path);
      } catch (const std::exception& error) {  // pruned meanwhile, or broken: never served
        failed_.insert({version, identity});
        Log(TRITONSERVER_LOG_WARN, "live model: version " + std::to_string(version) +
                                       " not loaded: " + error.what());
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        models_[version] = module;
        identity_[version] = identity;
        while (models_.size() > keep_) {
          identity_.erase(models_.begin()->first);
          models_.erase(models_.begin());
        }
      }
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
      Log(TRITONSERVER_LOG_INFO, "live model: serving version " + std::to_string(version) +
                                     " (loaded in " + std::to_string(took.count()) + "s)");
    }
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, poll_, [this] { return stopping_ || woken_; });
      if (stopping_) break;
      woken_ = false;
      lock.unlock();
      try {
        LoadNew();
      } catch (const std::exception& error) {  // keep watching
        Log(TRITONSERVER_LOG_ERROR, std::string("live model: scan failed: ") + error.what());
      }
      lock.lock();
    }
  }

  const std::string versions_dir_;
  const size_t keep_;
  const std::chrono::milliseconds poll_;
  const torch::Device device_;
  std::mutex mutex_;  // guards models_, identity_, woken_, stopping_
  std::condition_variable wake_;
  bool woken_ = false;
  bool stopping_ = false;
  std::map<int64_t, Module> models_;
  std::map<int64_t, Identity> identity_;
  std::set<std::pair<int64_t, Identity>> failed_;  // the loader thread's own
  std::thread thread_;
};

// One request's tensors: views of Triton's input buffers (copied only when an input came in
// several buffers), batch-first.
struct RequestTensors {
  int64_t version = 0;
  torch::Tensor inputs[kInputCount];
  std::vector<std::vector<int64_t>> copies;
  TRITONSERVER_Error* error = nullptr;  // set: answered with it, never scored
};

// Buffer ``index`` of ``input``, which must be in CPU memory.
TRITONSERVER_Error* CpuBuffer(TRITONBACKEND_Input* input, const char* name, uint32_t index,
                              const void** buffer, uint64_t* size) {
  TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
  int64_t memory_id = 0;
  FRESHRANK_RETURN_IF_ERROR(
      TRITONBACKEND_InputBuffer(input, index, buffer, size, &memory, &memory_id));
  if (memory == TRITONSERVER_MEMORY_GPU) {
    return Error(TRITONSERVER_ERROR_UNSUPPORTED, std::string(name) + ": GPU input buffer");
  }
  return nullptr;
}

TRITONSERVER_Error* ReadInput(TRITONBACKEND_Request* request, const char* name,
                              torch::Tensor* tensor, std::vector<std::vector<int64_t>>* copies) {
  TRITONBACKEND_Input* input;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_RequestInput(request, name, &input));
  TRITONSERVER_DataType datatype;
  const int64_t* shape;
  uint32_t dims;
  uint64_t byte_size;
  uint32_t buffers;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_InputProperties(input, nullptr, &datatype, &shape,
                                                          &dims, &byte_size, &buffers));
  const std::vector<int64_t> sizes(shape, shape + dims);
  int64_t count = 1;
  for (const int64_t size : sizes) count *= size;
  if (datatype != TRITONSERVER_TYPE_INT64 || dims != 2 ||
      byte_size != static_cast<uint64_t>(count) * sizeof(int64_t)) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG,
                 std::string(name) + ": expected a batch-first 2-d INT64 tensor");
  }
  const auto as_rows = torch::TensorOptions().dtype(torch::kInt64);
  const void* buffer;
  uint64_t size;
  if (buffers == 1) {
    FRESHRANK_RETURN_IF_ERROR(CpuBuffer(input, name, 0, &buffer, &size));
    // Read only: the model never writes its inputs.
    *tensor = torch::from_blob(const_cast<void*>(buffer), sizes, as_rows);
    return nullptr;
  }
  copies->emplace_back(count);
  char* target = reinterpret_cast<char*>(copies->back().data());
  for (uint32_t index = 0; index < buffers; ++index) {
    FRESHRANK_RETURN_IF_ERROR(CpuBuffer(input, name, index, &buffer, &size));
    std::memcpy(target, buffer, size);
    target += size;
  }
  *tensor = torch::from_blob(copies->back().data(), sizes, as_rows);
  return nullptr;
}

RequestTensors ReadRequest(TRITONBACKEND_Request* request) {
  RequestTensors tensors;
  for (int n = 0; n < kInputCount && tensors.error == nullptr; ++n) {
    tensors.error = ReadInput(request, kInputs[n], &tensors.inputs[n], &tensors.copies);
  }
  if (tensors.error != nullptr) return tensors;
  const int64_t batch = tensors.inputs[0].size(0);
  for (const auto& input : tensors.inputs) {
    if (input.size(0) != batch) {
      tensors.error = Error(TRITONSERVER_ERROR_INVALID_ARG, "inputs of different batch sizes");
      return tensors;
    }
  }
  TRITONBACKEND_Input* version;  // optional: absent means "the newest loaded"
  TRITONSERVER_Error* absent = TRITONBACKEND_RequestInput(request, kVersionInput, &version);
  if (absent != nullptr) {
    TRITONSERVER_ErrorDelete(absent);
    return tensors;
  }
  torch::Tensor given;
  tensors.error = ReadInput(request, kVersionInput, &given, &tensors.copies);
  if (tensors.error == nullptr && given.numel() > 0) {
    tensors.version = given.view(-1)[0].item<int64_t>();
  }
  return tensors;
}

void Send(TRITONBACKEND_Request* request, TRITONSERVER_Error* error, const torch::Tensor* scores) {
  TRITONBACKEND_Response* response;
  TRITONSERVER_Error* failed = TRITONBACKEND_ResponseNew(&response, request);
  if (failed != nullptr) {
    Log(TRITONSERVER_LOG_ERROR, std::string("live model: no response: ") +
                                    TRITONSERVER_ErrorMessage(failed));
    TRITONSERVER_ErrorDelete(failed);
    if (error != nullptr) TRITONSERVER_ErrorDelete(error);
    return;
  }
  if (error == nullptr) {
    const int64_t shape[2] = {scores->size(0), scores->size(1)};
    const uint64_t bytes = static_cast<uint64_t>(scores->numel()) * sizeof(float);
    TRITONBACKEND_Output* output;
    void* buffer;
    TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
    int64_t memory_id = 0;
    error = TRITONBACKEND_ResponseOutput(response, &output, kOutput, TRITONSERVER_TYPE_FP32,
                                         shape, 2);
    if (error == nullptr) {
      error = TRITONBACKEND_OutputBuffer(output, &buffer, bytes, &memory, &memory_id);
    }
    if (error == nullptr && memory == TRITONSERVER_MEMORY_GPU) {
      error = Error(TRITONSERVER_ERROR_UNSUPPORTED, "GPU output buffer");
    }
    if (error == nullptr) std::memcpy(buffer, scores->data_ptr<float>(), bytes);
  }
  failed = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, error);
  if (error != nullptr) TRITONSERVER_ErrorDelete(error);  // Send copied it
  if (failed != nullptr) {
    Log(TRITONSERVER_LOG_ERROR, std::string("live model: response not sent: ") +
                                    TRITONSERVER_ErrorMessage(failed));
    TRITONSERVER_ErrorDelete(failed);
  }
}

// Scores every request of ``indices`` (same version and shapes) with one forward; each
// request gets its rows, or the error.
void ScoreGroup(LiveModels& live, int64_t version, const std::vector<size_t>& indices,
                std::vector<RequestTensors>& requests, std::vector<torch::Tensor>& scores,
                std::vector<TRITONSERVER_Error*>& errors) {
  const Module module = live.Get(version);
  if (!module) {
    const std::string message = "model version " + std::to_string(version) + " " + kNotLoaded;
    for (const size_t index : indices) {
      errors[index] = Error(TRITONSERVER_ERROR_UNAVAILABLE, message);
    }
    return;
  }
  try {
    c10::InferenceMode inference;
    std::vector<torch::jit::IValue> arguments;
    for (int n = 0; n < kInputCount; ++n) {
      torch::Tensor input;
      if (indices.size() == 1) {
        input = requests[indices[0]].inputs[n];  // alone (the usual case at low rates): no copy
      } else {
        std::vector<torch::Tensor> parts;
        for (const size_t index : indices) parts.push_back(requests[index].inputs[n]);
        input = torch::cat(parts);
      }
      arguments.emplace_back(input.to(live.device()));
    }
    const torch::Tensor all =
        module->forward(arguments).toTensor().to(torch::kCPU, torch::kFloat32).contiguous();
    int64_t start = 0;
    for (const size_t index : indices) {
      const int64_t rows = requests[index].inputs[0].size(0);
      scores[index] = all.slice(0, start, start + rows).contiguous();
      start += rows;
    }
  } catch (const std::exception& error) {  // a bad request must not take the model down
    for (const size_t index : indices) {
      errors[index] = Error(TRITONSERVER_ERROR_INVALID_ARG, error.what());
    }
  }
}

torch::Device DeviceFromEnv() {
  const std::string name = Env("FRESHRANK_TRITON_DEVICE", "cpu");
  if (name.rfind("cuda", 0) == 0) {
    // CUDA kernels register from libtorch_cuda's static initialisers; we link only the CPU
    // library, so a CPU machine never needs the CUDA runtime.
    if (dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      throw std::runtime_error(std::string("FRESHRANK_TRITON_DEVICE=") + name +
                               ": libtorch_cuda.so not loadable: " + dlerror());
    }
  }
  return torch::Device(name);
}

}  // namespace
}  // namespace freshrank

extern "C" {

TRITONSERVER_Error* TRITONBACKEND_Initialize(TRITONBACKEND_Backend* /* backend */) {
  uint32_t major, minor;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ApiVersion(&major, &minor));
  if (major != TRITONBACKEND_API_VERSION_MAJOR || minor < TRITONBACKEND_API_VERSION_MINOR) {
    return freshrank::Error(TRITONSERVER_ERROR_UNSUPPORTED,
                            "freshrank backend: Triton's backend API " + std::to_string(major) +
                                "." + std::to_string(minor) + " is not compatible");
  }
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  TRITONSERVER_Message* message;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ModelConfig(model, 1, &message));
  const char* json;
  size_t size;
  TRITONSERVER_Error* error = TRITONSERVER_MessageSerializeToJson(message, &json, &size);
  const std::string config = error == nullptr ? std::string(json, size) : "";
  TRITONSERVER_MessageDelete(message);
  FRESHRANK_RETURN_IF_ERROR(error);
  const std::string versions_dir = freshrank::StringParameter(config, "versions_dir");
  if (versions_dir.empty()) {
    return freshrank::Error(TRITONSERVER_ERROR_INVALID_ARG,
                            "freshrank backend: parameter versions_dir is required");
  }
  TRITONBACKEND_ArtifactType artifacts;
  const char* location;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ModelRepository(model, &artifacts, &location));
  try {
    at::set_num_threads(std::stoi(freshrank::Env("FRESHRANK_TRITON_THREADS", "1")));
    const auto poll = std::chrono::milliseconds(static_cast<int64_t>(
        1000 * std::stod(freshrank::Env("FRESHRANK_LIVE_POLL_S", "0.05"))));
    auto live = std::make_unique<freshrank::LiveModels>(
        (std::filesystem::path(location) / versions_dir).lexically_normal().string(),
        std::stoul(freshrank::Env("FRESHRANK_LIVE_KEEP", "3")), poll,
        freshrank::DeviceFromEnv());
    live->Start();
    FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ModelSetState(model, live.release()));
  } catch (const std::exception& failure) {
    return freshrank::Error(TRITONSERVER_ERROR_INTERNAL,
                            std::string("freshrank backend: ") + failure.what());
  }
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &state));
  delete static_cast<freshrank::LiveModels*>(state);  // stops and joins the loader
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                       TRITONBACKEND_Request** requests,
                                                       const uint32_t request_count) {
  const uint64_t exec_start = freshrank::NowNs();
  TRITONBACKEND_Model* model;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceModel(instance, &model));
  void* state;
  FRESHRANK_RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &state));
  auto& live = *static_cast<freshrank::LiveModels*>(state);

  std::vector<freshrank::RequestTensors> tensors;
  tensors.reserve(request_count);
  std::vector<TRITONSERVER_Error*> errors(request_count, nullptr);
  std::vector<torch::Tensor> scores(request_count);
  // Requests that can share one forward: same version and input shapes (batch aside).
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<size_t>> groups;
  for (uint32_t index = 0; index < request_count; ++index) {
    tensors.push_back(freshrank::ReadRequest(requests[index]));
    auto& request = tensors.back();
    if (request.error != nullptr) {
      std::swap(errors[index], request.error);
      continue;
    }
    groups[{request.version, request.inputs[1].size(1), request.inputs[2].size(1)}].push_back(
        index);
  }
  const uint64_t compute_start = freshrank::NowNs();
  for (const auto& [key, indices] : groups) {
    freshrank::ScoreGroup(live, std::get<0>(key), indices, tensors, scores, errors);
  }
  const uint64_t compute_end = freshrank::NowNs();
  uint64_t batch = 0;
  for (uint32_t index = 0; index < request_count; ++index) {
    const bool success = errors[index] == nullptr;
    if (success) batch += scores[index].size(0);
    freshrank::Send(requests[index], errors[index], &scores[index]);
  }
  const uint64_t exec_end = freshrank::NowNs();
  for (uint32_t index = 0; index < request_count; ++index) {
    TRITONSERVER_Error* ignored = TRITONBACKEND_ModelInstanceReportStatistics(
        instance, requests[index], scores[index].defined(), exec_start, compute_start,
        compute_end, exec_end);
    if (ignored != nullptr) TRITONSERVER_ErrorDelete(ignored);
    ignored = TRITONBACKEND_RequestRelease(requests[index], TRITONSERVER_REQUEST_RELEASE_ALL);
    if (ignored != nullptr) TRITONSERVER_ErrorDelete(ignored);
  }
  if (batch > 0) {
    TRITONSERVER_Error* ignored = TRITONBACKEND_ModelInstanceReportBatchStatistics(
        instance, batch, exec_start, compute_start, compute_end, exec_end);
    if (ignored != nullptr) TRITONSERVER_ErrorDelete(ignored);
  }
  return nullptr;  // every request answered and released
}

}  // extern "C"
