/* keops-bench's cases, their data and the checks of their results (bench_cases.c). */
#ifndef KEOPS_BENCH_CASES_H
#define KEOPS_BENCH_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "keops.h"

typedef enum kind { K_GAUSS, K_SEED, K_SEEDGRAD, K_LSE, K_KNN, K_NBODY } kind;

typedef struct bcase {
  const char *name;
  kind kind;
  int D;
  int64_t M, N;
  int reps;
  int gpu_only;
} bcase;

enum { NCASES = 10, MAXARGS = 5, REF_ROWS = 8 };
extern int bc_knn_k; /* K of the knn case (--k, default 10) */
extern int bc_fast_math; /* keops_kernel_desc.fast_math of every case (--fast-math) */
extern const bcase bc_cases[NCASES];
extern const double GAMMA, P_SEED, EPS2; /* the parameters g, p and e (nbody) */

/* The request of a case: formula, aliases (position = index) and reduction. */
typedef struct request {
  char alias[MAXARGS][32];
  const char *alias_ptr[MAXARGS];
  keops_kernel_desc desc;
} request;

/* One case's inputs at one dtype: values in double (for the checks) and in the dtype. */
typedef struct data {
  int nargs;
  int dim[MAXARGS], cat[MAXARGS];
  double *val[MAXARGS];
  void *arr[MAXARGS];
  int64_t rows[MAXARGS];
} data;

void bc_make_request(const bcase *c, keops_dtype dt, request *r);
void bc_describe(const request *r, char *buf, size_t n);
double bc_now(void);
double bc_median(double *v, int n);
uint64_t bc_splitmix(uint64_t *s);
uint64_t bc_name_seed(const char *s, int pos);
void *bc_xmalloc(size_t n);
void bc_fmt_rate(char *buf, size_t n, double v);
void bc_fmt_time(char *buf, size_t n, double s);
void bc_fmt_err(char *buf, size_t n, double e);
double bc_param_value(const bcase *c, int pos);
void bc_make_data(const bcase *c, const keops_kernel *k, keops_dtype dt, int64_t M, int64_t N,
                  data *d);
void bc_free_data(data *d);
double bc_get(const void *p, keops_dtype dt, size_t e);
double bc_rel_err(const void *got, const void *want, keops_dtype dt, size_t n);
double bc_norm_err(const void *got, const void *want, keops_dtype dt, size_t n);
double bc_sqdist(const double *u, const double *v, int D);
/* Largest relative difference accepted between keops and a baseline or the reference. */
static inline double bc_tolerance(keops_dtype dt) { return dt == KEOPS_FLOAT32 ? 1e-3 : 1e-9; }
double bc_knn_err(const int64_t *got, const int64_t *want, int64_t rows, int K, int64_t N,
                  const data *d, int D);

#endif
