// A C++17 consumer of keops, through find_package(keops 0.3 CONFIG) (this directory) or
// add_subdirectory (../subdir). The argument names the build in the messages. Exit status 0
// when keops agrees with the loop.
#include <keops.h>

#include <cstdio>
#include <vector>

#include "gauss_case.h"

int main(int argc, char **argv) {
  const char *name = argc > 1 ? argv[1] : "cxx";
  std::vector<double> x(GC_M * GC_D), y(GC_N * GC_D), b(GC_N), c(GC_M);
  gc_fill(x.data(), y.data(), b.data());

  // the header's initialisers set .size; a struct zeroed by hand ({}) would be refused
  keops_kernel_desc desc = keops_kernel_desc_init();
  gc_describe(&desc);
  keops_run_options opts = keops_run_options_init();
  opts.backend = KEOPS_BACKEND_AUTO;

  keops_context *ctx = nullptr;
  keops_kernel *k = nullptr;
  const void *args[] = {x.data(), y.data(), b.data()};
  void *outs[] = {c.data()};
  if (keops_context_create(&ctx) != KEOPS_OK || keops_kernel_create(ctx, &desc, &k) != KEOPS_OK ||
      keops_kernel_run(k, GC_M, GC_N, args, outs, &opts) != KEOPS_OK) {
    std::fprintf(stderr, "%s: %s\n", name, keops_last_error());
    return 1;
  }
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
  return gc_check(name, x.data(), y.data(), b.data(), c.data());
}
