// image-cri-shim: everything lives in the libraries; main only hands over to the command line.
#include "cli/cli.h"

int main(int argc, char** argv) {
  return shim::cli::Main(argc, argv);
}
