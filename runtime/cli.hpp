#pragma once
// mota-runtime's command line (runtime/main.cpp only calls cli_main):
//
//   mota-runtime serve [--config FILE] [--socket PATH] [--tcp HOST:PORT] [--pool-size N]
//                      [--engine-threads N] [--model NAME=SLOT]... [--log-level L]
//       Serves until SIGTERM/SIGINT. --config defaults to /etc/mota/runtime.toml (optional when
//       it is the default); flags override the file. Exit 0 on a clean stop, 1 on error.
//   mota-runtime probe SLOT [--json] [--runs N]
//       Runs the health check of runtime/probe.hpp. Exit 0 when it passes, else the failing
//       step's code (3 manifest, 4 load, 5 input, 6 run, 7 nan, 8 output, 9 latency) with the
//       reason on stderr (or in the JSON on stdout with --json).
//   mota-runtime run SLOT --input FILE --output FILE
//       Runs the model once on raw inputs and writes the raw outputs: a health.expected_output.
//   mota-runtime inspect MODEL [--json]
//       Reads an ONNX model (a file, or a model directory with model.json) without loading it:
//       inputs, outputs, opsets, operators, what the bundled backend refuses and why, model.json
//       against the graph, a model.json skeleton. Exit 0 when nothing is refused or differs, 1
//       when something is or the model is unreadable.
//   mota-runtime --version
//
// Usage errors (unknown command or option, missing or bad argument, a bad --tcp/--log-level/
// --model value) exit 2 with "mota-runtime: error: ..." on stderr, as in every mota binary; 1 is
// an error of the operation (a bad config file included).
// Neither collides with probe's verdicts (3..9), which the agent tells apart (agent/health.cpp).

namespace mota::runtime {

int cli_main(int argc, char** argv);

}  // namespace mota::runtime
