/* keops-bench --density=F: the cost of a block-sparse reduction against the dense one of the
 * same kernel, in the same run. Rows and reduced indices are cut in clusters of BS_CLUSTER
 * consecutive points and a random fraction F of the cluster pairs is kept, so the kept pairs
 * are about F of all; the sparse time should be about F of the dense time (the issue's
 * target: a 10%-dense mask in about 10% of the dense time). */
#include "bench_sparse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BS_CLUSTER = 100 };

/* Clusters [k * BS_CLUSTER, ...) of n points; *nc of them. */
static int64_t *clusters(int64_t n, int64_t *nc) {
  *nc = (n + BS_CLUSTER - 1) / BS_CLUSTER;
  int64_t *c = bc_xmalloc(sizeof(int64_t) * 2 * (size_t)(*nc ? *nc : 1));
  for (int64_t k = 0; k < *nc; k++) {
    c[2 * k] = k * BS_CLUSTER;
    c[2 * k + 1] = (k + 1) * BS_CLUSTER < n ? (k + 1) * BS_CLUSTER : n;
  }
  return c;
}

/* The ranges, and the fraction of the M x N pairs they keep. */
static keops_ranges *make_ranges(int64_t M, int64_t N, double density, double *kept) {
  int64_t nci, ncj, *ci = clusters(M, &nci), *cj = clusters(N, &ncj);
  unsigned char *keep = bc_xmalloc((size_t)(nci * ncj) + 1);
  uint64_t s = 0x5eed;
  double pairs = 0;
  for (int64_t a = 0; a < nci; a++)
    for (int64_t b = 0; b < ncj; b++) {
      keep[a * ncj + b] = (double)(bc_splitmix(&s) >> 11) * 0x1p-53 < density;
      if (keep[a * ncj + b]) pairs += (double)(ci[2 * a + 1] - ci[2 * a]) * (double)(cj[2 * b + 1] - cj[2 * b]);
    }
  *kept = pairs / fmax((double)M * (double)N, 1);
  keops_ranges *r = NULL;
  if (keops_ranges_from_matrix(ci, nci, cj, ncj, keep, &r) != KEOPS_OK) r = NULL;
  free(ci);
  free(cj);
  free(keep);
  return r;
}

static double timed(keops_kernel *k, int64_t M, int64_t N, const void *const *args, void *out,
                    const keops_run_options *o, int reps, double *times) {
  void *outs[1] = {out};
  for (int rep = -1; rep < reps; rep++) {
    double s = bc_now();
    if (keops_kernel_run(k, M, N, args, outs, o) != KEOPS_OK) return -1;
    if (rep >= 0) times[rep] = bc_now() - s;
  }
  return bc_median(times, reps);
}

void bs_print_header(void) {
  printf("%-9s %6s %6s %-7s %10s %10s %8s %12s %9s %s\n", "case", "M", "N", "dtype", "dense",
         "sparse", "kept", "sparse/dense", "err_ref", "status");
}

int bs_run(const bcase *c, keops_dtype dt, int64_t M, int64_t N, int reps, int threads,
           keops_backend backend, double density) {
  request r;
  bc_make_request(c, dt, &r);
  keops_context *ctx = NULL;
  keops_kernel *k = NULL;
  data d = {0};
  void *dense = NULL, *sparse = NULL, *ref = NULL;
  double kept = 0, *times = bc_xmalloc(sizeof(double) * (size_t)reps), td = -1, ts = -1, err = -1;
  keops_ranges *rg = make_ranges(M, N, density, &kept);
  const char *what = NULL;
  if (!rg) what = "keops_ranges_from_matrix";
  else if (keops_context_create(&ctx) != KEOPS_OK) what = "keops_context_create";
  else if (keops_kernel_create(ctx, &r.desc, &k) != KEOPS_OK) what = "keops_kernel_create";
  if (!what) {
    int axis_j = r.desc.axis == KEOPS_AXIS_J;
    int64_t rows = axis_j ? M : N, odim = keops_kernel_output_dim(k, 0);
    keops_dtype odt = keops_kernel_output_dtype(k, 0);
    size_t esz = odt == KEOPS_FLOAT32 ? 4 : 8, n = (size_t)(rows * odim);
    bc_make_data(c, k, dt, M, N, &d);
    dense = bc_xmalloc(n * esz), sparse = bc_xmalloc(n * esz), ref = bc_xmalloc(n * esz);
    const void *const *args = (const void *const *)d.arr;
    keops_run_options o = keops_run_options_init();
    o.backend = backend;
    o.num_threads = threads;
    if ((td = timed(k, M, N, args, dense, &o, reps, times)) < 0) what = "keops_kernel_run (dense)";
    o.ranges = rg;
    if (!what && (ts = timed(k, M, N, args, sparse, &o, reps, times)) < 0) what = "keops_kernel_run (sparse)";
    /* the first row block on the reference: its rows read the first rows of the inputs */
    keops_ranges first = *rg;
    int64_t rr = axis_j ? rg->ranges_i[1] : rg->ranges_j[1];
    if (axis_j) first.n_ranges_i = 1, first.n_redranges_j = rg->slices_i[0];
    else first.n_ranges_j = 1, first.n_redranges_i = rg->slices_j[0];
    keops_run_options ro = keops_run_options_init();
    ro.backend = KEOPS_BACKEND_REFERENCE;
    ro.ranges = &first;
    if (!what && keops_kernel_run(k, axis_j ? rr : M, axis_j ? N : rr, args, (void *[]){ref}, &ro) != KEOPS_OK)
      what = "keops_kernel_run (reference)";
    if (!what)
      err = c->kind == K_KNN    ? bc_knn_err(sparse, ref, rr, bc_knn_k, N, &d, c->D)
            : c->kind == K_NBODY ? bc_norm_err(sparse, ref, odt, (size_t)(rr * odim))
                                 : bc_rel_err(sparse, ref, odt, (size_t)(rr * odim));
  }
  int ok = !what && err <= bc_tolerance(dt);
  char a[32], b[32], e[32];
  bc_fmt_time(a, sizeof a, td);
  bc_fmt_time(b, sizeof b, ts);
  bc_fmt_err(e, sizeof e, err);
  printf("%-9s %6lld %6lld %-7s %10s %10s %7.2f%% %12.3f %9s %s\n", c->name, (long long)M,
         (long long)N, dt == KEOPS_FLOAT32 ? "float32" : "float64", a, b, 100 * kept,
         td > 0 && ts >= 0 ? ts / td : -1.0, e, ok ? "ok" : "FAILED");
  if (what) fprintf(stderr, "keops-bench: %s %s: %s: %s\n", c->name, dt == KEOPS_FLOAT32 ? "float32" : "float64", what, keops_last_error());
  else if (!ok) fprintf(stderr, "keops-bench: %s: the sparse result differs from the reference by %.3g\n", c->name, err);
  fflush(stdout);
  free(times), free(dense), free(sparse), free(ref);
  bc_free_data(&d);
  keops_ranges_destroy(rg);
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
  return ok ? 0 : 1;
}
