/* fe_build: a kernel description -> the program every backend runs (see front.h). All the
 * checks of a request that do not depend on the data happen here, once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "red.h"

#define FE_MAX_K 100000

static int check_desc(const keops_kernel_desc *desc, const red_row *red, kerr *e) {
  const char *rname = desc->reduction ? desc->reduction : "Sum";
  if (!desc->formula) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "formula is NULL");
  } else if (desc->n_aliases < 0 || (desc->n_aliases > 0 && !desc->aliases)) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "aliases: %d aliases given with a %s array", desc->n_aliases,
             desc->aliases ? "non-NULL" : "NULL");
  } else if (!red) {
    int n;
    const char *names = red_known_names(&n);
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "unknown reduction '%.100s' (expected one of %.*s)", rname, n,
             names);
  } else if (desc->axis != 0 && desc->axis != 1) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "axis must be 0 or 1, got %d", desc->axis);
  } else if (desc->dtype != KEOPS_FLOAT32 && desc->dtype != KEOPS_FLOAT64) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "dtype must be KEOPS_FLOAT32 or KEOPS_FLOAT64, got %d",
             (int)desc->dtype);
  } else if (red->fam->takes_k && (desc->k < 1 || desc->k > FE_MAX_K)) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s needs K in [1, %d], got %d", red->name, FE_MAX_K, desc->k);
  } else if (!red->fam->takes_k && desc->k != 0) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "K = %d is given but %s takes no K", desc->k, red->name);
  } else if (red->f2 == F2_REQ && !desc->formula2) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s needs a weight formula (formula2)", red->name);
  } else if (red->f2 == F2_NO && desc->formula2) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s takes no formula2", red->name);
  } else if ((unsigned)desc->sum_scheme > KEOPS_SUM_KAHAN) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "unknown sum_scheme %d", (int)desc->sum_scheme);
  } else if (!red->fam->sum_type && (desc->sum_scheme != KEOPS_SUM_AUTO || desc->double_accumulator)) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT,
             "sum_scheme and double_accumulator apply to sum-type reductions (Sum, LogSumExp, "
             "SumSoftMaxWeight, Max_SumShiftExp...), not to %s", red->name);
  }
  return e->status == KEOPS_OK ? 0 : -1;
}

/* The formula of the reduction row and its outputs. */
static int shape_program(fe_program *p, uint32_t F, uint32_t G, kerr *e) {
  dag *d = p->d;
  int D = dag_get(d, F)->dim;
  const red_row *r = p->red;
  if (r->fam->weighted) {
    if (D != 1) {
      kerr_set(e, KEOPS_ERROR_DIMENSION, "%s needs a scalar formula (dim 1), got dim %d", r->name, D);
      return -1;
    }
    uint32_t w = G ? G : dag_int(d, 1);
    if (r->weight1) w = dag_bin(d, OP_Concat, dag_int(d, 1), w);
    p->f = dag_bin(d, OP_Concat, F, w);
  } else {
    p->f = F;
  }
  if (!p->f) return -1;
  p->fdim = dag_get(d, p->f)->dim;
  if ((int64_t)p->k * D > DAG_MAX_DIM) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s: K * dim = %d * %d is too large", r->name, p->k, D);
    return -1;
  }
  int out_idx[2];
  p->nout = red_outputs(r, p->fdim, p->k, p->out_dim, out_idx);
  for (int o = 0; o < p->nout; o++) p->out_dtype[o] = out_idx[o] ? KEOPS_INT64 : p->dtype;
  p->zero = r->family == RF_SUM && dag_is_zero(d, F);
  p->state = (int)red_layout_doubles(r->fam->layout(p->fdim, p->k, p->scheme));
  p->weights = r->fam->weighted ? p->fdim - 1 : 0;
  return 0;
}

static void set_roles(fe_program *p) {
  for (int pos = 0; pos < p->args.n; pos++) {
    int c = p->args.cat[pos];
    p->role[pos] = !p->args.dim[pos] ? FE_NONE : c == CAT_P ? FE_PARAM : (c == CAT_I) == (p->axis == 1) ? FE_ROW : FE_RED;
    if (p->role[pos] == FE_RED) p->red_width += p->args.dim[pos];
  }
}

static int check_positions(const fe_args *a, kerr *e) {
  for (int pos = 0; pos < a->n; pos++)
    if (!a->dim[pos]) {
      kerr_set(e, KEOPS_ERROR_DIMENSION,
               "argument position %d is not declared (positions must be 0..%d without gaps)", pos,
               a->n - 1);
      return -1;
    }
  return 0;
}

static char *make_key(const fe_program *p) {
  char *f = dag_serialize(p->d, p->f);
  if (!f) return NULL;
  size_t cap = strlen(f) + 256 + (size_t)p->args.n * 24;
  char *key = malloc(cap);
  if (key) {
    int n = snprintf(key, cap, "%s|%s|axis=%d|k=%d|dtype=%d|scheme=%d|dacc=%d|args=", f,
                     p->red->name, p->axis, p->k, (int)p->dtype, (int)p->scheme, p->double_acc);
    for (int pos = 0; pos < p->args.n && n > 0 && (size_t)n < cap; pos++)
      n += snprintf(key + n, cap - (size_t)n, "%d:%d,", p->args.dim[pos], p->args.cat[pos]);
  }
  free(f);
  return key;
}

fe_program *fe_build(const keops_kernel_desc *desc, kerr *e) {
  if (!desc) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "the kernel description is NULL");
    return NULL;
  }
  const red_row *red = red_find(desc->reduction ? desc->reduction : "Sum");
  if (check_desc(desc, red, e)) return NULL;
  fe_program *p = calloc(1, sizeof *p);
  if (!p || !(p->d = dag_new())) {
    free(p);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  p->red = red;
  p->k = red->fam->takes_k ? desc->k : 0;
  p->axis = desc->axis;
  p->dtype = desc->dtype;
  p->double_acc = red->fam->sum_type && desc->double_accumulator && desc->dtype == KEOPS_FLOAT32;
  p->scheme = desc->sum_scheme != KEOPS_SUM_AUTO ? desc->sum_scheme
              : red->fam->sum_type               ? KEOPS_SUM_BLOCK
                                                 : KEOPS_SUM_DIRECT;
  for (int i = 0; i < desc->n_aliases; i++) {
    if (!desc->aliases[i]) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "alias %d is NULL", i);
      goto fail;
    }
    if (fe_parse_alias(&p->args, desc->aliases[i], i, e)) goto fail;
  }
  uint32_t F = fe_parse(p->d, desc->formula, "formula", &p->args, NULL, e);
  if (!F) goto fail;
  uint32_t G = 0;
  if (desc->formula2 && !(G = fe_parse(p->d, desc->formula2, "formula2", &p->args, NULL, e)))
    goto fail;
  if (check_positions(&p->args, e) || shape_program(p, F, G, e)) goto fail;
  p->user_f = F;
  p->user_f2 = G;
  set_roles(p);
  if (p->axis == 0) {
    static const int swap[3] = {CAT_J, CAT_I, CAT_P};
    p->f = dag_swap_cats(p->d, p->f, swap);
  }
  if (!p->f) goto fail;
  if (!(p->key = make_key(p))) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    goto fail;
  }
  return p;
fail:
  if (e->status == KEOPS_OK) {
    kerr *de = dag_err(p->d);
    if (de->status != KEOPS_OK)
      kerr_set(e, de->status, "%s", de->msg);
    else
      kerr_set(e, KEOPS_ERROR_COMPILE, "internal error: building the program failed silently");
  }
  fe_free(p);
  return NULL;
}

void fe_free(fe_program *p) {
  if (!p) return;
  dag_free(p->d);
  fe_args_free(&p->args);
  free(p->key);
  free(p);
}
