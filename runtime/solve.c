/* keops_kernel_solve: KeOps's KernelSolve, conjugate gradients on (alpha Id + K) x = b where K
 * is a Sum kernel seen as a linear map of one of its inputs. Unlike KeOps: the linearity is
 * checked symbolically, iterations are capped, the residual is measured (not only updated) and
 * reported, and a breakdown or a cap reached is a status, not a silent answer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "red.h"
#include "runtime.h"

#define WHO "keops_kernel_solve"

/* Whether the kernel's formula (before the axis swap, in the user's categories) is linear in
 * input var. The kernel's own dag is shared by concurrent runs, so the check builds its
 * nodes in a dag of its own. */
static keops_status check_linear(const fe_program *p, int var) {
  dag *d = dag_new();
  char *text = d ? dag_serialize(p->d, p->user_f) : NULL;
  uint32_t f = 0;
  int lin = -1;
  if (text) {
    dag_set_partial(d, fe_partial);
    if (!dag_deserialize(d, text, strlen(text), &f))
      lin = ad_is_linear(d, f, dag_var(d, var, p->args.dim[var], p->args.cat[var]));
  }
  keops_status st = KEOPS_OK;
  if (lin == 0)
    st = rt_fail(KEOPS_ERROR_DIMENSION, WHO ": the formula is not linear in %s (input %d)",
                 p->args.name[var] ? p->args.name[var] : "its variable", var);
  else if (lin < 0)
    st = rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, WHO ": out of memory checking linearity: %s",
                 d ? dag_err(d)->msg : "");
  free(text);
  dag_free(d);
  return st;
}

static double dot(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t q = 0; q < n; q++) s += a[q] * b[q];
  return s;
}

typedef struct solver {
  keops_kernel *k;
  int64_t M, N;
  const void **args; /* the caller's, with args[var] replaced by buf */
  int var;
  keops_dtype dt;
  size_t n;
  double alpha;
  void *buf, *out; /* the product's input and output in the kernel's dtype */
  const keops_run_options *run;
} solver;

/* y = (alpha Id + K) v; v rounded to the kernel's dtype on the way in. */
static keops_status product(solver *s, const double *v, double *y) {
  for (size_t q = 0; q < s->n; q++)
    if (s->dt == KEOPS_FLOAT32) ((float *)s->buf)[q] = (float)v[q];
    else ((double *)s->buf)[q] = v[q];
  keops_status st = keops_kernel_run(s->k, s->M, s->N, s->args, (void *[]){s->out}, s->run);
  if (st != KEOPS_OK) return st;
  for (size_t q = 0; q < s->n; q++)
    y[q] = s->alpha * v[q] + (s->dt == KEOPS_FLOAT32 ? ((float *)s->out)[q] : ((double *)s->out)[q]);
  return KEOPS_OK;
}

/* CG from x, restarted from the measured residual whenever the updated one says converged:
 * the updated residual drifts from the true one, most in float32. *iters counts products. */
static keops_status cg(solver *s, const double *b, double *x, double tol, int max_iter,
                       int *iters, double *res) {
  size_t n = s->n;
  double *r = malloc(sizeof(double) * 3 * n), *p = r + n, *Ap = p + n;
  if (!r) return rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, WHO ": out of memory for %zu unknowns", n);
  double bn = sqrt(dot(b, b, n));
  keops_status st = KEOPS_OK;
  *res = 0;
  if (bn == 0) goto out; /* x = 0 */
  for (;;) {
    /* the measured residual r = b - A x (x = 0 needs no product) */
    if (*iters == 0) {
      memcpy(r, b, sizeof(double) * n);
    } else {
      if ((st = product(s, x, Ap)) != KEOPS_OK) goto out;
      ++*iters;
      for (size_t q = 0; q < n; q++) r[q] = b[q] - Ap[q];
    }
    double rr = dot(r, r, n);
    *res = sqrt(rr) / bn;
    if (*res <= tol) goto out;
    memcpy(p, r, sizeof(double) * n);
    for (;;) {
      if (*iters >= max_iter) {
        st = rt_fail(KEOPS_ERROR_NOT_CONVERGED,
                     WHO ": no convergence in %d products: residual %.3g > tol %.3g", *iters,
                     *res, tol);
        goto out;
      }
      if ((st = product(s, p, Ap)) != KEOPS_OK) goto out;
      ++*iters;
      double pAp = dot(p, Ap, n);
      if (!(pAp > 0)) {
        st = rt_fail(KEOPS_ERROR_ARGUMENT,
                     WHO ": alpha Id + K is not positive definite: p.(alpha p + K p) = %.3g at "
                     "product %d", pAp, *iters);
        goto out;
      }
      double a = rr / pAp;
      for (size_t q = 0; q < n; q++) x[q] += a * p[q], r[q] -= a * Ap[q];
      double rr1 = dot(r, r, n);
      *res = sqrt(rr1) / bn;
      if (*res <= tol) break; /* measure it */
      for (size_t q = 0; q < n; q++) p[q] = r[q] + rr1 / rr * p[q];
      rr = rr1;
    }
  }
out:
  free(r);
  return st;
}

/* With batch dimensions the system is block diagonal, one block per element, solved as one:
 * the unknown must have every batch extent in full (a broadcast unknown would make K
 * rectangular). *elements: their count. */
static keops_status batch_elements(const fe_program *p, int var, const keops_run_options *run,
                                   int64_t *elements) {
  *elements = 1;
  if (!run || run->size < sizeof(keops_run_options) || !run->batch) return KEOPS_OK;
  const keops_batch *b = run->batch;
  int64_t B[KEOPS_MAX_BATCH_DIMS];
  keops_status st = rt_batch_shape(p, b, B, elements);
  if (st) return st;
  for (int d = 0; d < b->ndim; d++)
    if (b->extents[var * b->ndim + d] != B[d])
      return rt_fail(KEOPS_ERROR_DIMENSION, WHO ": the unknown (input %d) has batch extent %lld "
                     "in dimension %d, the batch %lld: K is not square", var,
                     (long long)b->extents[var * b->ndim + d], d, (long long)B[d]);
  return KEOPS_OK;
}

/* The caller's info gets what it has room for (an older header's struct is smaller). */
static void give_info(keops_solve_info *info, int iters, double res) {
  if (!info || info->size < sizeof(size_t)) return;
  keops_solve_info mine = {sizeof mine, iters, res};
  size_t n = info->size < sizeof mine ? info->size : sizeof mine;
  memcpy((char *)info + sizeof(size_t), (const char *)&mine + sizeof(size_t), n - sizeof(size_t));
}

static keops_status check_request(const keops_kernel *k, int var, int64_t M, int64_t N,
                                  const keops_solve_info *info) {
  if (!k) return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": kernel is NULL");
  if (M < 0 || N < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": M = %lld, N = %lld: a size is negative",
                   (long long)M, (long long)N);
  const fe_program *p = rt_kernel_program(k);
  if (info && info->size == 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": info->size is 0: initialise it with "
                                         "keops_solve_info_init()");
  if (strcmp(p->red->name, "Sum"))
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": the kernel's reduction is %s; only a Sum is a "
                                         "linear map", p->red->name);
  if (var < 0 || var >= p->args.n || !p->args.dim[var])
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": var = %d is not an input of the kernel (it has %d)",
                   var, p->args.n);
  int cat = p->args.cat[var];
  if (cat == CAT_P)
    return rt_fail(KEOPS_ERROR_DIMENSION, WHO ": input %d is a parameter (Pm); the unknown must "
                                          "be a Vi or Vj input", var);
  if (p->args.dim[var] != p->out_dim[0])
    return rt_fail(KEOPS_ERROR_DIMENSION, WHO ": input %d has dim %d but the output dim %d: K "
                                          "is not square", var, p->args.dim[var], p->out_dim[0]);
  int64_t rows = cat == CAT_I ? M : N;
  if (rows != fe_rows(p, M, N))
    return rt_fail(KEOPS_ERROR_DIMENSION, WHO ": input %d has %lld rows but the output %lld (M = "
                   "%lld, N = %lld): K is not square", var, (long long)rows,
                   (long long)fe_rows(p, M, N), (long long)M, (long long)N);
  return KEOPS_OK;
}

keops_status keops_kernel_solve(keops_kernel *k, int var, int64_t M, int64_t N,
                                const void *const *args, void *x, const keops_solve_options *opts,
                                keops_solve_info *info) {
  keops_status st = check_request(k, var, M, N, info);
  if (st) return st;
  const fe_program *p = rt_kernel_program(k);
  keops_solve_options o = keops_solve_options_init();
  if (opts && (st = rt_copy_sized(opts, &o, sizeof o, WHO, "opts", "keops_solve_options"))) return st;
  if (o.run && o.run->size >= sizeof(keops_run_options) && o.run->device_pointers)
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": device_pointers runs are not supported (b and x "
                                         "are host arrays)");
  if (!(o.alpha >= 0) || !(o.tol >= 0) || o.max_iter < 0 || isinf(o.alpha))
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": alpha = %g, tol = %g, max_iter = %d: each must be "
                   "finite and >= 0", o.alpha, o.tol, o.max_iter);
  if (!args || !args[var] || !x)
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": %s is NULL", !args ? "args" : !x ? "x" : "args[var] (b)");
  if ((st = check_linear(p, var))) return st;
  int64_t elements = 1;
  if ((st = batch_elements(p, var, o.run, &elements))) return st;

  int64_t rows = fe_rows(p, M, N);
  if (rows > 0 && (uint64_t)elements > (uint64_t)PTRDIFF_MAX / 8 / (uint64_t)rows / (uint64_t)p->args.dim[var])
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": too many unknowns");
  size_t n = (size_t)(elements * rows) * (size_t)p->args.dim[var], esz = p->dtype == KEOPS_FLOAT32 ? 4 : 8;
  double tol = o.tol > 0 ? o.tol : p->dtype == KEOPS_FLOAT32 ? 1e-5 : 1e-10;
  int max_iter = o.max_iter ? o.max_iter : n > 5000 ? 10000 : n < 50 ? 100 : (int)(2 * n);
  solver s = {k, M, N, malloc(sizeof(void *) * (size_t)p->args.n), var, p->dtype, n, o.alpha,
              malloc(esz * n + 1), malloc(esz * n + 1), o.run};
  double *b = malloc(sizeof(double) * (2 * n + 1)), *xd = b ? b + n : NULL;
  int iters = 0;
  double res = 0;
  if (!s.args || !s.buf || !s.out || !b) {
    st = rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, WHO ": out of memory for %zu unknowns", n);
  } else {
    memcpy(s.args, args, sizeof(void *) * (size_t)p->args.n);
    s.args[var] = s.buf;
    for (size_t q = 0; q < n; q++) {
      b[q] = p->dtype == KEOPS_FLOAT32 ? ((const float *)args[var])[q] : ((const double *)args[var])[q];
      xd[q] = 0;
    }
    st = cg(&s, b, xd, tol, max_iter, &iters, &res);
    for (size_t q = 0; q < n; q++)
      if (p->dtype == KEOPS_FLOAT32) ((float *)x)[q] = (float)xd[q];
      else ((double *)x)[q] = xd[q];
  }
  give_info(info, iters, res);
  free(s.args), free(s.buf), free(s.out), free(b);
  return st;
}
