// A deliberate violation: tests/CMakeLists.txt runs tests/layering_check.cmake on this tree and
// expects it to name this include (the check must be able to fail).
#include "agent/agent.hpp"
