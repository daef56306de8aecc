/* Baselines of keops-bench: the plain C loop nests a user would write for each benchmark case,
 * with the formula inlined and sums accumulated in the dtype. bench_baseline.c alone is
 * compiled at -O3 -march=native -ffast-math (and -fopenmp when the compiler has it), and every
 * function runs its rows on `threads` threads (OpenMP, else pthreads splitting the rows).
 *
 * Arrays are row-major as in keops: x M x D, y N x D, b and a N x 1, e M x 3. */
#ifndef KEOPS_BENCH_BASELINE_H
#define KEOPS_BENCH_BASELINE_H

#include <stdint.h>

/* "openmp" or "pthreads": how the baselines run their threads. */
const char *bl_threading(void);
/* The compiler and flags the baselines were built with, for the report. */
const char *bl_compiler(void);
const char *bl_flags(void);

/* out_i = sum_j exp(-g |x_i - y_j|^2) b_j (M x 1). */
void bl_gauss_f32(int64_t M, int64_t N, int D, const float *x, const float *y, const float *b,
                  float g, float *out, int threads);
void bl_gauss_f64(int64_t M, int64_t N, int D, const double *x, const double *y, const double *b,
                  double g, double *out, int threads);

/* The tutorial: out_i = sum_j (p - a_j)^2 exp(x_i + y_j), x, y dim 3 (M x 3). */
void bl_seed_f32(int64_t M, int64_t N, const float *x, const float *y, const float *a, float p,
                 float *out, int threads);
void bl_seed_f64(int64_t M, int64_t N, const double *x, const double *y, const double *a, double p,
                 double *out, int threads);

/* Its gradient wrt y, reduced over i (axis 0):
 * out_j = (p - a_j)^2 sum_i exp(x_i + y_j) * e_i, elementwise in dim 3 (N x 3). */
void bl_seedgrad_f32(int64_t M, int64_t N, const float *x, const float *y, const float *a, float p,
                     const float *e, float *out, int threads);
void bl_seedgrad_f64(int64_t M, int64_t N, const double *x, const double *y, const double *a,
                     double p, const double *e, double *out, int threads);

/* out_i = log sum_j exp(-g |x_i - y_j|^2), two passes per row (max, then shifted sum). */
void bl_lse_f32(int64_t M, int64_t N, int D, const float *x, const float *y, float g, float *out,
                int threads);
void bl_lse_f64(int64_t M, int64_t N, int D, const double *x, const double *y, double g,
                double *out, int threads);

/* out_i = the indices of the K smallest |x_i - y_j|^2, ascending (ties: smaller j first), -1
 * past N (M x K): a sorted insertion of each j into the row's K best. */
void bl_knn_f32(int64_t M, int64_t N, int D, const float *x, const float *y, int K, int64_t *out,
                int threads);
void bl_knn_f64(int64_t M, int64_t N, int D, const double *x, const double *y, int K, int64_t *out,
                int threads);

/* Softened gravity: out_i = sum_j m_j (y_j - x_i) / (|x_i - y_j|^2 + e)^(3/2), x, y dim 3
 * (M x 3), as an n-body code writes it: r = 1/sqrt(d2), then r*r*r. */
void bl_nbody_f32(int64_t M, int64_t N, const float *x, const float *y, const float *m, float e,
                  float *out, int threads);
void bl_nbody_f64(int64_t M, int64_t N, const double *x, const double *y, const double *m, double e,
                  double *out, int threads);

#endif
