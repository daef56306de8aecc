/* A C consumer of the installed keops, built with
 *   cc -I.. main.c $(pkg-config --cflags --libs keops) -lm
 * (tools/test.sh, consumer step). Exit status 0 when keops agrees with the loop. */
#include <keops.h>

#include "gauss_case.h"

int main(void) {
  double x[GC_M * GC_D], y[GC_N * GC_D], b[GC_N], c[GC_M];
  gc_fill(x, y, b);

  keops_kernel_desc desc = keops_kernel_desc_init();
  gc_describe(&desc);

  keops_context *ctx = NULL;
  keops_kernel *k = NULL;
  const void *args[] = {x, y, b};
  void *outs[] = {c};
  if (keops_context_create(&ctx) != KEOPS_OK || keops_kernel_create(ctx, &desc, &k) != KEOPS_OK ||
      keops_kernel_run(k, GC_M, GC_N, args, outs, NULL) != KEOPS_OK) {
    fprintf(stderr, "c-pkgconfig: %s\n", keops_last_error());
    return 1;
  }
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
  return gc_check("c-pkgconfig", x, y, b, c);
}
