/* The GPU code generator without a GPU: the PTX of every op row and every reduction row,
 * both dtypes, is generated and, when the CUDA toolkit's ptxas is present, assembled by it
 * for sm_80 and sm_90 (what the driver would otherwise reject at run time). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "testutil.h"

static const char *const ALIASES[] = {"x = Vi(3)", "y = Vj(3)", "a = Vj(1)", "p = Pm(1)",
                                      "A = Vi(6)", "B = Vj(6)", "s = Vi(9)"};
#define NALIASES (int)(sizeof ALIASES / sizeof *ALIASES)

/* Formulas for the rows that are not elementwise (each row's name appears in one). */
static const char *const OTHER[] = {
    "Sum(x)", "SumT(a,4)", "Scalprod(x,y)", "Max(x+y)", "Min(x-y)", "ArgMax(x*y)", "ArgMin(x)",
    "Elem(x+y,2)", "ElemT(a,3,1)*x", "Extract(A+B,1,3)", "ExtractT(x,2,6)+A", "Concat(x,y)",
    "OneHot(a*p,4)", "MatVecMult(s,y)", "VecMatMult(y,s)", "TensorProd(x,y)",
    "TensorDot(A,B,[2,3],[3,2],[1],[0])", "TensorDot(A,B,[2,3],[2,3],[0],[0],[1,0])",
    "SqNorm2(x-y)", "Norm2(x-y)", "Normalize(x-y)", "SqDist(x,y)", "SqNormIso(a,x)",
    "SqNormDiag(y,x)", "SymSqNorm(s,x)", "WeightedSqNorm(s,y)", "WeightedSqDist(y,x,y)",
    "Kron(x,y,[3],[3])", "IntCst(3)*x", "IntInv(3)*x", "Laplacian(Exp(-SqDist(x,y)),x)",
    "Var(0,3,0)+Zero(3)+RatCst(1,3)*y+0.1", "Grad(Exp(-SqDist(x,y))*a,x,a)",
    "Grad(Sin(x)*y,y)", "Diff(Exp(-SqDist(x,y)),x,y)", "GradMatrix(Sin(x*y),x)",
    "Divergence(Sin(x*y),x)",
    /* complex (A, B: 3 complex numbers each) */
    "ComplexReal(A+B)*ComplexImag(A-B)", "Real2Complex(x)+Imag2Complex(y)",
    "Conj(A)+ComplexExp(B)+ComplexExp1j(x)", "ComplexAbs(A)+ComplexSquareAbs(B)+ComplexAngle(A-B)",
    "ComplexSumT(ComplexSum(A),3)+ComplexAdd(A,B)-ComplexSubtract(B,A)",
    "ComplexMult(A,B)+ComplexDivide(A,B)+ComplexRealScal(a,B)"};

/* Integer parameters of the elementwise rows that take some. */
static const char *ew_params(const char *op) {
  if (!strcmp(op, "Pow")) return ",3";
  if (!strcmp(op, "Round")) return ",2";
  if (!strcmp(op, "ClampInt")) return ",-1,2";
  return "";
}

static const char *const REDUCTIONS[] = {
#define X(name, family, dir, outputs, f2, weight1, fin) #name,
#include "reductions.def"
#undef X
};

static char ptxas[512];

static void find_ptxas(void) {
  const char *env = getenv("KEOPS_PTXAS");
  if (env && *env && access(env, X_OK) == 0) {
    snprintf(ptxas, sizeof ptxas, "%s", env);
    return;
  }
  const char *path = getenv("PATH");
  char dirs[4096];
  snprintf(dirs, sizeof dirs, "%s:/usr/local/cuda/bin", path ? path : "");
  for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(ptxas, sizeof ptxas, "%s/ptxas", d);
    if (access(ptxas, X_OK) == 0) return;
  }
  ptxas[0] = 0;
}

static int kmin_k = 3; /* K of K-min reductions: 3 unrolls the insertion, 40 keeps heaps */

/* Builds (formula, reduction, axis, dtype), emits PTX for sm, and assembles it. */
static void check_one(const char *formula, const char *reduction, const char *f2, int axis,
                      keops_dtype dt, const char *sm) {
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = formula;
  d.aliases = ALIASES;
  d.n_aliases = NALIASES;
  d.reduction = reduction;
  d.formula2 = f2;
  d.axis = tu_axis(axis);
  d.dtype = dt;
  d.k = strstr(reduction, "KMin") ? kmin_k : 0;
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&d, &e);
  ck_assert_msg(p, "%s / %s: %s", formula, reduction, e.msg);
  kt_target t;
  kt_set(&t, &kt_nvptx, sm, "+ptx80");
  size_t len;
  char *ptx = kt_compile(p, &t, "keops_kernel", KC_ASM, &len, &e);
  ck_assert_msg(ptx, "%s / %s (%s, dtype %d): %s", formula, reduction, sm, (int)dt, e.msg);
  ck_assert_msg(strstr(ptx, ".entry keops_kernel"), "%s: no kernel entry in the PTX", formula);
  ck_assert_msg(!strstr(ptx, ".extern .func"), "%s: the PTX calls an external function", formula);
  if (ptxas[0]) {
    char path[] = "/tmp/keops_ptx_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs(ptx, f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -arch=%s -o /dev/null '%s' 2>&1", ptxas, sm, path);
    FILE *pp = popen(cmd, "r");
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof out - 1, pp);
    out[n] = 0;
    int rc = pclose(pp);
    unlink(path);
    ck_assert_msg(rc == 0, "ptxas -arch=%s rejects %s / %s (dtype %d): %s", sm, formula, reduction,
                  (int)dt, out);
  }
  free(ptx);
  fe_free(p);
}

static const char *const ARCHS[] = {"sm_80", "sm_90"};

/* _i: the op row. */
START_TEST(every_op_row) {
  const dag_opinfo *op = &dag_ops[_i];
  char text[256];
  if (!op->sig || op->kind == K_LF) return; /* leaves are in OTHER */
  if (op->kind == K_EW) {
    static const char *const argv[] = {"x", "y", "a"};
    int n = 0;
    int len = snprintf(text, sizeof text, "%s(", op->name);
    for (const char *s = op->sig; *s; s++)
      if (*s == 'f') len += snprintf(text + len, sizeof text - (size_t)len, "%s%s", n ? "," : "", argv[n]), n++;
    snprintf(text + len, sizeof text - (size_t)len, "%s)", ew_params(op->name));
  } else {
    const char *found = NULL;
    char call[64];
    snprintf(call, sizeof call, "%s(", op->name);
    for (size_t k = 0; k < sizeof OTHER / sizeof *OTHER && !found; k++)
      if (strstr(OTHER[k], call)) found = OTHER[k];
    ck_assert_msg(found, "no formula covers the row %s", op->name);
    snprintf(text, sizeof text, "%s", found);
  }
  for (int dt = 0; dt < 2; dt++)
    for (int a = 0; a < 2; a++) check_one(text, "Sum", NULL, (_i + dt) & 1, (keops_dtype)dt, ARCHS[a]);
}
END_TEST

START_TEST(every_reduction_row) {
  const char *r = REDUCTIONS[_i];
  int lse = strstr(r, "Exp") || strstr(r, "SoftMax") || !strcmp(r, "SoftMax");
  const char *f = lse ? "-SqDist(x,y)" : "SqDist(x,y)+Abs(x-y)";
  const char *red = red_find(r)->f2 != F2_NO ? "x-y" : NULL;
  if (lse && red_find(r)->f2 == F2_NO) red = NULL;
  for (kmin_k = 3; kmin_k <= (strstr(r, "KMin") ? 40 : 3); kmin_k += 37)
    for (int dt = 0; dt < 2; dt++)
      for (int axis = 0; axis < 2; axis++)
        for (int a = 0; a < 2; a++) check_one(f, r, red, axis, (keops_dtype)dt, ARCHS[a]);
  kmin_k = 3;
}
END_TEST

/* The kernel reads the j-variables from the shared tile and declares its launch bound. */
START_TEST(kernel_shape) {
  keops_kernel_desc d = keops_kernel_desc_init();
  static const char *const al[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"};
  d.formula = "Exp(-g*SqDist(x,y))*b";
  d.aliases = al;
  d.n_aliases = 4;
  d.axis = KEOPS_AXIS_J;
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&d, &e);
  ck_assert_int_eq(p->red_width, 4);
  kt_target t, bad;
  kt_set(&t, &kt_nvptx, "sm_90", "+ptx80");
  size_t len;
  char *ptx = kt_compile(p, &t, "k", KC_ASM, &len, &e);
  /* LLVM 19 writes ".maxntid 256, 1, 1", LLVM 22 ".maxntid 256" */
  const char *bound = strstr(ptx, ".maxntid 256");
  ck_assert_msg(bound && (bound[12] == ',' || bound[12] == '\n'), "no launch bound of 256 in the PTX");
  ck_assert_ptr_nonnull(strstr(ptx, "ld.shared"));
  ck_assert_ptr_nonnull(strstr(ptx, "bar.sync"));
  free(ptx);
  /* an architecture LLVM does not know is an error, not a crash */
  kt_set(&bad, &kt_nvptx, "sm_1", "+ptx80");
  kerr_clear(&e);
  ck_assert_ptr_null(kt_compile(p, &bad, "k", KC_ASM, &len, &e));
  ck_assert_int_eq(e.status, KEOPS_ERROR_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(e.msg, "sm_1"));
  fe_free(p);
}
END_TEST

int main(void) {
  find_ptxas();
  if (ptxas[0])
    printf("test_gpu_ptx: validating with %s\n", ptxas);
  else
    printf("test_gpu_ptx: no ptxas found (PATH, /usr/local/cuda/bin, KEOPS_PTXAS): PTX is "
           "generated and checked for structure only\n");
  Suite *s = suite_create("gpu_ptx");
  TCase *t = tcase_create("ptx");
  tcase_set_timeout(t, 600);
  tcase_add_loop_test(t, every_op_row, 0, OP_COUNT);
  tcase_add_loop_test(t, every_reduction_row, 0, (int)(sizeof REDUCTIONS / sizeof *REDUCTIONS));
  tcase_add_test(t, kernel_shape);
  suite_add_tcase(s, t);
  int failed = tu_run(s, 1);
  return failed ? 1 : 0;
}
