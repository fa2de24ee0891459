#include "manager/cli/cli.hpp"

int main(int argc, char** argv) {
  return mota::manager::cli_main(argc, argv);
}
