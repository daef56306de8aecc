/* Programs rebuilt from their keys (fe_from_key, dag_deserialize): what a fake CUDA driver
 * does with the key nvptx.c writes into the PTX. For every case of the op matrix and of the
 * reduction matrix (tests/matrix.c), key -> fe_from_key -> key is the identity, the rebuilt
 * program equals the original in every field code generation reads, and the reference
 * interpreter run on the rebuilt program gives the original's outputs (the matrix's runner).
 * Keys that are not a program's key are refused with a message, never a crash. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matrix.h"
#include "testutil.h"

static keops_context *ctx;
static int n_op_cases, n_rcfgs;
static rcfg rcfgs[MAXRCFG];

static void same_program(const fe_program *a, const fe_program *b, const char *what) {
  ck_assert_msg(!strcmp(a->key, b->key), "%s: key\n%s\nbecomes\n%s", what, a->key, b->key);
  ck_assert_msg(a->fdim == b->fdim && a->red == b->red && a->k == b->k && a->axis == b->axis &&
                    a->dtype == b->dtype && a->scheme == b->scheme &&
                    a->double_acc == b->double_acc && a->fast_math == b->fast_math && a->zero == b->zero,
                "%s: options differ", what);
  ck_assert_msg(a->nout == b->nout && a->red_width == b->red_width && a->state == b->state &&
                    a->weights == b->weights,
                "%s: derived facts differ", what);
  for (int o = 0; o < a->nout; o++)
    ck_assert_msg(a->out_dim[o] == b->out_dim[o] && a->out_dtype[o] == b->out_dtype[o],
                  "%s: output %d differs", what, o);
  ck_assert_int_eq(a->args.n, b->args.n);
  for (int pos = 0; pos < a->args.n; pos++)
    ck_assert_msg(a->args.dim[pos] == b->args.dim[pos] && a->args.cat[pos] == b->args.cat[pos] &&
                      a->role[pos] == b->role[pos],
                  "%s: argument %d differs", what, pos);
  /* the formulas: equal serializations are equal DAGs (dag_serialize is canonical) */
  char *fa = dag_serialize(a->d, a->f), *fb = dag_serialize(b->d, b->f);
  ck_assert_msg(fa && fb && !strcmp(fa, fb), "%s: formula differs", what);
  free(fa), free(fb);
}

/* The matrix runner: the round trip, then the reference interpreter on the rebuilt program
 * into out[0], which the matrix compares with the original's reference run. */
static void key_run(prob *P, int how) {
  (void)how;
  kerr e;
  kerr_clear(&e);
  fe_program *q = fe_from_key(P->p->key, &e);
  ck_assert_msg(q, "%s: fe_from_key failed: %s\nkey: %s", P->what, e.msg, P->p->key);
  same_program(P->p, q, P->what);
  ck_assert_msg(interp_run(q, P->M, P->N, (const void *const *)P->arr, P->out[0], NULL, &e) == KEOPS_OK,
                "%s: interp_run of the rebuilt program: %s", P->what, e.msg);
  fe_free(q);
}

START_TEST(op_matrix) {
  mx_op_case(ctx, &mx_op_cases[_i / 2], (_i / 2) % 2, mx_dtype_of(_i % 2), 300 + (uint64_t)_i,
             key_run, 0, ", rebuilt from its key");
}
END_TEST

START_TEST(every_op_row_exercised) {
  ck_assert_msg(n_op_cases > 0, "an EW signature the generator cannot handle, or MAXOPCASES");
  mx_check_every_op_row();
}
END_TEST

START_TEST(reduction_matrix) {
  mx_red_case(ctx, &rcfgs[_i], 13, 21, 7000 + (uint64_t)_i, key_run, 0, ", rebuilt from its key");
}
END_TEST

START_TEST(every_reduction_row_exercised) { mx_check_every_reduction_row(n_rcfgs); }
END_TEST

/* A program's key with one edit, refused with a message (ASan catches a bad read). */
static const char *const good_aliases[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(2)", "p = Pm(1)"};

static fe_program *good(void) {
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-p*SqDist(x,y))*b + Sum(x)", .aliases = good_aliases,
                         .n_aliases = 4, .reduction = "Sum", .axis = KEOPS_AXIS_I};
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&d, &e);
  ck_assert_msg(p, "%s", e.msg);
  return p;
}

static void refused(const char *key, const char *want) {
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_from_key(key, &e);
  ck_assert_msg(!p, "accepted: %s", key);
  ck_assert_msg(e.status != KEOPS_OK && e.msg[0], "no message for %s", key);
  ck_assert_msg(!want || strstr(e.msg, want), "key %s\nmessage: %s\nwanted: %s", key, e.msg, want);
}

/* key with the first occurrence of `from` replaced by `to` */
static char *edit(const char *key, const char *from, const char *to) {
  const char *at = strstr(key, from);
  ck_assert_msg(at, "'%s' not in %s", from, key);
  size_t n = strlen(key) + strlen(to) + 1;
  char *s = malloc(n);
  snprintf(s, n, "%.*s%s%s", (int)(at - key), key, to, at + strlen(from));
  return s;
}

START_TEST(bad_keys) {
  fe_program *p = good();
  refused(NULL, "NULL");
  refused("", NULL);
  refused("|Sum|axis=0", NULL);
  refused("Var:3 0 0;", "no '|'");
  static const struct {
    const char *from, *to, *want;
  } edits[] = {
      {"Var:", "Vxr:", "unknown operation"},
      {"Var:", "Grad:", "never a node"},
      {"Var:3", "Var:0", "out of range"},
      {"Var:3", "Var:-3", "out of range"},
      {"Var:3", "Var:03", "integer"},
      {"Var:3", "Var:99999999999999999999", "out of range"},
      {"@1", "@0", "earlier record"},
      {"@1", "@999", "earlier record"},
      {"@1", "@-1", "earlier record"},
      {";", "", NULL},
      {";", " ;", NULL},
      {"Var:3 0", "Var:3 @1 0", "takes no children"},
      {"Var:3 0 1", "Var:3 0 7", "category"},
      {"Var:3 0 1", "Var:4 0 1", NULL},
      {"|Sum|", "|Summ|", "unknown reduction"},
      {"|Sum|", "|KMin|", NULL},
      {"axis=0", "axis=2", "axis"},
      {"axis=0", "axis=1", NULL},
      {"axis=0", "axes=0", "expected axis="},
      {"dtype=0", "dtype=9", "dtype"},
      {"scheme=2", "scheme=7", "scheme"},
      {"scheme=2", "scheme=0", "AUTO"},
      {"dacc=0", "dacc=3", "dacc"},
      {"fast=0", "fast=2", "fast_math"},
      {"fast=0", "fst=0", "fast="},
      {"k=0", "k=5", "K"},
      {"args=", "args=3:9,", NULL},
      {"args=", "argz=", "args="},
      {"args=3:0,", "args=3:0", "dim:cat"},
      {"args=3:0,", "args=4:0,", NULL},
      {"args=3:0,", "args=0:0,", NULL},
  };
  for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
    char *k = edit(p->key, edits[i].from, edits[i].to);
    refused(k, edits[i].want);
    free(k);
  }
  /* an extra record the formula does not use, trailing text */
  size_t n = strlen(p->key) + 40;
  char *k = malloc(n);
  char *xk = edit(p->key, "Add:2 @11 @12;", "Zero:1;Add:2 @11 @12;");
  refused(xk, "canonical");
  free(xk);
  snprintf(k, n, "%sx", p->key);
  refused(k, NULL);
  /* every prefix: truncated keys never crash */
  for (size_t cut = 0; cut < strlen(p->key); cut++) {
    snprintf(k, n, "%.*s", (int)cut, p->key);
    refused(k, NULL);
  }
  free(k);
  /* a dim that the dim rules do not give */
  char *dk = edit(p->key, "Sum:1 @5", "Sum:2 @5");
  refused(dk, NULL);
  free(dk);
  /* fast_math = 1 is in the key, and comes back from it */
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-p*SqDist(x,y))*b", .aliases = good_aliases, .n_aliases = 4,
                         .axis = KEOPS_AXIS_J, .fast_math = 1};
  kerr e;
  kerr_clear(&e);
  fe_program *f = fe_build(&d, &e), *g = f ? fe_from_key(f->key, &e) : NULL;
  ck_assert_msg(f && g && strstr(f->key, "|fast=1|"), "%s", e.msg);
  same_program(f, g, "fast_math");
  fe_free(f), fe_free(g);
  /* float64 ignores it, so its key does not name it: one kernel, and fast=1 there is refused */
  d.dtype = KEOPS_FLOAT64;
  f = fe_build(&d, &e);
  ck_assert_msg(f && strstr(f->key, "|fast=0|"), "%s", e.msg);
  char *fk = edit(f->key, "|fast=0|", "|fast=1|");
  refused(fk, "fast=1 outside float32");
  free(fk);
  fe_free(f);
  fe_free(p);
}
END_TEST

/* Random edits of keys (a byte replaced, inserted or deleted, digits and separators favoured):
 * each is refused with a message, or is itself a canonical key (the round trip is exact). No
 * crash, no read out of bounds (ASan build). */
START_TEST(mutated_keys) {
  static const char *const al[] = {"x = Vi(2)", "y = Vj(2)", "w = Vj(1)"};
  static const char *const reds[] = {"Sum", "ArgKMin", "LogSumExp", "Max_ArgMax"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Sin(x-y)*Exp(-Square(x|y))", .aliases = al, .n_aliases = 3,
                         .reduction = reds[_i % 4], .axis = tu_axis(_i % 2),
                         .k = _i % 4 == 1 ? 3 : 0, .formula2 = _i % 4 == 2 ? "w" : NULL};
  if (_i % 4 == 2) d.formula = "(x|y)";
  if (_i % 4 == 3) d.formula = "TensorDot(x, y, [2], [2], [0], [0])";
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&d, &e);
  ck_assert_msg(p, "%s", e.msg);
  tu_rng r = tu_seed(1000 + (uint64_t)_i);
  static const char alphabet[] = "0123456789:;@| -=,abcdegkmrsxSVZ";
  size_t n = strlen(p->key);
  char *k = malloc(n + 2);
  int accepted = 0;
  for (int t = 0; t < 3000; t++) {
    size_t at = (size_t)tu_uniform(&r, 0, (double)n - 1e-9);
    char c = alphabet[(int)tu_uniform(&r, 0, sizeof alphabet - 1 - 1e-9)];
    int how = (int)tu_uniform(&r, 0, 3 - 1e-9);
    if (how == 0) { /* replace */
      memcpy(k, p->key, n + 1);
      k[at] = c;
    } else if (how == 1) { /* insert */
      memcpy(k, p->key, at);
      k[at] = c;
      memcpy(k + at + 1, p->key + at, n - at + 1);
    } else { /* delete */
      memcpy(k, p->key, at);
      memcpy(k + at, p->key + at + 1, n - at);
    }
    kerr_clear(&e);
    fe_program *q = fe_from_key(k, &e);
    if (q) {
      ck_assert_str_eq(q->key, k);
      accepted++;
      fe_free(q);
    } else {
      ck_assert_msg(e.status != KEOPS_OK && e.msg[0], "no message for %s", k);
    }
  }
  (void)accepted; /* a few edits give another valid program (a dim, a constant) */
  free(k);
  fe_free(p);
}
END_TEST

/* dag_deserialize alone: every serialization of a built DAG reads back to the same node */
START_TEST(deserialize_roundtrip) {
  fe_program *p = good();
  char *s = dag_serialize(p->d, p->f);
  dag *d = dag_new();
  uint32_t root;
  ck_assert_int_eq(dag_deserialize(d, s, strlen(s), &root), 0);
  char *t = dag_serialize(d, root);
  ck_assert_str_eq(s, t);
  /* into the same dag: interning gives the very node back */
  uint32_t again;
  ck_assert_int_eq(dag_deserialize(p->d, s, strlen(s), &again), 0);
  ck_assert_uint_eq(again, p->f);
  free(s), free(t);
  dag_free(d);
  fe_free(p);
}
END_TEST

int main(void) {
  if (keops_context_create(&ctx) != KEOPS_OK) {
    fprintf(stderr, "test_fekey: no context: %s\n", keops_last_error());
    return 1;
  }
  mx_backend = "reference rebuilt from the key";
  n_op_cases = mx_build_op_cases(MX_CPU);
  n_rcfgs = mx_build_rcfgs(rcfgs, MAXRCFG);
  Suite *s = suite_create("fekey");
  TCase *tc = tcase_create("keys");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, deserialize_roundtrip);
  tcase_add_test(tc, bad_keys);
  tcase_add_loop_test(tc, mutated_keys, 0, 8);
  tcase_add_loop_test(tc, op_matrix, 0, n_op_cases > 0 ? 2 * n_op_cases : 0);
  tcase_add_test(tc, every_op_row_exercised);
  tcase_add_loop_test(tc, reduction_matrix, 0, n_rcfgs > 0 ? n_rcfgs : 0);
  tcase_add_test(tc, every_reduction_row_exercised);
  suite_add_tcase(s, tc);
  int failed = tu_run(s, 0);
  keops_context_destroy(ctx);
  return failed ? 1 : 0;
}
