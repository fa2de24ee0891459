#include "runtime/onnx_limits.hpp"

#include <unordered_set>

namespace mota::runtime {

namespace {

constexpr std::string_view kAxesInput = "axes given as an input (opset 18 form)";
constexpr std::string_view kReduceAllAxes =
    "the axes input is ignored: it reduces over all axes and returns the wrong shape, without an "
    "error";

// Measured with hand-built graphs on Debian 12's OpenCV 4.6.0 (docs/runtime.md, "The real
// limits"). Keep docs/runtime.md in step with this table.
constexpr KnownLimit kLimits[] = {
    {"CumSum", "", 1, std::numeric_limits<std::int64_t>::max(), LimitWhen::always, 0, "",
     "corrupts the heap (reads and writes past its buffers) and returns wrong values when the axis "
     "is not the last one"},
    {"ReduceMean", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceMax", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceMin", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceProd", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceL1", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceL2", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceSumSquare", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceLogSum", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceLogSumExp", "", 18, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     kAxesInput, kReduceAllAxes},
    {"ReduceSum", "", 13, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     "axes given as an input (opset 13 form)",
     "fails to load: axes as an input is not implemented"},
    {"Squeeze", "", 13, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     "axes given as an input (opset 13 form)",
     "fails to load: it takes axes only as an attribute (the opset 1-12 form)"},
    {"Squeeze", "", 1, std::numeric_limits<std::int64_t>::max(), LimitWhen::no_axes, 0,
     "without axes (every dimension of size 1)", "fails to load: it needs the axes spelled out"},
    {"Clip", "", 11, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     "min or max given as an input (PyTorch's ReLU6 and clamp exports)",
     "fails to load: it takes min and max only as attributes (the opset 1-10 form)"},
    {"Split", "", 13, std::numeric_limits<std::int64_t>::max(), LimitWhen::min_inputs, 2,
     "split sizes given as an input (opset 13 form)",
     "the sizes are ignored and the input is split into equal parts: unequal sizes give wrong "
     "shapes without an error, or fail to load"},
    {"Concat", "", 1, std::numeric_limits<std::int64_t>::max(), LimitWhen::constant_and_computed, 0,
     "joins a constant (initializer or Constant) with a computed tensor",
     "returns wrong values (the computed part is uninitialised memory), without an error"},
};

bool applies(const KnownLimit& l, const OnnxNode& n,
             const std::unordered_set<std::string_view>& constants) {
  switch (l.when) {
    case LimitWhen::always:
      return true;
    case LimitWhen::min_inputs:
      return n.given_inputs() >= l.inputs;
    case LimitWhen::no_axes:
      return n.given_inputs() <= 1 && !n.has_attribute("axes");
    case LimitWhen::constant_and_computed: {
      bool constant = false, computed = false;
      for (const auto& i : n.inputs) {
        if (i.empty()) continue;
        (constants.count(i) ? constant : computed) = true;
      }
      return constant && computed;
    }
  }
  return false;
}

std::string plural(std::size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

std::span<const KnownLimit> known_limits() {
  return kLimits;
}

std::vector<LimitHit> check_backend_limits(const OnnxModel& model) {
  std::vector<LimitHit> hits;
  const auto opset = model.opset("");
  bool default_nodes = false;
  for (const auto& n : model.nodes) default_nodes |= n.domain.empty();
  if (default_nodes && !opset) {
    hits.push_back({"no opset import for the default domain (ai.onnx)",
                    "the model does not say which version of its operators it uses"});
  }
  if (opset && *opset > kMaxCheckedOpset) {
    hits.push_back(
        {"opset " + std::to_string(*opset),
         "newer than the newest checked on " + std::string(kBundledBackend) + " (" +
             std::to_string(kMaxCheckedOpset) +
             "): it reads every operator the same at any opset, so one whose meaning changed "
             "would silently be run with the old meaning; export with opset " +
             std::to_string(kMaxCheckedOpset) + " or lower"});
  }
  if (model.external_initializers > 0) {
    hits.push_back({"external data (" + plural(model.external_initializers, "initializer") + ")",
                    "it cannot read tensor data stored outside the .onnx file (it crashes); "
                    "export with the weights inside the file"});
  }

  // What OpenCV's importer computes at load time, as it does: initializers, Constant outputs,
  // Shape outputs (every shape is static for this backend), and the outputs of any node whose
  // inputs are all constant (nodes are in topological order, as ONNX requires).
  std::unordered_set<std::string_view> constants(model.initializers.begin(),
                                                 model.initializers.end());
  for (const auto& n : model.nodes) {
    if (n.depth != 0) continue;
    bool constant = n.domain.empty() && (n.op_type == "Constant" || n.op_type == "Shape");
    if (!constant) {
      constant = n.given_inputs() > 0;
      for (const auto& i : n.inputs) {
        if (!i.empty() && !constants.count(i)) constant = false;
      }
    }
    if (constant) {
      for (const auto& o : n.outputs) constants.insert(o);
    }
  }
  for (const auto& l : kLimits) {
    const auto version = model.opset(l.domain);
    const std::int64_t v = version.value_or(1);
    if (v < l.min_opset || v > l.max_opset) continue;
    std::size_t count = 0;
    for (const auto& n : model.nodes) {
      if (n.op_type == l.op_type && n.domain == l.domain && applies(l, n, constants)) ++count;
    }
    if (count == 0) continue;
    std::string what =
        std::string(l.op_type) + " (opset " + std::to_string(v) + ", " + plural(count, "node");
    if (!l.condition.empty()) what += ", " + std::string(l.condition);
    hits.push_back({what + ")", std::string(l.reason)});
  }
  return hits;
}

std::string describe_limit_hits(const std::vector<LimitHit>& hits) {
  std::string s = "the bundled backend (" + std::string(kBundledBackend) +
                  ") is known to get this model wrong: ";
  for (std::size_t i = 0; i < hits.size(); ++i) {
    if (i) s += "; ";
    s += hits[i].message();
  }
  return s;
}

}  // namespace mota::runtime
