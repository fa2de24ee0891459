#include "runtime/store.hpp"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "common/log.hpp"

namespace mota::runtime {

namespace {
constexpr std::size_t kLatencyWindow = 1024;
using Clock = std::chrono::steady_clock;
}  // namespace

Result<std::vector<Tensor>> ServedModel::infer(const std::vector<Tensor>& inputs) {
  auto start = Clock::now();
  auto out = model_->run(inputs);
  if (!out) {
    if (out.error().code() != Errc::invalid_argument) errors_.fetch_add(1);
    return out;
  }
  float ms = std::chrono::duration<float, std::milli>(Clock::now() - start).count();
  inferences_.fetch_add(1);
  std::lock_guard lock(lat_mu_);
  if (latencies_ms_.size() < kLatencyWindow) {
    latencies_ms_.push_back(ms);
  } else {
    latencies_ms_[lat_next_] = ms;
  }
  lat_next_ = (lat_next_ + 1) % kLatencyWindow;
  return out;
}

ModelStats ServedModel::stats() const {
  ModelStats s;
  s.inferences = inferences_.load();
  s.errors = errors_.load();
  std::vector<float> v;
  {
    std::lock_guard lock(lat_mu_);
    v = latencies_ms_;
  }
  if (!v.empty()) {
    auto pct = [&](double p) {
      std::size_t k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
      return static_cast<double>(v[k]);
    };
    s.p50_ms = pct(0.50);
    s.p99_ms = pct(0.99);
  }
  return s;
}

ModelStore::ModelStore(StoreOptions options) : options_(options) {}
ModelStore::~ModelStore() = default;

ModelStore::Entry& ModelStore::entry(const std::string& name) {
  {
    std::shared_lock lock(map_mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) return *it->second;
  }
  std::unique_lock lock(map_mu_);
  auto& e = entries_[name];
  if (!e) e = std::make_unique<Entry>();
  return *e;
}

Result<ModelInfo> ModelStore::load(const std::string& name, const std::filesystem::path& slot) {
  std::lock_guard serial(load_mu_);
  std::string ctx = "load " + name + " from " + slot.string();
  std::error_code ec;
  auto canonical = std::filesystem::canonical(slot, ec);
  if (ec) return fail(Errc::not_found, ctx + ": " + ec.message());

  // The work happens on its own thread so it can be reniced without touching serving threads.
  Result<std::shared_ptr<ServedModel>> result = fail(Errc::internal, "load thread did not run");
  std::thread loader([&] {
    if (options_.load_nice != 0) {
      // On Linux, PRIO_PROCESS with a thread id renices just that thread.
      (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)),
                          options_.load_nice);
    }
    result = [&]() -> Result<std::shared_ptr<ServedModel>> {
      auto start = Clock::now();
      auto manifest = MOTA_TRY(read_slot_manifest(canonical));
      if (manifest.name != name) {
        return fail(Errc::invalid_argument,
                    "the slot holds model \"" + manifest.name + "\", not \"" + name + "\"");
      }
      auto backend = MOTA_TRY(backend_for(manifest.framework));
      auto model = MOTA_TRY(backend->load(manifest, canonical, options_.load));
      ModelInfo info;
      info.name = manifest.name;
      info.version = manifest.version;
      info.framework = manifest.framework;
      info.backend = std::string(backend->name());
      info.slot = canonical;
      info.generation = generation_.fetch_add(1) + 1;
      info.loaded_at = std::chrono::system_clock::now();
      info.load_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      info.inputs = model->inputs();
      info.outputs = model->outputs();
      return std::make_shared<ServedModel>(std::move(info), std::move(model));
    }();
  });
  loader.join();
  if (!result) {
    log::warn("model load failed",
              {{"MODEL", name}, {"SLOT", slot.string()}, {"REASON", result.error().message()}});
    return fail(std::move(result).error().context(ctx));
  }
  auto served = std::move(*result);
  ModelInfo info = served->info();
  // The swap: new requests see the new model from here on; the old one lives on in the requests
  // holding it and is freed by the last of them.
  entry(name).current.store(std::move(served));
  log::info("model loaded", {{"MODEL", name},
                             {"VERSION", info.version},
                             {"SLOT", info.slot.string()},
                             {"GENERATION", std::to_string(info.generation)},
                             {"LOAD_MS", std::to_string(info.load_ms)}});
  return info;
}

std::shared_ptr<ServedModel> ModelStore::get(const std::string& name) const {
  std::shared_lock lock(map_mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return nullptr;
  return it->second->current.load();
}

std::vector<std::shared_ptr<ServedModel>> ModelStore::all() const {
  std::vector<std::shared_ptr<ServedModel>> out;
  std::shared_lock lock(map_mu_);
  for (const auto& [name, e] : entries_) {
    if (auto m = e->current.load()) out.push_back(std::move(m));
  }
  return out;
}

}  // namespace mota::runtime
