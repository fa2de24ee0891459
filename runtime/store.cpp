#include "runtime/store.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <optional>
#include <thread>

#include "common/log.hpp"
#include "common/process.hpp"

namespace mota::runtime {

namespace {
constexpr std::size_t kLatencyWindow = 1024;
using Clock = std::chrono::steady_clock;

// Whether a thread of this process may leave SCHED_IDLE for SCHED_OTHER at the calling thread's
// nice value (sched(7): CAP_SYS_NICE or an RLIMIT_NICE that allows it), tried on a throwaway
// thread that inherits the caller's nice value.
bool can_leave_idle() {
  bool ok = false;
  std::thread probe([&ok] {
    auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
    sched_param param{};
    if (::sched_setscheduler(tid, SCHED_IDLE, &param) != 0) return;
    ok = ::sched_setscheduler(tid, SCHED_OTHER, &param) == 0;
  });
  probe.join();
  return ok;
}
}  // namespace

Status ServedModel::infer(std::span<const TensorView> inputs, OutputBuffer& out) {
  auto start = Clock::now();
  Status st;
  {
    ServingScope serving;  // loads yield to this inference (backend.hpp)
    st = model_->run_into(inputs, out);
  }
  if (!st) {
    if (st.error().code() != Errc::invalid_argument) errors_.fetch_add(1);
    return st;
  }
  float ms = std::chrono::duration<float, std::milli>(Clock::now() - start).count();
  inferences_.fetch_add(1);
  histogram_[latency_bucket(ms)].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(lat_mu_);
  if (latencies_ms_.size() < kLatencyWindow) {
    latencies_ms_.push_back(ms);
  } else {
    latencies_ms_[lat_next_] = ms;
  }
  lat_next_ = (lat_next_ + 1) % kLatencyWindow;
  return {};
}

ModelStats ServedModel::stats() const {
  ModelStats s;
  s.inferences = inferences_.load();
  s.errors = errors_.load();
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    s.latency.counts[i] = histogram_[i].load(std::memory_order_relaxed);
  }
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

void ModelStore::reap() {
  // use_count() == 1 means only retired_ holds it, and nobody can take a new reference: it is no
  // longer in any entry.
  std::erase_if(retired_, [](const std::shared_ptr<ServedModel>& m) { return m.use_count() == 1; });
}

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

namespace {

// What identifies a slot's content without reading it: every entry's name, type, size, mtime
// and inode (a slot is a handful of files; stat opens nothing, so a FIFO cannot block it).
std::string slot_identity(const std::filesystem::path& slot) {
  std::string id = slot.string();
  std::error_code ec;
  std::vector<std::string> entries;
  for (std::filesystem::directory_iterator it(slot, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    entries.push_back(it->path().filename().string() + ":" + std::to_string(st.st_mode) + ":" +
                      std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                      std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino));
  }
  std::sort(entries.begin(), entries.end());
  for (const auto& e : entries) id += "\n" + e;
  return id;
}

std::string format_ms(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + " s"
                               : std::to_string(d.count()) + " ms";
}

}  // namespace

Status ModelStore::check_in_child(const std::string& ctx, const std::filesystem::path& slot) {
  if (options_.isolate_with.empty()) return {};
  const std::string identity = slot_identity(slot);
  if (isolated_ok_.contains(identity)) return {};
  const auto start = Clock::now();
  auto child = run_child({options_.isolate_with.string(), "probe", slot.string(), "--runs", "1"},
                         {}, options_.load_timeout);
  if (!child) return fail(child.error().context(ctx + ": check process"));
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  if (child->timed_out) {
    return fail(Errc::too_large,  // a configured bound: the load's time
                ctx + ": loading did not finish within " + format_ms(options_.load_timeout) +
                    " in a check process (killed); not loaded, the served models are untouched");
  }
  if (child->signal != 0) {
    const char* name = ::sigabbrev_np(child->signal);
    return fail(Errc::unsupported,  // a model this engine cannot take
                ctx + ": the model crashed the engine in a check process (signal " +
                    std::to_string(child->signal) + (name ? std::string(", SIG") + name : "") +
                    "); not loaded, the served models are untouched");
  }
  log::info("first load checked in a child process",
            {{"SLOT", slot.string()},
             {"EXIT", std::to_string(child->exit_code)},
             {"MS", std::to_string(static_cast<long long>(ms))}});
  isolated_ok_.insert(identity);
  return {};
}

Result<ModelInfo> ModelStore::load(const std::string& name, const std::filesystem::path& slot) {
  std::lock_guard serial(load_mu_);
  std::string ctx = "load " + name + " from " + slot.string();
  // A NUL would cut the path short at every system call: a different directory would be loaded.
  if (slot.native().find('\0') != std::string::npos) {
    return fail(Errc::invalid_argument, "load " + name + ": the slot path contains a NUL byte");
  }
  std::error_code ec;
  auto canonical = std::filesystem::canonical(slot, ec);
  if (ec) return fail(Errc::not_found, ctx + ": " + ec.message());
  MOTA_TRY(check_in_child(ctx, canonical));

  // The work happens on its own thread so it can be reniced without touching serving threads:
  // parsing, warm-up, and freeing the model this load replaces.
  Result<std::shared_ptr<ServedModel>> result = fail(Errc::internal, "load thread did not run");
  std::optional<ModelInfo> info;
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false, decided = false;  // the loader is over / has chosen its scheduling policy
  pid_t idle_tid = 0;  // the loader's thread id if it runs under SCHED_IDLE; guarded by done_mu
  std::thread loader([&] {
    struct Done {
      std::mutex& mu;
      std::condition_variable& cv;
      bool& done;
      ~Done() {
        std::lock_guard lock(mu);
        done = true;
        cv.notify_all();
      }
    } mark_done{done_mu, done_cv, done};
    auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
    if (options_.load_nice != 0) {
      // On Linux, PRIO_PROCESS with a thread id renices just that thread. An increment over the
      // process's own nice value: a runtime started niced must not get a loader that outranks
      // its serving threads (setting 10 absolute from 15 would, where permitted). Also the
      // niceness the thread keeps if it is moved out of SCHED_IDLE later.
      errno = 0;
      int base = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
      if (errno == 0) {
        (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(tid),
                            std::min(19, base + options_.load_nice));
      }
    }
    bool idle = options_.load_idle == StoreOptions::Idle::on;
    if (options_.load_idle == StoreOptions::Idle::automatic) idle = can_leave_idle();
    {
      std::lock_guard lock(done_mu);
      sched_param param{};
      if (idle && ::sched_setscheduler(tid, SCHED_IDLE, &param) == 0) idle_tid = tid;
      decided = true;
      // Named once its policy is set (not before: can_leave_idle()'s throwaway thread would
      // inherit the name): tools and tests find the loader by it.
      ::pthread_setname_np(::pthread_self(), "mota-load");
    }
    done_cv.notify_all();
    LoadYieldScope yield(options_.load_yield);
    auto start = Clock::now();
    yield_to_serving();
    reap();  // whatever earlier loads had to leave behind
    result = [&]() -> Result<std::shared_ptr<ServedModel>> {
      auto manifest = MOTA_TRY(read_slot_manifest(canonical));
      if (manifest.name != name) {
        return fail(Errc::invalid_argument,
                    "the slot holds model \"" + manifest.name + "\", not \"" + name + "\"");
      }
      auto backend = MOTA_TRY(backend_for(manifest.framework));
      auto model = MOTA_TRY(backend->load(manifest, canonical, options_.load));
      ModelInfo i;
      i.name = manifest.name;
      i.version = manifest.version;
      i.framework = manifest.framework;
      i.backend = std::string(backend->name());
      i.slot = canonical;
      i.generation = generation_.fetch_add(1) + 1;
      i.loaded_at = std::chrono::system_clock::now();
      i.load_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      i.load_waited_ms = std::chrono::duration<double, std::milli>(yield.waited()).count();
      i.inputs = model->inputs();
      i.outputs = model->outputs();
      return std::make_shared<ServedModel>(std::move(i), std::move(model));
    }();
    if (!result) return;
    info = (*result)->info();
    // The swap: new requests see the new model from here on; requests that took the old one
    // finish on it. Then it is freed here, on this niced thread, once they are done: a request
    // dropping the last reference would run the engine's teardown on its own path.
    auto old = entry(name).current.exchange(std::move(*result));
    if (!old) return;
    auto deadline = Clock::now() + options_.retire_wait;
    while (old.use_count() > 1 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (old.use_count() > 1) {
      retired_.push_back(std::move(old));  // freed by a later load
      return;
    }
    yield_to_serving();  // freeing a model is work too
    old.reset();
  });
  {
    // A SCHED_IDLE loader starves on a machine other processes keep busy: past
    // load_idle_escalate it goes back to SCHED_OTHER (at its nice value), where that is allowed.
    // (The thread cannot exit while done_mu is held here: its last act takes done_mu.)
    std::unique_lock lock(done_mu);
    if (!done_cv.wait_for(lock, options_.load_idle_escalate, [&] { return done; })) {
      done_cv.wait(lock, [&] { return done || decided; });
      if (!done && idle_tid != 0) {
        sched_param param{};
        if (::sched_setscheduler(idle_tid, SCHED_OTHER, &param) == 0) {
          log::info("model load still running after load_idle_escalate_ms: out of SCHED_IDLE",
                    {{"MODEL", name}, {"SLOT", slot.string()}});
        }
      }
    }
  }
  loader.join();
  if (!info) {
    log::warn("model load failed",
              {{"MODEL", name}, {"SLOT", slot.string()}, {"REASON", result.error().message()}});
    return fail(std::move(result).error().context(ctx));
  }
  log::info("model loaded", {{"MODEL", name},
                             {"VERSION", info->version},
                             {"SLOT", info->slot.string()},
                             {"GENERATION", std::to_string(info->generation)},
                             {"LOAD_MS", std::to_string(info->load_ms)},
                             {"LOAD_WAITED_MS", std::to_string(info->load_waited_ms)}});
  return std::move(*info);
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
