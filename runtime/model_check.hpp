#pragma once
// model.json against the ONNX graph it ships: what `mota release add` refuses and
// `mota-runtime inspect` reports. Thread-safety: pure functions.
//
// Rules (docs/runtime.md, "Checks at publish"):
//  - model.json must declare inputs and outputs (an ONNX package without them would leave every
//    consumer guessing; `mota-runtime inspect` prints them ready to paste);
//  - the names are the graph's exactly: every graph input that is not an initializer is declared,
//    every declared input is one; the same for outputs. Order is free (model.json's order is the
//    order of raw inputs and outputs on the wire and in the health files);
//  - dtypes equal (the graph's element type by mota's names, runtime/onnx_info.hpp);
//  - shapes of the same rank, and equal where both sides are fixed: a symbolic or unknown graph
//    dimension matches any declared size (model.json may fix it, e.g. the batch), and a declared
//    -1 matches any graph dimension; a graph value without a shape matches any declared shape.

#include <string>
#include <vector>

#include "manifest/canonical_json.hpp"
#include "manifest/model_manifest.hpp"
#include "runtime/onnx_info.hpp"

namespace mota::runtime {

// One line per difference, e.g. "model.json input 'input' has shape [1,3,240,320], the graph
// says [1,3,480,640]". Empty when model.json and the graph agree.
std::vector<std::string> compare_manifest_io(const ModelManifest& manifest, const OnnxModel& graph);

// A model.json for the graph, to be edited: name, framework "onnx", entry, and the graph's inputs
// and outputs (a symbolic or unknown dimension as -1: fix it before publishing for the bundled
// backend, which needs static input shapes). `name` is made a valid model name.
Json manifest_skeleton(const OnnxModel& graph, const std::string& name, const std::string& entry);

}  // namespace mota::runtime
