// A deliberate violation for tests/layering_check.cmake's self-test: fleet/ is below cli/ in
// manager/ (docs/architecture.md, "manager/ units"), so the check must name this include.
#include "manager/cli/cli.hpp"
