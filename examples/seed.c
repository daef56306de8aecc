/* The KeOps "Sum reduction" tutorial in C, through the public API only:
 *
 *   c_i = sum_j Square(p - a_j) * Exp(x_i + y_j)       x: M x 3, y: N x 3, a: N x 1, p: 1
 *   g_j = sum_i [d c_i / d y_j]^T e_i                  e: M x 3 (the gradient w.r.t. y)
 *
 * Each result is checked against the tutorial's NumPy code, written here as plain loops in
 * double precision. Usage: seed [auto|cpu|reference]  (the backend; default auto).
 * Exit status: 0 when both results pass, 1 otherwise. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keops.h"

enum { M = 3000, N = 5000, D = 3, SHOWN_ROWS = 5 };

/* Both sides read the same float32 inputs, so the differences come only from the library's
 * arithmetic: the float32 rounding of the outputs (2^-24 ~ 6e-8 relative), float32 math
 * functions (a few ulp) when a float32 backend runs, and float32 block summation of 5000 (or
 * 3000) terms, whose error is below (block + blocks) * 2^-24 ~ 140 * 6e-8 ~ 8e-6 of the sum
 * of |terms| (block ~ sqrt(N)) and in practice a random walk far below it. The error is
 * measured normwise (max |out - ref| / max |ref|), so cancelling terms in g do not turn a
 * tiny absolute error into a large relative one. */
static const double TOLERANCE = 1e-5;

/* ---- data -------------------------------------------------------------------------------- */

/* xorshift64*: a fixed seed makes every run see the same numbers. */
static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static double uniform01(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

/* Standard normal values, as np.random.randn (Box-Muller). x + y ~ N(0, 2) keeps Exp far
 * from float32 overflow, as in the tutorial. */
static float *randn(int64_t n) {
  float *v = malloc(sizeof(float) * (size_t)n);
  if (!v) return NULL;
  for (int64_t k = 0; k < n; k++) {
    double u = 1.0 - uniform01(), w = uniform01(); /* u in (0, 1] */
    v[k] = (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * w));
  }
  return v;
}

typedef struct inputs {
  float *x, *y, *a, *p, *e;
} inputs;

static int make_inputs(inputs *in) {
  in->x = randn(M * D);
  in->y = randn(N * D);
  in->a = randn(N);
  in->p = randn(1);
  in->e = randn(M * D);
  return in->x && in->y && in->a && in->p && in->e ? 0 : -1;
}

static void free_inputs(inputs *in) {
  free(in->x);
  free(in->y);
  free(in->a);
  free(in->p);
  free(in->e);
}

/* ---- the tutorial's NumPy code, as loops --------------------------------------------------- */

/* c_np = ((p - a.T)[:, None] ** 2 * exp(x.T[:, :, None] + y.T[:, None, :])).sum(2).T */
static void reference_c(const inputs *in, double *c) {
  for (int i = 0; i < M; i++)
    for (int u = 0; u < D; u++) {
      double s = 0;
      for (int j = 0; j < N; j++) {
        double d = (double)in->p[0] - in->a[j];
        s += d * d * exp((double)in->x[i * D + u] + in->y[j * D + u]);
      }
      c[i * D + u] = s;
    }
}

/* g_np = ((p - a.T)[:, None, :] ** 2 * exp(x.T[:, :, None] + y.T[:, None, :])
 *         * e.T[:, :, None]).sum(1).T */
static void reference_g(const inputs *in, double *g) {
  for (int j = 0; j < N; j++) {
    double d = (double)in->p[0] - in->a[j];
    for (int u = 0; u < D; u++) {
      double s = 0;
      for (int i = 0; i < M; i++)
        s += exp((double)in->x[i * D + u] + in->y[j * D + u]) * in->e[i * D + u];
      g[j * D + u] = d * d * s;
    }
  }
}

/* ---- running a reduction ------------------------------------------------------------------- */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct job {
  const char *title;
  const char *formula;
  const char *const *aliases;
  int n_aliases;
  keops_axis axis;
  const void *const *args;
} job;

/* Creates the kernel and runs it into out (rows x 3 floats); prints the timings. */
static int run_job(keops_context *ctx, const job *jb, keops_backend backend, float *out) {
  keops_kernel_desc desc = keops_kernel_desc_init();
  desc.formula = jb->formula;
  desc.aliases = jb->aliases;
  desc.n_aliases = jb->n_aliases;
  desc.reduction = "Sum";
  desc.axis = jb->axis;
  desc.dtype = KEOPS_FLOAT32;

  keops_kernel *k = NULL;
  double t0 = now();
  if (keops_kernel_create(ctx, &desc, &k) != KEOPS_OK) {
    fprintf(stderr, "seed: %s\n", keops_last_error());
    return -1;
  }
  double t1 = now();
  keops_run_options opts = keops_run_options_init();
  opts.backend = backend;
  printf("  runs on: %s\n", keops_backend_describe(ctx, keops_kernel_backend(k, &opts)));
  void *outs[1] = {out};
  keops_status st = keops_kernel_run(k, M, N, jb->args, outs, &opts);
  double t2 = now();
  keops_kernel_destroy(k);
  if (st != KEOPS_OK) {
    fprintf(stderr, "seed: %s\n", keops_last_error());
    return -1;
  }
  printf("  kernel_create %.3f s, kernel_run %.3f s (%d x %d pairs)\n", t1 - t0, t2 - t1, M, N);
  return 0;
}

/* ---- checking ---------------------------------------------------------------------------- */

static double max_rel_err(const float *out, const double *ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t k = 0; k < n; k++) {
    double d = fabs((double)out[k] - ref[k]);
    if (!(d <= num)) num = d; /* NaN propagates */
    if (fabs(ref[k]) > den) den = fabs(ref[k]);
  }
  return den > 0 ? num / den : num;
}

/* The tutorial plots the first rows of both results; we print them side by side. */
static void show_rows(const char *name, const float *out, const double *ref) {
  printf("  %-4s %38s   %38s\n", "row", "keops", "reference loop");
  for (int r = 0; r < SHOWN_ROWS; r++)
    printf("  %s[%d] % 12.6g % 12.6g % 12.6g   % 12.6g % 12.6g % 12.6g\n", name, r, out[r * D],
           out[r * D + 1], out[r * D + 2], ref[r * D], ref[r * D + 1], ref[r * D + 2]);
}

/* Runs one job, computes its reference, prints the comparison. Returns 0 on PASS. */
static int check_job(keops_context *ctx, const job *jb, keops_backend backend, const char *bname,
                     const char *name, int64_t rows, const inputs *in,
                     void (*reference)(const inputs *, double *)) {
  printf("%s\n  backend %s\n", jb->title, bname);
  float *out = malloc(sizeof(float) * (size_t)(rows * D));
  double *ref = malloc(sizeof(double) * (size_t)(rows * D));
  int rc = -1;
  if (out && ref && run_job(ctx, jb, backend, out) == 0) {
    double t0 = now();
    reference(in, ref);
    printf("  reference loop (double) %.3f s\n", now() - t0);
    show_rows(name, out, ref);
    double err = max_rel_err(out, ref, rows * D);
    rc = err <= TOLERANCE ? 0 : -1; /* NaN fails */
    printf("  max relative error %.3g (tolerance %.0e): %s\n\n", err, TOLERANCE,
           rc == 0 ? "PASS" : "FAIL");
  } else if (!out || !ref) {
    fprintf(stderr, "seed: out of memory\n");
  }
  free(out);
  free(ref);
  return rc;
}

static int parse_backend(int argc, char **argv, keops_backend *b, const char **name) {
  static const char *const names[] = {"auto", "cpu", "gpu", "reference"};
  *b = KEOPS_BACKEND_AUTO;
  *name = names[0];
  if (argc < 2) return 0;
  for (int k = 0; k < 4; k++)
    if (strcmp(argv[1], names[k]) == 0) {
      *b = (keops_backend)k;
      *name = names[k];
      return 0;
    }
  fprintf(stderr, "usage: seed [auto|cpu|gpu|reference]\n");
  return -1;
}

int main(int argc, char **argv) {
  keops_backend backend;
  const char *bname;
  if (parse_backend(argc, argv, &backend, &bname)) return 2;

  inputs in;
  keops_context *ctx = NULL;
  if (make_inputs(&in) || keops_context_create(&ctx) != KEOPS_OK) {
    fprintf(stderr, "seed: out of memory\n");
    free_inputs(&in);
    return 1;
  }

  /* The tutorial's aliases; the gradient adds e, a fifth argument indexed by i. */
  static const char *const aliases[] = {"x = Vi(3)", "y = Vj(3)", "a = Vj(1)", "p = Pm(1)",
                                        "e = Vi(3)"};
  const void *args[] = {in.x, in.y, in.a, in.p, in.e};
  job sum = {"c = Sum_j Square(p-a)*Exp(x+y)   (axis 1: one row per i)",
             "Square(p-a)*Exp(x+y)",
             aliases,
             4,
             KEOPS_AXIS_J,
             args};
  job grad = {"g = Grad(c, y, e)                 (axis 0: one row per j)",
              "Grad(Square(p-a)*Exp(x+y), y, e)",
              aliases,
              5,
              KEOPS_AXIS_I,
              args};

  printf("seed: M = %d, N = %d, float32\n\n", M, N);
  int failed = check_job(ctx, &sum, backend, bname, "c", M, &in, reference_c) != 0;
  failed |= check_job(ctx, &grad, backend, bname, "g", N, &in, reference_g) != 0;
  printf("seed: %s\n", failed ? "FAIL" : "PASS");

  keops_context_destroy(ctx);
  free_inputs(&in);
  return failed;
}
