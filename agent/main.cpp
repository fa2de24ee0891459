#include "agent/cli.hpp"

int main(int argc, char** argv) {
  return mota::agent::cli_main(argc, argv);
}
