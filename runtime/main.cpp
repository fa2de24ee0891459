#include "runtime/cli.hpp"

int main(int argc, char** argv) {
  return mota::runtime::cli_main(argc, argv);
}
