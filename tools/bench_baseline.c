/* The baselines of keops-bench (see bench_baseline.h): the obvious i/j loop nest of each case,
 * formula inlined, accumulating in the dtype. This file alone is built with -O3 -march=native
 * -ffast-math (tools/CMakeLists.txt), plus -fopenmp when the compiler has OpenMP; the threads
 * split the output rows into equal contiguous chunks, as `omp parallel for schedule(static)`
 * does, when there is enough work (M*N >= 2^20 pairs, as an `if` clause would say: below that,
 * waking threads costs more than the loop, and keops's own pool leaves small runs to the
 * calling thread too). Without OpenMP the same split runs on pthreads. */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#else
#include <pthread.h>
#endif

#include "bench_baseline.h"

#define INLINE static inline __attribute__((always_inline))

/* ---- threads ------------------------------------------------------------------------------- */

typedef void (*rows_fn)(const void *ctx, int64_t i0, int64_t i1);

/* Pairs below which the loop nest runs on the calling thread alone. */
#define BL_MIN_PARALLEL_PAIRS ((int64_t)1 << 20)

static void chunk(int64_t rows, int t, int n, int64_t *i0, int64_t *i1) {
  *i0 = rows * t / n;
  *i1 = rows * (t + 1) / n;
}

#ifdef _OPENMP
const char *bl_threading(void) { return "openmp"; }

static void run_rows(int64_t rows, int64_t nred, int threads, rows_fn fn, const void *ctx) {
  if (threads <= 1 || rows * nred < BL_MIN_PARALLEL_PAIRS) {
    fn(ctx, 0, rows);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int64_t i0, i1;
    chunk(rows, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
    fn(ctx, i0, i1);
  }
}
#else
const char *bl_threading(void) { return "pthreads"; }

typedef struct part {
  rows_fn fn;
  const void *ctx;
  int64_t i0, i1;
} part;

static void *part_main(void *arg) {
  part *p = arg;
  p->fn(p->ctx, p->i0, p->i1);
  return NULL;
}

static void run_rows(int64_t rows, int64_t nred, int threads, rows_fn fn, const void *ctx) {
  enum { MAXT = 256 };
  if (threads <= 1 || rows * nred < BL_MIN_PARALLEL_PAIRS) {
    fn(ctx, 0, rows);
    return;
  }
  if (threads > MAXT) threads = MAXT;
  part parts[MAXT];
  pthread_t th[MAXT];
  int started[MAXT] = {0};
  for (int t = 0; t < threads; t++) {
    parts[t].fn = fn;
    parts[t].ctx = ctx;
    chunk(rows, t, threads, &parts[t].i0, &parts[t].i1);
  }
  for (int t = 1; t < threads; t++)
    started[t] = pthread_create(&th[t], NULL, part_main, &parts[t]) == 0;
  part_main(&parts[0]);
  for (int t = 1; t < threads; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      part_main(&parts[t]); /* no thread: run its rows here */
  }
}
#endif

const char *bl_compiler(void) {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown compiler";
#endif
}

const char *bl_flags(void) {
#ifdef _OPENMP
  return "-O3 -march=native -ffast-math -fopenmp";
#else
  return "-O3 -march=native -ffast-math (pthreads)";
#endif
}

/* ---- the loop nests, once per dtype ------------------------------------------------------- */

/* T: the dtype; S: the suffix; EXP, LOG, SQRT: its libm functions. Each case has a context
 * struct, a body with the formula inlined (D a constant where the case fixes it, so that the
 * compiler unrolls the coordinate loop as a hand-written D=3 loop would), and a rows function. */
#define BASELINES(T, S, EXP, LOG, SQRT)                                                            \
  typedef struct gauss_##S {                                                                       \
    int64_t N;                                                                                     \
    int D;                                                                                         \
    const T *x, *y, *b;                                                                            \
    T g;                                                                                           \
    T *out;                                                                                        \
  } gauss_##S;                                                                                     \
                                                                                                   \
  INLINE void gauss_body_##S(const gauss_##S *c, int64_t i0, int64_t i1, int D) {                  \
    for (int64_t i = i0; i < i1; i++) {                                                            \
      const T *xi = c->x + i * D;                                                                  \
      T s = 0;                                                                                     \
      for (int64_t j = 0; j < c->N; j++) {                                                         \
        const T *yj = c->y + j * D;                                                                \
        T d2 = 0;                                                                                  \
        for (int k = 0; k < D; k++) {                                                              \
          T t = xi[k] - yj[k];                                                                     \
          d2 += t * t;                                                                             \
        }                                                                                          \
        s += EXP(-c->g * d2) * c->b[j];                                                            \
      }                                                                                            \
      c->out[i] = s;                                                                               \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void gauss_rows_##S(const void *ctx, int64_t i0, int64_t i1) {                            \
    const gauss_##S *c = ctx;                                                                      \
    if (c->D == 3)                                                                                 \
      gauss_body_##S(c, i0, i1, 3);                                                                \
    else if (c->D == 64)                                                                           \
      gauss_body_##S(c, i0, i1, 64);                                                               \
    else                                                                                           \
      gauss_body_##S(c, i0, i1, c->D);                                                             \
  }                                                                                                \
                                                                                                   \
  void bl_gauss_##S(int64_t M, int64_t N, int D, const T *x, const T *y, const T *b, T g, T *out,  \
                    int threads) {                                                                 \
    gauss_##S c = {N, D, x, y, b, g, out};                                                         \
    run_rows(M, N, threads, gauss_rows_##S, &c);                                                   \
  }                                                                                                \
                                                                                                   \
  typedef struct seed_##S {                                                                        \
    int64_t M, N;                                                                                  \
    const T *x, *y, *a, *e;                                                                        \
    T p;                                                                                           \
    T *out;                                                                                        \
  } seed_##S;                                                                                      \
                                                                                                   \
  static void seed_rows_##S(const void *ctx, int64_t i0, int64_t i1) {                             \
    const seed_##S *c = ctx;                                                                       \
    for (int64_t i = i0; i < i1; i++) {                                                            \
      const T *xi = c->x + 3 * i;                                                                  \
      T s0 = 0, s1 = 0, s2 = 0;                                                                    \
      for (int64_t j = 0; j < c->N; j++) {                                                         \
        const T *yj = c->y + 3 * j;                                                                \
        T w = (c->p - c->a[j]) * (c->p - c->a[j]);                                                 \
        s0 += w * EXP(xi[0] + yj[0]);                                                              \
        s1 += w * EXP(xi[1] + yj[1]);                                                              \
        s2 += w * EXP(xi[2] + yj[2]);                                                              \
      }                                                                                            \
      c->out[3 * i] = s0;                                                                          \
      c->out[3 * i + 1] = s1;                                                                      \
      c->out[3 * i + 2] = s2;                                                                      \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  void bl_seed_##S(int64_t M, int64_t N, const T *x, const T *y, const T *a, T p, T *out,          \
                   int threads) {                                                                  \
    seed_##S c = {M, N, x, y, a, NULL, p, out};                                                    \
    run_rows(M, N, threads, seed_rows_##S, &c);                                                    \
  }                                                                                                \
                                                                                                   \
  /* rows are j here, reduced over i */                                                            \
  static void seedgrad_rows_##S(const void *ctx, int64_t j0, int64_t j1) {                         \
    const seed_##S *c = ctx;                                                                       \
    for (int64_t j = j0; j < j1; j++) {                                                            \
      const T *yj = c->y + 3 * j;                                                                  \
      T w = (c->p - c->a[j]) * (c->p - c->a[j]);                                                   \
      T s0 = 0, s1 = 0, s2 = 0;                                                                    \
      for (int64_t i = 0; i < c->M; i++) {                                                         \
        const T *xi = c->x + 3 * i, *ei = c->e + 3 * i;                                            \
        s0 += EXP(xi[0] + yj[0]) * ei[0];                                                          \
        s1 += EXP(xi[1] + yj[1]) * ei[1];                                                          \
        s2 += EXP(xi[2] + yj[2]) * ei[2];                                                          \
      }                                                                                            \
      c->out[3 * j] = w * s0;                                                                      \
      c->out[3 * j + 1] = w * s1;                                                                  \
      c->out[3 * j + 2] = w * s2;                                                                  \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  void bl_seedgrad_##S(int64_t M, int64_t N, const T *x, const T *y, const T *a, T p, const T *e,  \
                       T *out, int threads) {                                                      \
    seed_##S c = {M, N, x, y, a, e, p, out};                                                       \
    run_rows(N, M, threads, seedgrad_rows_##S, &c);                                                \
  }                                                                                                \
                                                                                                   \
  INLINE T sqdist_##S(const T *u, const T *v, int D) {                                             \
    T d2 = 0;                                                                                      \
    for (int k = 0; k < D; k++) {                                                                  \
      T t = u[k] - v[k];                                                                           \
      d2 += t * t;                                                                                 \
    }                                                                                              \
    return d2;                                                                                     \
  }                                                                                                \
                                                                                                   \
  INLINE void lse_body_##S(const gauss_##S *c, int64_t i0, int64_t i1, int D) {                    \
    for (int64_t i = i0; i < i1; i++) {                                                            \
      const T *xi = c->x + i * D;                                                                  \
      if (c->N == 0) {                                                                             \
        c->out[i] = -(T)HUGE_VAL;                                                                  \
        continue;                                                                                  \
      }                                                                                            \
      T m = -c->g * sqdist_##S(xi, c->y, D);                                                       \
      for (int64_t j = 1; j < c->N; j++) {                                                         \
        T f = -c->g * sqdist_##S(xi, c->y + j * D, D);                                             \
        m = f > m ? f : m;                                                                         \
      }                                                                                            \
      T s = 0;                                                                                     \
      for (int64_t j = 0; j < c->N; j++) s += EXP(-c->g * sqdist_##S(xi, c->y + j * D, D) - m);    \
      c->out[i] = m + LOG(s);                                                                      \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void lse_rows_##S(const void *ctx, int64_t i0, int64_t i1) {                              \
    const gauss_##S *c = ctx;                                                                      \
    if (c->D == 3)                                                                                 \
      lse_body_##S(c, i0, i1, 3);                                                                  \
    else                                                                                           \
      lse_body_##S(c, i0, i1, c->D);                                                               \
  }                                                                                                \
                                                                                                   \
  void bl_lse_##S(int64_t M, int64_t N, int D, const T *x, const T *y, T g, T *out, int threads) { \
    gauss_##S c = {N, D, x, y, NULL, g, out};                                                      \
    run_rows(M, N, threads, lse_rows_##S, &c);                                                     \
  }                                                                                                \
                                                                                                   \
  typedef struct knn_##S {                                                                         \
    int64_t N;                                                                                     \
    int D, K;                                                                                      \
    const T *x, *y;                                                                                \
    int64_t *out;                                                                                  \
  } knn_##S;                                                                                       \
                                                                                                   \
  INLINE void knn_body_##S(const knn_##S *c, int64_t i0, int64_t i1, int D, T *best,               \
                           int64_t *idx) {                                                         \
    const int K = c->K;                                                                            \
    for (int64_t i = i0; i < i1; i++) {                                                            \
      const T *xi = c->x + i * D;                                                                  \
      int n = 0;                                                                                   \
      for (int64_t j = 0; j < c->N; j++) {                                                         \
        T d = sqdist_##S(xi, c->y + j * D, D);                                                     \
        if (n == K && !(d < best[K - 1])) continue;                                                \
        int p = n < K ? n++ : K - 1;                                                               \
        for (; p > 0 && best[p - 1] > d; p--) {                                                    \
          best[p] = best[p - 1];                                                                   \
          idx[p] = idx[p - 1];                                                                     \
        }                                                                                          \
        best[p] = d;                                                                               \
        idx[p] = j;                                                                                \
      }                                                                                            \
      for (int k = 0; k < K; k++) c->out[i * K + k] = k < n ? idx[k] : -1;                         \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void knn_rows_##S(const void *ctx, int64_t i0, int64_t i1) {                              \
    const knn_##S *c = ctx;                                                                        \
    T *best = malloc(sizeof(T) * (size_t)c->K);                                                    \
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)c->K);                                         \
    if (best && idx) {                                                                             \
      if (c->D == 3)                                                                               \
        knn_body_##S(c, i0, i1, 3, best, idx);                                                     \
      else                                                                                         \
        knn_body_##S(c, i0, i1, c->D, best, idx);                                                  \
    } else { /* out of memory: rows marked empty, the bench reports the mismatch */                \
      for (int64_t i = i0; i < i1; i++)                                                            \
        for (int k = 0; k < c->K; k++) c->out[i * c->K + k] = -1;                                  \
    }                                                                                              \
    free(best);                                                                                    \
    free(idx);                                                                                     \
  }                                                                                                \
                                                                                                   \
  void bl_knn_##S(int64_t M, int64_t N, int D, const T *x, const T *y, int K, int64_t *out,        \
                  int threads) {                                                                   \
    knn_##S c = {N, D, K, x, y, out};                                                              \
    if (K > 0) run_rows(M, N, threads, knn_rows_##S, &c);                                          \
  }                                                                                                \
                                                                                                   \
  typedef struct nbody_##S {                                                                       \
    int64_t N;                                                                                     \
    const T *x, *y, *m;                                                                            \
    T e;                                                                                           \
    T *out;                                                                                        \
  } nbody_##S;                                                                                     \
                                                                                                   \
  static void nbody_rows_##S(const void *ctx, int64_t i0, int64_t i1) {                            \
    const nbody_##S *c = ctx;                                                                      \
    for (int64_t i = i0; i < i1; i++) {                                                            \
      const T *xi = c->x + 3 * i;                                                                  \
      T s0 = 0, s1 = 0, s2 = 0;                                                                    \
      for (int64_t j = 0; j < c->N; j++) {                                                         \
        const T *yj = c->y + 3 * j;                                                                \
        T d0 = yj[0] - xi[0], d1 = yj[1] - xi[1], d2 = yj[2] - xi[2];                              \
        T r = 1 / SQRT(d0 * d0 + d1 * d1 + d2 * d2 + c->e);                                        \
        T w = c->m[j] * r * r * r;                                                                 \
        s0 += w * d0;                                                                              \
        s1 += w * d1;                                                                              \
        s2 += w * d2;                                                                              \
      }                                                                                            \
      c->out[3 * i] = s0;                                                                          \
      c->out[3 * i + 1] = s1;                                                                      \
      c->out[3 * i + 2] = s2;                                                                      \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  void bl_nbody_##S(int64_t M, int64_t N, const T *x, const T *y, const T *m, T e, T *out,         \
                    int threads) {                                                                 \
    nbody_##S c = {N, x, y, m, e, out};                                                            \
    run_rows(M, N, threads, nbody_rows_##S, &c);                                                   \
  }

BASELINES(float, f32, expf, logf, sqrtf)
BASELINES(double, f64, exp, log, sqrt)
