/* The consumers' one case, for C and C++ alike: c_i = sum_j exp(-|x_i - y_j|^2) b_j on
 * 3 x 4 points in dim 3 (float64), and its check against a plain loop. The consumer programs
 * differ only in how they reach keops (pkg-config, find_package, add_subdirectory). */
#ifndef GAUSS_CASE_H
#define GAUSS_CASE_H

#include <keops.h>
#include <math.h>
#include <stdio.h>

enum { GC_M = 3, GC_N = 4, GC_D = 3 };

static const char *const gc_aliases[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)"};

/* Sets the case's fields of a descriptor from keops_kernel_desc_init(). */
static void gc_describe(keops_kernel_desc *d) {
  d->formula = "Exp(-SqDist(x,y))*b";
  d->aliases = gc_aliases;
  d->n_aliases = 3;
  d->reduction = "Sum";
  d->axis = KEOPS_AXIS_J;
  d->dtype = KEOPS_FLOAT64;
}

static void gc_fill(double *x, double *y, double *b) {
  for (int k = 0; k < GC_M * GC_D; k++) x[k] = 0.1 * k - 0.3;
  for (int k = 0; k < GC_N * GC_D; k++) y[k] = 0.5 - 0.07 * k;
  for (int j = 0; j < GC_N; j++) b[j] = 1.0 + j;
}

/* Prints "NAME: PASS" or the rows that differ; returns the exit status. */
static int gc_check(const char *name, const double *x, const double *y, const double *b,
                    const double *c) {
  int bad = 0;
  for (int i = 0; i < GC_M; i++) {
    double s = 0;
    for (int j = 0; j < GC_N; j++) {
      double r2 = 0;
      for (int u = 0; u < GC_D; u++) {
        double d = x[i * GC_D + u] - y[j * GC_D + u];
        r2 += d * d;
      }
      s += exp(-r2) * b[j];
    }
    if (!(fabs(c[i] - s) <= 1e-10 * (1 + fabs(s)))) {
      fprintf(stderr, "%s: row %d: keops %.17g, loop %.17g\n", name, i, c[i], s);
      bad = 1;
    }
  }
  printf("%s: %s\n", name, bad ? "FAIL" : "PASS");
  return bad;
}

#endif
