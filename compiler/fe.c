/* fe_build: a kernel description -> the program every backend runs (see front.h). All the
 * checks of a request that do not depend on the data happen here, once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kgen.h"
#include "red.h"

#define FE_MAX_K 100000

/* Axis 0 is axis 1 with the categories of i and j exchanged. */
static const int axis_swap[3] = {CAT_J, CAT_I, CAT_P};

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
  } else if (desc->axis == KEOPS_AXIS_UNSET) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT,
             "axis is not set: KEOPS_AXIS_J reduces over j (one output row per i, KeOps axis=1), "
             "KEOPS_AXIS_I over i (one row per j, KeOps axis=0)");
  } else if (desc->axis != KEOPS_AXIS_J && desc->axis != KEOPS_AXIS_I) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "axis = %d is not a keops_axis (KEOPS_AXIS_J = 1, "
             "KEOPS_AXIS_I = 2)", (int)desc->axis);
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
  } else if (desc->fast_math != 0 && desc->fast_math != 1) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "fast_math must be 0 or 1, got %d", desc->fast_math);
  }
  return e->status == KEOPS_OK ? 0 : -1;
}

/* The formula of the reduction row: F, or for the weighted families Concat(F, weights). */
static int shape_formula(fe_program *p, uint32_t F, uint32_t G, kerr *e) {
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
  return p->f ? 0 : -1;
}

static char *make_key(const fe_program *p);

/* Everything that follows from the program's f (in its orientation), reduction, K, axis,
 * dtype, scheme and arguments: fe_build and fe_from_key share it, so that a program rebuilt
 * from its key is the program. */
static int derive_facts(fe_program *p, kerr *e) {
  const red_row *r = p->red;
  p->fdim = dag_get(p->d, p->f)->dim;
  /* only KMin takes a K, and its formula is F itself */
  if ((int64_t)p->k * p->fdim > DAG_MAX_DIM) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s: K * dim = %d * %d is too large", r->name, p->k, p->fdim);
    return -1;
  }
  int out_idx[2];
  p->nout = red_outputs(r, p->fdim, p->k, p->out_dim, out_idx);
  for (int o = 0; o < p->nout; o++) p->out_dtype[o] = out_idx[o] ? KEOPS_INT64 : p->dtype;
  /* the Sum family is not weighted: f is F, and the axis swap keeps a Zero a Zero */
  p->zero = r->family == RF_SUM && dag_is_zero(p->d, p->f);
  p->state = (int)red_layout_doubles(r->fam->layout(p->fdim, p->k, p->scheme));
  if ((p->size = kg_size(p)) == INT64_MAX) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return -1;
  }
  p->weights = r->fam->weighted ? p->fdim - 1 : 0;
  p->red_width = 0;
  for (int pos = 0; pos < p->args.n; pos++) {
    int c = p->args.cat[pos];
    p->role[pos] = !p->args.dim[pos] ? FE_NONE : c == CAT_P ? FE_PARAM : (c == CAT_I) == (p->axis == 1) ? FE_ROW : FE_RED;
    if (p->role[pos] == FE_RED) p->red_width += p->args.dim[pos];
  }
  free(p->key);
  if (!(p->key = make_key(p))) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return -1;
  }
  return 0;
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

/* The key's layout, which fe_from_key reads back:
 *   <dag_serialize of f>|<reduction>|axis=A|k=K|dtype=T|scheme=S|dacc=D|fast=F|args=dim:cat,...
 * (no '|' in a serialized formula or a reduction name) */
static char *make_key(const fe_program *p) {
  char *f = dag_serialize(p->d, p->f);
  if (!f) return NULL;
  size_t cap = strlen(f) + 256 + (size_t)p->args.n * 24;
  char *key = malloc(cap);
  if (key) {
    int n = snprintf(key, cap, "%s|%s|axis=%d|k=%d|dtype=%d|scheme=%d|dacc=%d|fast=%d|args=", f,
                     p->red->name, p->axis, p->k, (int)p->dtype, (int)p->scheme, p->double_acc,
                     p->fast_math);
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
  p->axis = desc->axis == KEOPS_AXIS_J; /* KeOps's numbering: 1 reduces over j */
  p->dtype = desc->dtype;
  p->double_acc = red->fam->sum_type && desc->double_accumulator && desc->dtype == KEOPS_FLOAT32;
  p->fast_math = desc->fast_math && desc->dtype == KEOPS_FLOAT32; /* float64 ignores it: one key */
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
  if (check_positions(&p->args, e) || shape_formula(p, F, G, e)) goto fail;
  p->user_f = F;
  p->user_f2 = G;
  if (p->axis == 0) p->f = dag_swap_cats(p->d, p->f, axis_swap);
  if (!p->f || derive_facts(p, e)) goto fail;
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

/* ---- a program from its key ---------------------------------------------------------------- */

/* dag_deserialize interns nodes as written: each non-leaf is built again through dag_make in
 * a scratch dag, whose dim rules refuse what the builder would have (and the rewrites keep
 * dims, so the dims must agree). Var nodes must be the arguments', in the program's
 * orientation. */
static int check_formula(const fe_program *p, kerr *e) {
  const dag *d = p->d;
  uint32_t n = dag_count(d);
  uint32_t *map = calloc(n, sizeof *map);
  dag *s = dag_new();
  int rc = -1;
  if (!map || !s) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    goto out;
  }
  for (uint32_t id = 1; id < n; id++) {
    dag_node a = *dag_get(d, id);
    const int64_t *prm = dag_params(d, id);
    if (a.op == OP_Var) {
      int pos = (int)prm[0], cat = (int)prm[1];
      if (pos >= p->args.n || p->args.dim[pos] != a.dim ||
          cat != (p->axis == 1 ? p->args.cat[pos] : axis_swap[p->args.cat[pos]])) {
        kerr_set(e, KEOPS_ERROR_ARGUMENT,
                 "program key: Var(%d,%d,%d) of the formula is not an argument of the key", pos,
                 a.dim, cat);
        goto out;
      }
    }
    if (a.nk == 0) {
      map[id] = dag_intern(s, a.op, a.dim, NULL, 0, prm, a.np);
    } else {
      uint32_t k[DAG_MAX_KIDS];
      for (int c = 0; c < a.nk; c++) k[c] = map[a.k[c]];
      map[id] = dag_make(s, a.op, k, a.nk, prm, a.np);
      if (map[id] && dag_get(s, map[id])->dim != a.dim) {
        kerr_set(e, KEOPS_ERROR_ARGUMENT, "program key: %s has dim %d where its arguments give %d",
                 dag_ops[a.op].name, a.dim, dag_get(s, map[id])->dim);
        goto out;
      }
    }
    if (!map[id]) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "program key: %s", dag_err(s)->msg);
      goto out;
    }
  }
  rc = 0;
out:
  free(map);
  dag_free(s);
  return rc;
}

/* "name=<int>|" at *s, advancing past it (the last field ends at '\0' or "|"). */
static int key_int(const char **s, const char *name, int *v) {
  size_t n = strlen(name);
  if (strncmp(*s, name, n) != 0 || (*s)[n] != '=') return -1;
  char *end;
  long x = strtol(*s + n + 1, &end, 10);
  if (end == *s + n + 1 || (*end != '|' && *end) || x < INT32_MIN || x > INT32_MAX) return -1;
  *v = (int)x;
  *s = *end ? end + 1 : end;
  return 0;
}

static int key_fail(kerr *e, const char *what) {
  kerr_set(e, KEOPS_ERROR_ARGUMENT, "program key: %s", what);
  return -1;
}

/* Reads everything after the formula and checks it as fe_build's caller would have been
 * checked (check_desc), with the scheme and the accumulator as fe_build resolves them. */
static int read_options(fe_program *p, const char *s, kerr *e) {
  const char *bar = strchr(s, '|');
  if (!bar) return key_fail(e, "no reduction");
  char rname[64];
  if ((size_t)(bar - s) >= sizeof rname) return key_fail(e, "unknown reduction");
  memcpy(rname, s, (size_t)(bar - s));
  rname[bar - s] = '\0';
  s = bar + 1;
  int axis, k, dtype, scheme, dacc, fast;
  if (key_int(&s, "axis", &axis) || key_int(&s, "k", &k) || key_int(&s, "dtype", &dtype) ||
      key_int(&s, "scheme", &scheme) || key_int(&s, "dacc", &dacc) || key_int(&s, "fast", &fast))
    return key_fail(e, "expected axis=, k=, dtype=, scheme=, dacc=, fast= after the reduction");
  const red_row *red = red_find(rname);
  if (red && !red->fam->sum_type && scheme != KEOPS_SUM_DIRECT)
    return key_fail(e, "a scheme other than DIRECT for a reduction that is not a sum");
  if (red && red->fam->sum_type && scheme == KEOPS_SUM_AUTO)
    return key_fail(e, "an unresolved scheme (AUTO)");
  if (dacc != 0 && dacc != 1) return key_fail(e, "dacc must be 0 or 1");
  if (axis != 0 && axis != 1) return key_fail(e, "axis must be 0 or 1");
  keops_kernel_desc desc = {.formula = "", .reduction = rname,
                            .axis = axis ? KEOPS_AXIS_J : KEOPS_AXIS_I, .k = k,
                            .dtype = (keops_dtype)dtype,
                            .sum_scheme = red && red->fam->sum_type ? (keops_sum_scheme)scheme
                                                                    : KEOPS_SUM_AUTO,
                            .double_accumulator = dacc, .fast_math = fast};
  if (red && red->f2 == F2_REQ) desc.formula2 = "";
  if (check_desc(&desc, red, e)) return -1;
  if (dacc && !(red->fam->sum_type && dtype == KEOPS_FLOAT32))
    return key_fail(e, "dacc=1 outside float32 sums");
  if (fast && dtype != KEOPS_FLOAT32) return key_fail(e, "fast=1 outside float32");
  p->red = red;
  p->axis = axis;
  p->k = k;
  p->dtype = (keops_dtype)dtype;
  p->scheme = (keops_sum_scheme)scheme;
  p->double_acc = dacc;
  p->fast_math = fast;
  if (strncmp(s, "args=", 5) != 0) return key_fail(e, "expected args=");
  s += 5;
  for (int pos = 0; *s; pos++) {
    char *end;
    long dim = strtol(s, &end, 10), cat;
    if (end == s || *end != ':') return key_fail(e, "expected dim:cat, in args=");
    s = end + 1;
    cat = strtol(s, &end, 10);
    if (end == s || *end != ',') return key_fail(e, "expected dim:cat, in args=");
    s = end + 1;
    if (pos >= FE_MAX_ARGS || dim < 1 || dim > DAG_MAX_DIM || cat < CAT_I || cat > CAT_P)
      return key_fail(e, "an argument out of range in args=");
    if (fe_args_declare(&p->args, pos, (int)dim, (int)cat, NULL, 0, e)) return -1;
  }
  return 0;
}

fe_program *fe_from_key(const char *key, kerr *e) {
  if (!key) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "program key: NULL");
    return NULL;
  }
  fe_program *p = calloc(1, sizeof *p);
  if (!p || !(p->d = dag_new())) {
    free(p);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  const char *bar = strchr(key, '|');
  if (!bar) {
    key_fail(e, "no '|' after the formula");
    goto fail;
  }
  if (dag_deserialize(p->d, key, (size_t)(bar - key), &p->f)) {
    kerr_set(e, dag_err(p->d)->status, "program key: %s", dag_err(p->d)->msg);
    goto fail;
  }
  if (read_options(p, bar + 1, e) || check_formula(p, e)) goto fail;
  if (p->red->fam->weighted && dag_get(p->d, p->f)->dim < 2) {
    key_fail(e, "the formula of a weighted reduction has no weights");
    goto fail;
  }
  if (derive_facts(p, e)) goto fail;
  /* one program, one key: anything not written as make_key writes it (spaces, leading zeros,
   * records the formula does not use) is refused rather than given a second name */
  if (strcmp(p->key, key) != 0) {
    key_fail(e, "not in canonical form (it is not the key of the program it describes)");
    goto fail;
  }
  return p;
fail:
  fe_free(p);
  return NULL;
}
