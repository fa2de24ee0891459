#pragma once
// What the bundled backend (Debian 12's OpenCV DNN 4.6) is known to get wrong, as a table, and the
// check of a model against it. Every entry was measured on this backend with a small hand-built
// graph (docs/runtime.md, "The real limits"): each one either crashes or corrupts memory, returns
// wrong results without an error, or fails to load. The first two kinds are why the table exists:
// no load or warm-up run can be trusted to catch them. The third kind is listed too so that the
// refusal says why in a sentence instead of an OpenCV assertion.
//
// Anything the table does not list is allowed; loading and running the model (the runtime's
// warm-up, `mota release add`'s load check) catches the rest that fails loudly.
//
// Used by the OpenCV backend's load (before cv::dnn::readNet), by `mota release add` (before
// publishing) and by `mota-runtime inspect`. No OpenCV here, so the manager links it.
// Thread-safety: the table is immutable; the functions are pure.

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/onnx_info.hpp"

namespace mota::runtime {

// The backend the table describes, for messages.
inline constexpr std::string_view kBundledBackend = "OpenCV DNN 4.6";
// The newest default-domain opset checked on that backend (docs/runtime.md). OpenCV 4.6 (2022)
// reads every node the same at any opset, so a newer opset whose operators changed meaning is read
// with the old meaning; beyond what was surveyed that cannot be ruled out.
inline constexpr std::int64_t kMaxCheckedOpset = 21;

// When an entry applies to a node, besides operator, domain and opset.
enum class LimitWhen {
  always,
  min_inputs,             // the node has at least `inputs` given (non-omitted) inputs
  no_axes,                // no "axes" attribute and at most one input (so no axes at all)
  constant_and_computed,  // some inputs are constants (initializers, Constant outputs), some not
};

struct KnownLimit {
  std::string_view op_type;
  std::string_view domain;  // "" = ai.onnx
  std::int64_t min_opset = 1;
  std::int64_t max_opset = std::numeric_limits<std::int64_t>::max();
  LimitWhen when = LimitWhen::always;
  int inputs = 0;              // for LimitWhen::min_inputs
  std::string_view condition;  // the condition in words, "" for always
  std::string_view reason;     // what the backend does, measured
};

// The table (docs/runtime.md lists it too).
std::span<const KnownLimit> known_limits();

// One reason the backend cannot be trusted with a model.
struct LimitHit {
  std::string what;    // "CumSum (opset 13, 2 nodes)", "opset 22", "external data"
  std::string reason;  // one sentence
  std::string message() const { return what + ": " + reason; }
};

// Everything in `model` that the bundled backend is known to get wrong: the table's entries
// (one hit per entry, with the number of nodes), a default-domain opset above kMaxCheckedOpset,
// and initializers stored as external data (OpenCV 4.6 crashes reading them). Empty: nothing known.
std::vector<LimitHit> check_backend_limits(const OnnxModel& model);

// The hits as one line: "the bundled backend (OpenCV DNN 4.6) cannot run this model: A: why; B:
// why".
std::string describe_limit_hits(const std::vector<LimitHit>& hits);

}  // namespace mota::runtime
