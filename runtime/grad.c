/* keops_kernel_grad: the kernel of the gradient of a reduction with respect to one of its
 * inputs, as KeOps's autograd layer derives it (keops-semantics §6.6), written as formula text
 * over the kernel's own inputs and built by keops_kernel_create like any request:
 *   Sum                 Sum of Grad(F, v, G)
 *   LogSumExp[Weight]   Sum of Grad(F, v, (G*Exp(F-R) | W)) + Grad(W, v, G*Exp(F-R))
 *                       (R the forward output; without a weight W = 1 and the second term
 *                       vanishes)
 *   SumSoftMaxWeight    over the output's index: SumSoftMaxWeight of F with the weight
 *                       Grad(W, v, G) + Grad(F, v, (W-R)|G); over the other index the
 *                       softmax's normaliser differs per term, so: Sum of
 *                       Grad(W, v, Exp(F-L)*G) + Grad(F, v, Exp(F-L)*((W-R)|G)), L the
 *                       forward LogSumExp of F
 *   Min, Max, KMin      Sum of Grad(F, v, G*Equal(J, A)) (per K slot), A the forward's selected
 *                       indices and J the reduced index itself: through the selected pairs only
 *   Arg reductions      zero (indices have no gradient)
 * reduced over the index v is not indexed by (a parameter: over j, then the rows summed). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "red.h"
#include "runtime.h"

#define WHO "keops_kernel_grad"

/* The inputs a gradient kernel adds after k's, in this order, each present only when its
 * formula reads it: G the output's cotangent, R the forward output, L the forward LogSumExp,
 * A the forward's selected indices (int64, converted at each run), J the reduced index
 * itself (made at each run, never passed by the caller: it is the last position). */
enum { X_G, X_R, X_L, X_A, X_J, EXTRA };
#define USES(x) (1 << (x))
#define KMIN_GRAD_MAX 64 /* K-min gradients sum K terms in the formula */

typedef struct names {
  char *name[FE_MAX_ARGS + EXTRA]; /* k's positions, then the extras by role */
  const char *ptr[FE_MAX_ARGS + EXTRA];
} names;

static int taken(const names *nm, int upto, const char *s) {
  for (int q = 0; q < upto; q++)
    if (nm->name[q] && !strcmp(nm->name[q], s)) return 1;
  return 0;
}

/* Slot q's name: base, with '_' appended until no earlier slot has it. */
static int name_at(names *nm, int q, const char *base) {
  size_t n = strlen(base);
  char *s = malloc(n + FE_MAX_ARGS + EXTRA + 1);
  if (!s) return -1;
  memcpy(s, base, n + 1);
  while (taken(nm, q, s)) s[n++] = '_', s[n] = 0;
  nm->name[q] = s;
  nm->ptr[q] = s;
  return 0;
}

typedef struct text {
  char *buf;
  size_t len, cap;
  int oom;
} text;

__attribute__((format(printf, 2, 3))) static void put(text *t, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n >= 0 && !t->oom && t->len + (size_t)n + 1 > t->cap) {
    size_t cap = (t->len + (size_t)n + 1) * 2;
    char *b = realloc(t->buf, cap);
    if (b) t->buf = b, t->cap = cap;
    else t->oom = 1;
  }
  if (n >= 0 && !t->oom) t->len += (size_t)vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap2);
  va_end(ap2);
}

/* The gradient's formula(s) and reduction for family/fin of p, in text over nm, and in *uses
 * the extras they read (G always); NULL reduction when p has no gradient here (the message
 * set). */
static const char *grad_text(const fe_program *p, const names *nm, int var, const char *F,
                             const char *W, int over_rows, text *f, text *f2, int *uses) {
  const red_row *r = p->red;
  int n = p->args.n;
  const char *v = nm->name[var], *G = nm->name[n + X_G], *R = nm->name[n + X_R],
             *L = nm->name[n + X_L], *A = nm->name[n + X_A], *J = nm->name[n + X_J];
  *uses = USES(X_G);
  if (r->family == RF_SUM) {
    put(f, "Grad(%s, %s, %s)", F, v, G);
    return "Sum";
  }
  if ((r->family == RF_MINMAX || r->family == RF_KMIN) && r->outputs == RO_IDX) {
    put(f, "Zero(%d)", p->args.dim[var]);
    return "Sum";
  }
  if (r->family == RF_MINMAX || r->family == RF_KMIN) {
    /* through the selected pairs only: entry c of slot q takes G where the reduced index J is
     * the forward's selection A (ties were broken by the smaller index there) */
    int D = p->fdim, K = r->family == RF_KMIN ? p->k : 1;
    if (K > KMIN_GRAD_MAX) {
      rt_fail(KEOPS_ERROR_UNSUPPORTED, WHO ": the gradient of %s with K = %d (at most %d)", r->name,
              K, KMIN_GRAD_MAX);
      return NULL;
    }
    *uses |= USES(X_A) | USES(X_J);
    put(f, "Grad(%s, %s, ", F, v);
    for (int q = 0; q < K; q++)
      if (K == 1) put(f, "%s*Equal(%s, %s)", G, J, A);
      else put(f, "%sExtract(%s,%d,%d)*Equal(%s, Extract(%s,%d,%d))", q ? " + " : "", G, q * D, D, J, A, q * D, D);
    put(f, ")");
    return "Sum";
  }
  if (r->family == RF_LSE && r->fin == FIN_LOG) {
    *uses |= USES(X_R);
    put(f, "Grad(%s, %s, (%s*Exp(%s-%s) | %s))", F, v, G, F, R, W ? W : "1");
    if (W) put(f, " + Grad(%s, %s, %s*Exp(%s-%s))", W, v, G, F, R);
    return "Sum";
  }
  if (r->family == RF_LSE && r->fin == FIN_SOFTMAX) {
    *uses |= USES(X_R);
    if (over_rows) { /* reduced over the same index as p: the normaliser is the reduction's */
      put(f, "%s", F);
      put(f2, "Grad(%s, %s, %s) + Grad(%s, %s, ((%s-%s) | %s))", W, v, G, F, v, W, R, G);
      return "SumSoftMaxWeight";
    }
    *uses |= USES(X_L);
    put(f, "Grad(%s, %s, Exp(%s-%s)*%s) + Grad(%s, %s, Exp(%s-%s)*((%s-%s) | %s))", W, v, F, L, G,
        F, v, F, L, W, R, G);
    return "Sum";
  }
  rt_fail(KEOPS_ERROR_UNSUPPORTED,
          WHO ": the gradient of the raw %s outputs is not supported (their user-visible forms, "
          "LogSumExp and SumSoftMaxWeight, are)", r->name);
  return NULL;
}

keops_status keops_kernel_grad(keops_kernel *k, int var, keops_kernel **out) {
  if (out) *out = NULL;
  if (!k || !out) return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": %s is NULL", k ? "out" : "kernel");
  const fe_program *p = k->prog;
  int n = p->args.n;
  if (var < 0 || var >= n || !p->args.dim[var])
    return rt_fail(KEOPS_ERROR_ARGUMENT, WHO ": var = %d is not an input of the kernel (it has %d)",
                   var, n);
  if (n + EXTRA > FE_MAX_ARGS)
    return rt_fail(KEOPS_ERROR_UNSUPPORTED, WHO ": the kernel has %d inputs; its gradient would "
                   "need %d, above the limit of %d", n, n + EXTRA, FE_MAX_ARGS);
  /* user orientation: rows are indexed by i (axis 1) or j (axis 0) */
  int rowcat = p->axis == 1 ? CAT_I : CAT_J, vcat = p->args.cat[var];
  int over_rows = vcat == CAT_P || vcat == rowcat;
  names nm;
  memset(&nm, 0, sizeof nm);
  text f = {0}, f2 = {0};
  char *F = NULL, *W = NULL, (*al)[80] = calloc((size_t)n + EXTRA, sizeof *al);
  const char **alp = calloc((size_t)n + EXTRA, sizeof *alp);
  keops_status st = !al || !alp ? KEOPS_ERROR_OUT_OF_MEMORY : KEOPS_OK;
  static const char *const extra[EXTRA] = {"grad_out", "fwd_out", "fwd_lse", "fwd_arg", "index"};
  for (int q = 0; q < n + EXTRA && !st; q++) {
    char base[16];
    snprintf(base, sizeof base, "v%d", q);
    if (name_at(&nm, q, q >= n ? extra[q - n] : p->args.name[q] ? p->args.name[q] : base))
      st = KEOPS_ERROR_OUT_OF_MEMORY;
  }
  int na = 0, uses = 0;
  const char *red = NULL;
  if (!st) {
    F = dag_print(p->d, p->user_f, nm.ptr, n + EXTRA);
    W = p->user_f2 ? dag_print(p->d, p->user_f2, nm.ptr, n + EXTRA) : NULL;
    if (!F || (p->user_f2 && !W)) st = KEOPS_ERROR_OUT_OF_MEMORY;
  }
  if (!st && (strlen(F) >= DAG_PRINT_MAX - 4 || (W && strlen(W) >= DAG_PRINT_MAX - 4))) {
    st = rt_fail(KEOPS_ERROR_UNSUPPORTED, WHO ": the formula is too large to differentiate here");
    goto done;
  }
  if (!st && !(red = grad_text(p, &nm, var, F, W, over_rows, &f, &f2, &uses))) {
    st = KEOPS_ERROR_UNSUPPORTED;
    goto done;
  }
  if (!st && (f.oom || f2.oom)) st = KEOPS_ERROR_OUT_OF_MEMORY;
  if (st == KEOPS_ERROR_OUT_OF_MEMORY) {
    st = rt_fail(st, WHO ": out of memory");
    goto done;
  }
  static const char cats[3][3] = {"Vi", "Vj", "Pm"};
  int pos = n; /* the extras take the positions after k's, in role order */
  for (int q = 0; q < n + EXTRA; q++) {
    int x = q - n, cat = q < n ? p->args.cat[q] : x == X_J ? (p->axis == 1 ? CAT_J : CAT_I) : rowcat;
    int dim = q < n ? p->args.dim[q] : x == X_L || x == X_J ? 1 : x == X_A ? p->out_dim[p->nout - 1]
                                                                          : p->out_dim[0];
    if ((q < n && !dim) || (q >= n && !(uses & USES(x))))
      continue; /* an undeclared position, or an input this gradient does not read */
    snprintf(al[na], sizeof al[na], "%s = %s(%d, %d)", nm.name[q], cats[cat], q < n ? q : pos++, dim);
    alp[na] = al[na];
    na++;
  }
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = f.buf;
  d.formula2 = f2.len ? f2.buf : NULL;
  d.aliases = alp;
  d.n_aliases = na;
  d.reduction = red;
  /* over the index v is not indexed by; a parameter's rows are summed after the run */
  d.axis = over_rows == (p->axis == 1) ? KEOPS_AXIS_J : KEOPS_AXIS_I;
  d.dtype = p->dtype;
  d.fast_math = p->fast_math;
  if (p->red->fam->sum_type) d.sum_scheme = p->scheme, d.double_accumulator = p->double_acc;
  if ((st = keops_kernel_create(k->ctx, &d, out)) == KEOPS_OK) {
    (*out)->sum_rows = vcat == CAT_P;
    if (uses & USES(X_J)) (*out)->index_in = pos - 2, (*out)->index_pos = pos - 1;
  }
done:
  for (int q = 0; q < n + EXTRA; q++) free(nm.name[q]);
  free(al), free(alp), free(F), free(W), free(f.buf), free(f2.buf);
  return st;
}
