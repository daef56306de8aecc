/* DAG -> LLVM IR values (see lower.h). An EW row whose value is a vmath function says so in
 * ops.def (its vm column); every other EW row has a case in lw_ew, which a test compiling
 * every row checks. An ST row is lowered by its st_lower_<Name>: without one, no build. */
#include "lower.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vmath.h"

#define B (L->bld)
/* Formula arithmetic may be contracted into FMAs (more accurate, and half the work of
 * sums of products); vmath's internals and the Kahan sum are built without the flag. */
#define C_FAdd(a, b, n) lw_contract(LLVMBuildFAdd(B, a, b, n))
#define C_FSub(a, b, n) lw_contract(LLVMBuildFSub(B, a, b, n))
#define C_FMul(a, b, n) lw_contract(LLVMBuildFMul(B, a, b, n))

static LLVMTypeRef ty(lw *L, int vec) { return vec ? L->VT : L->T; }

LLVMValueRef lw_const(lw *L, double v, int vec) {
  LLVMValueRef s = LLVMConstReal(L->T, v);
  if (!vec || L->W == 1) return s;
  LLVMValueRef e[64];
  for (int l = 0; l < L->W; l++) e[l] = s;
  return LLVMConstVector(e, (unsigned)L->W);
}

LLVMValueRef lw_splat(lw *L, LLVMValueRef s) {
  if (L->W == 1) return s;
  LLVMValueRef v = LLVMBuildInsertElement(B, LLVMGetUndef(L->VT), s,
                                          LLVMConstInt(LLVMInt32TypeInContext(L->C), 0, 0), "");
  LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(LLVMInt32TypeInContext(L->C), (unsigned)L->W));
  return LLVMBuildShuffleVector(B, v, LLVMGetUndef(L->VT), zeros, "");
}

LLVMValueRef lw_intrinsic(lw *L, const char *name, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef t = LLVMTypeOf(args[0]);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(L->M, id, &t, 1);
  LLVMTypeRef fty = LLVMIntrinsicGetType(L->C, id, &t, 1);
  return LLVMBuildCall2(B, fty, fn, args, (unsigned)n, "");
}

static int is_fabs(LLVMValueRef v) {
  LLVMValueRef fn = LLVMIsACallInst(v) ? LLVMGetCalledValue(v) : NULL;
  size_t n;
  return fn && !strncmp(LLVMGetValueName2(fn, &n), "llvm.fabs.", 10);
}

/* fcmp, except that |v| against +0 is compared as v: LLVM 19's fcmpImpliesClass reads
 * `fcmp P fabs(v), 0` as a fact about v's sign (llvm #152824, fixed in 22), so a select
 * with v as an arm loses its sign: Log(IfElse(Abs(x),x,1.5)) dropped Log's x < 0 -> NaN
 * case. P' below is the predicate with v P' 0 == |v| P 0. */
static LLVMValueRef lw_fcmp(lw *L, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  static const LLVMRealPredicate swapped[16] = {
      [LLVMRealOGT] = LLVMRealOLT, [LLVMRealOGE] = LLVMRealOLE, [LLVMRealOLT] = LLVMRealOGT,
      [LLVMRealOLE] = LLVMRealOGE, [LLVMRealUGT] = LLVMRealULT, [LLVMRealUGE] = LLVMRealULE,
      [LLVMRealULT] = LLVMRealUGT, [LLVMRealULE] = LLVMRealUGE};
  static const LLVMRealPredicate of_abs[16] = {
      [LLVMRealOEQ] = LLVMRealOEQ, [LLVMRealOGT] = LLVMRealONE, [LLVMRealOGE] = LLVMRealORD,
      [LLVMRealOLT] = LLVMRealPredicateFalse, [LLVMRealOLE] = LLVMRealOEQ,
      [LLVMRealONE] = LLVMRealONE, [LLVMRealORD] = LLVMRealORD, [LLVMRealUNO] = LLVMRealUNO,
      [LLVMRealUEQ] = LLVMRealUEQ, [LLVMRealUGT] = LLVMRealUNE, [LLVMRealUGE] = LLVMRealPredicateTrue,
      [LLVMRealULT] = LLVMRealUNO, [LLVMRealULE] = LLVMRealUEQ, [LLVMRealUNE] = LLVMRealUNE,
      [LLVMRealPredicateTrue] = LLVMRealPredicateTrue};
  if (LLVMIsNull(a) && is_fabs(b)) {
    LLVMValueRef t = a;
    a = b, b = t;
    if (swapped[p]) p = swapped[p];
  }
  if (LLVMIsNull(b) && is_fabs(a)) p = of_abs[p], a = LLVMGetOperand(a, 0);
  return LLVMBuildFCmp(B, p, a, b, "");
}

LLVMValueRef lw_select_cmp(lw *L, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b,
                           LLVMValueRef t, LLVMValueRef f) {
  return LLVMBuildSelect(B, lw_fcmp(L, p, a, b), t, f, "");
}

LLVMValueRef lw_contract(LLVMValueRef v) {
  if (LLVMIsAInstruction(v)) LLVMSetFastMathFlags(v, LLVMFastMathAllowContract);
  return v;
}

static LLVMValueRef fmuladd(lw *L, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return lw_intrinsic(L, "llvm.fmuladd", args, 3);
}

/* Bool as 1.0 / 0.0. */
static LLVMValueRef cmp01(lw *L, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b, int vec) {
  return lw_select_cmp(L, p, a, b, lw_const(L, 1, vec), lw_const(L, 0, vec));
}

/* x^n by binary powering (exact for small n, a few ulp otherwise). */
static LLVMValueRef ipow(lw *L, LLVMValueRef x, int64_t n, int vec) {
  uint64_t e = n < 0 ? -(uint64_t)n : (uint64_t)n;
  LLVMValueRef r = NULL, p = x;
  while (e) {
    if (e & 1) r = r ? LLVMBuildFMul(B, r, p, "") : p;
    e >>= 1;
    if (e) p = LLVMBuildFMul(B, p, p, "");
  }
  if (!r) r = lw_const(L, 1, vec);
  return n < 0 ? LLVMBuildFDiv(B, lw_const(L, 1, vec), r, "") : r;
}

static LLVMValueRef vm1(lw *L, vm_fn f, LLVMValueRef x) { return vm_call(L->M, B, f, x, NULL); }

/* ops.def's vm column: the vmath function that is the whole value of an EW row. */
#define VM_NONE VM_COUNT
static const vm_fn EW_VM[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) [OP_##name] = VM_##vm,
#include "ops.def"
#undef X
};
#undef VM_NONE

/* One component of an elementwise op. */
static LLVMValueRef lw_ew(lw *L, int op, LLVMValueRef x, LLVMValueRef y, LLVMValueRef z,
                          const int64_t *p, int vec) {
  if (EW_VM[op] != VM_COUNT) return vm_call(L->M, B, EW_VM[op], x, y);
  LLVMValueRef zero = lw_const(L, 0, vec), one = lw_const(L, 1, vec);
  switch (op) {
  case OP_Add: return C_FAdd(x, y, "");
  case OP_Subtract: return C_FSub(x, y, "");
  case OP_Mult: return C_FMul(x, y, "");
  case OP_Minus: return LLVMBuildFNeg(B, x, "");
  case OP_Square: return C_FMul(x, x, "");
  case OP_Pow: return ipow(L, x, p[0], vec);
  case OP_Abs: return lw_intrinsic(L, "llvm.fabs", &x, 1);
  case OP_Sign:
    return lw_select_cmp(L, LLVMRealOGT, x, zero, one,
                         lw_select_cmp(L, LLVMRealOLT, x, zero, lw_const(L, -1, vec), zero));
  case OP_Step: return lw_select_cmp(L, LLVMRealOLT, x, zero, zero, one);
  case OP_ReLU: return lw_select_cmp(L, LLVMRealOLT, x, zero, zero, x);
  case OP_XLogX:
    return lw_select_cmp(L, LLVMRealOEQ, x, zero, zero, C_FMul(x, vm1(L, VM_LOG, x), ""));
  case OP_SinXDivX:
    return lw_select_cmp(L, LLVMRealOEQ, x, zero, one, LLVMBuildFDiv(B, vm1(L, VM_SIN, x), x, ""));
  case OP_Round: {
    if (p[0] == 0) return vm1(L, VM_ROUND, x);
    LLVMValueRef s = lw_const(L, pow(10.0, (double)p[0]), vec);
    return LLVMBuildFDiv(B, vm1(L, VM_ROUND, C_FMul(x, s, "")), s, "");
  }
  case OP_Mod: /* x - y * floor((x - z) / y) */
    return LLVMBuildFSub(
        B, x, C_FMul(y, vm1(L, VM_FLOOR, LLVMBuildFDiv(B, C_FSub(x, z, ""), y, "")), ""),
        "");
  case OP_Clamp:
    return lw_select_cmp(L, LLVMRealOLT, x, y, y, lw_select_cmp(L, LLVMRealOGT, x, z, z, x));
  case OP_ClampInt: {
    LLVMValueRef lo = lw_const(L, (double)p[0], vec), hi = lw_const(L, (double)p[1], vec);
    return lw_select_cmp(L, LLVMRealOLT, x, lo, lo, lw_select_cmp(L, LLVMRealOGT, x, hi, hi, x));
  }
  case OP_IfElse: return lw_select_cmp(L, LLVMRealOGE, x, zero, y, z);
  case OP_Equal: return cmp01(L, LLVMRealOEQ, x, y, vec);
  case OP_NotEqual: return cmp01(L, LLVMRealUNE, x, y, vec);
  case OP_LessThan: return cmp01(L, LLVMRealOLT, x, y, vec);
  case OP_LessOrEqual: return cmp01(L, LLVMRealOLE, x, y, vec);
  default:
    kerr_set(L->err, KEOPS_ERROR_COMPILE, "internal error: no lowering for %s", dag_ops[op].name);
    return LLVMGetUndef(ty(L, vec));
  }
}

/* Structural ops, one function per ops.def row, on whole component arrays: child c's kd[c]
 * values are k[c]; out gets the node's n->dim. */
typedef struct st_in {
  const dag_node *n;
  const int64_t *p; /* the node's integer parameters */
  LLVMValueRef **k;
  const int *kd;
  int vec; /* values are vectors (else scalars) */
} st_in;
typedef void st_lower_fn(lw *L, const st_in *x, LLVMValueRef *out);

static void st_lower_Sum(lw *L, const st_in *x, LLVMValueRef *out) {
  LLVMValueRef acc = x->k[0][0];
  for (int q = 1; q < x->kd[0]; q++) acc = C_FAdd(acc, x->k[0][q], "");
  out[0] = acc;
}

static void st_lower_SumT(lw *L, const st_in *x, LLVMValueRef *out) {
  (void)L;
  for (int q = 0; q < x->n->dim; q++) out[q] = x->k[0][0];
}

static void st_lower_Scalprod(lw *L, const st_in *x, LLVMValueRef *out) {
  LLVMValueRef *a = x->k[0], *b = x->k[1], acc = C_FMul(a[0], b[0], "");
  for (int q = 1; q < x->kd[0]; q++) acc = fmuladd(L, a[q], b[q], acc);
  out[0] = acc;
}

/* Max, Min, ArgMax, ArgMin: the first extreme component wins ties; NaN never wins (as the
 * interpreter). */
#define st_lower_Max lower_extreme
#define st_lower_Min lower_extreme
#define st_lower_ArgMax lower_extreme
#define st_lower_ArgMin lower_extreme
static void lower_extreme(lw *L, const st_in *x, LLVMValueRef *out) {
  int op = x->n->op;
  LLVMRealPredicate pr = op == OP_Max || op == OP_ArgMax ? LLVMRealOGT : LLVMRealOLT;
  LLVMValueRef *a = x->k[0], best = a[0], arg = lw_const(L, 0, x->vec);
  for (int q = 1; q < x->kd[0]; q++) {
    LLVMValueRef c = LLVMBuildFCmp(B, pr, a[q], best, "");
    best = LLVMBuildSelect(B, c, a[q], best, "");
    arg = LLVMBuildSelect(B, c, lw_const(L, q, x->vec), arg, "");
  }
  out[0] = op == OP_Max || op == OP_Min ? best : arg;
}

static void st_lower_Elem(lw *L, const st_in *x, LLVMValueRef *out) {
  (void)L;
  out[0] = x->k[0][x->p[0]];
}

static void st_lower_ElemT(lw *L, const st_in *x, LLVMValueRef *out) {
  LLVMValueRef zero = lw_const(L, 0, x->vec);
  for (int q = 0; q < x->n->dim; q++) out[q] = q == x->p[1] ? x->k[0][0] : zero;
}

static void st_lower_Extract(lw *L, const st_in *x, LLVMValueRef *out) {
  (void)L;
  for (int q = 0; q < x->n->dim; q++) out[q] = x->k[0][x->p[0] + q];
}

static void st_lower_ExtractT(lw *L, const st_in *x, LLVMValueRef *out) {
  LLVMValueRef zero = lw_const(L, 0, x->vec);
  int64_t s = x->p[0];
  for (int q = 0; q < x->n->dim; q++) out[q] = q >= s && q < s + x->kd[0] ? x->k[0][q - s] : zero;
}

static void st_lower_ComplexReal(lw *L, const st_in *x, LLVMValueRef *out) {
  (void)L;
  for (int q = 0; q < x->n->dim; q++) out[q] = x->k[0][2 * q + (x->n->op == OP_ComplexImag)];
}
#define st_lower_ComplexImag st_lower_ComplexReal

static void st_lower_Real2Complex(lw *L, const st_in *x, LLVMValueRef *out) {
  LLVMValueRef zero = lw_const(L, 0, x->vec);
  int im = x->n->op == OP_Imag2Complex;
  for (int q = 0; q < x->kd[0]; q++) out[2 * q + im] = x->k[0][q], out[2 * q + !im] = zero;
}
#define st_lower_Imag2Complex st_lower_Real2Complex

static void st_lower_Concat(lw *L, const st_in *x, LLVMValueRef *out) {
  (void)L;
  int d0 = x->kd[0];
  for (int q = 0; q < x->n->dim; q++) out[q] = q < d0 ? x->k[0][q] : x->k[1][q - d0];
}

static void st_lower_OneHot(lw *L, const st_in *x, LLVMValueRef *out) {
  int vec = x->vec;
  LLVMValueRef r = vm1(L, VM_FLOOR, C_FAdd(x->k[0][0], lw_const(L, 0.5, vec), ""));
  for (int q = 0; q < x->n->dim; q++) out[q] = cmp01(L, LLVMRealOEQ, r, lw_const(L, q, vec), vec);
}

/* MatVecMult(A, v): row q of A (dim x p) times v; VecMatMult(v, A): v times column q of A
 * (p x dim). */
#define st_lower_MatVecMult lower_matvec
#define st_lower_VecMatMult lower_matvec
static void lower_matvec(lw *L, const st_in *x, LLVMValueRef *out) {
  int mv = x->n->op == OP_MatVecMult, dim = x->n->dim;
  LLVMValueRef *m = mv ? x->k[0] : x->k[1], *v = mv ? x->k[1] : x->k[0];
  int pdim = mv ? x->kd[1] : x->kd[0];
  for (int q = 0; q < dim; q++) {
    LLVMValueRef acc = NULL;
    for (int c = 0; c < pdim; c++) {
      LLVMValueRef a = m[mv ? q * pdim + c : c * dim + q];
      acc = acc ? fmuladd(L, a, v[c], acc) : C_FMul(a, v[c], "");
    }
    out[q] = acc;
  }
}

static void st_lower_TensorProd(lw *L, const st_in *x, LLVMValueRef *out) {
  for (int a = 0; a < x->kd[0]; a++)
    for (int b = 0; b < x->kd[1]; b++) out[a * x->kd[1] + b] = C_FMul(x->k[0][a], x->k[1][b], "");
}

static void st_lower_TensorDot(lw *L, const st_in *x, LLVMValueRef *out) {
  int dim = x->n->dim;
  LLVMValueRef zero = lw_const(L, 0, x->vec);
  int64_t *tab = NULL, nco = 0;
  if (dag_tdot_tables(x->p, x->n->np, x->kd[0], x->kd[1], dim, &tab, &nco)) {
    kerr_set(L->err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory lowering TensorDot");
    for (int q = 0; q < dim; q++) out[q] = zero;
    return;
  }
  const int64_t *abase = tab, *bbase = abase + dim, *aoff = bbase + dim, *boff = aoff + nco;
  for (int q = 0; q < dim; q++) {
    LLVMValueRef acc = nco ? NULL : zero;
    for (int64_t c = 0; c < nco; c++) {
      LLVMValueRef a = x->k[0][abase[q] + aoff[c]], b = x->k[1][bbase[q] + boff[c]];
      acc = acc ? fmuladd(L, a, b, acc) : C_FMul(a, b, "");
    }
    out[q] = acc;
  }
  free(tab);
}

static st_lower_fn *const st_lower[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_lower_)
#include "ops.def"
#undef X
};

static LLVMValueRef **slot(lw *L, int lv, int vec, int u) {
  switch (lv) {
  case LV_P: return vec ? L->pv : L->ps;
  case LV_J: return vec ? L->jv : L->js;
  case LV_I: return L->iv[u];
  default: return L->ijv[u];
  }
}

static LLVMValueRef *value(lw *L, uint32_t id, int u, int vec);

static void leaf(lw *L, uint32_t id, const dag_node *n, const int64_t *p, LLVMValueRef *out, int u,
                 int vec) {
  switch (n->op) {
  case OP_Var:
    for (int c = 0; c < n->dim; c++) out[c] = L->load_var(L, (int)p[0], (int)p[1], c, u);
    return;
  case OP_Zero:
    for (int c = 0; c < n->dim; c++) out[c] = lw_const(L, 0, vec);
    return;
  case OP_RatCst: /* rounded once, from double: exact enough for the kernel's dtype */
    out[0] = lw_const(L, (double)p[0] / (double)p[1], vec);
    return;
  case OP_Cst: {
    double v;
    memcpy(&v, p, sizeof v);
    out[0] = lw_const(L, v, vec);
    return;
  }
  default: (void)id;
  }
}

/* Exp(c * x) or Exp(-(c * x)) (the simplifier moves signs out of products) with c computed
 * outside the pair loop (level P or I) and x in it: where the target folds c into exp's own
 * scaling (vm_exp_mul; GPU float32), out gets exp(+-c * x) without the product. Returns 0
 * where it does not apply. */
static int lower_exp_mul(lw *L, const dag_node *n, int u, int vec, LLVMValueRef *out) {
  const dag_node *m = dag_get(L->d, n->k[0]);
  int neg = m->op == OP_Minus;
  if (neg) m = dag_get(L->d, m->k[0]);
  if (m->op != OP_Mult) return 0;
  int h = L->level[m->k[0]] <= LV_I ? 0 : 1, lx = L->level[m->k[1 - h]];
  if (L->level[m->k[h]] > LV_I || lx <= LV_I) return 0;
  LLVMValueRef *c = value(L, m->k[h], u, vec), *x = value(L, m->k[1 - h], u, vec);
  int dc = dag_get(L->d, m->k[h])->dim, dx = dag_get(L->d, m->k[1 - h])->dim;
  for (int q = 0; c && x && q < n->dim; q++) {
    LLVMValueRef cq = c[dc == 1 ? 0 : q];
    if (!(out[q] = vm_exp_mul(L->M, B, neg ? LLVMBuildFNeg(B, cq, "") : cq, x[dx == 1 ? 0 : q]))) return 0;
  }
  return c && x;
}

/* Powf(x, k/2), k odd and |k| <= POW_HALF_MAX (the simplifier made integer exponents Pow):
 * x^m sqrt(x), or for k < 0 (1/x)^m / sqrt(x), with m = (|k| - 1) / 2: IEEE operations
 * instead of pow's log and exp (x**-1.5 ran 7x slower as pow). Each rounding adds up to
 * half an ulp relative to its own result, and that of 1/x is raised to the m-th power:
 * 2.04 ulp measured for -3/2 in float32 (tests/test_vmath.c, every float of [1, 4)), within
 * (m + 2) ulp up to |k| = 15 (the tests' bound), against pow's 2; no intermediate is further
 * from 1 than the result, so none under- or overflows early. x + 0 turns -0 into +0
 * (pow(-0, -1/2) is +inf where 1/sqrt(-0) is -inf), and -inf reads as +inf (pow(-inf, y) is
 * pow(+inf, y) for y not an odd integer); other negative x give NaN through sqrt, as pow does
 * for a non-integer exponent.
 * k = -3, the n-body force, is vmath's rsqrt3 on even unrolled vectors and rsqrt3d on odd
 * ones: on CPU vectors the first is an estimate and a series on the FMA pipes (float64 with
 * AVX-512, vrecip.c) or sqrt and two divisions, the second sqrt and one division, so the
 * divider works beside the FMA pipes instead of one of them idling. keops-bench --case=nbody
 * on 2 Zen 4 cores (AVX-512), ratio to the -O3 -ffast-math loop, several runs on a loaded
 * machine: float64 0.77-0.91x with sqrt and two divisions, 1.09-1.28x with the estimate on
 * every vector, 1.32-1.40x alternating (1:3 over 4 vectors measured 5-8% faster still, but
 * 4 vectors per row block cost 5-14% elsewhere); float32 1.5-1.8x before, 1.8x alternating. */
#define POW_HALF_MAX 15
static int lower_half_pow(lw *L, const dag_node *n, int u, int vec, LLVMValueRef *out) {
  int64_t k, q;
  if (!dag_is_rat(L->d, n->k[1], &k, &q) || q != 2 || k > POW_HALF_MAX || k < -POW_HALF_MAX) return 0;
  LLVMValueRef *x = value(L, n->k[0], u, vec);
  int dx = dag_get(L->d, n->k[0])->dim;
  LLVMValueRef one = lw_const(L, 1, vec);
  for (int c = 0; x && c < n->dim; c++) {
    if (k == -3) {
      out[c] = vm1(L, u & 1 ? VM_RSQRT3D : VM_RSQRT3, x[dx == 1 ? 0 : c]);
      continue;
    }
    LLVMValueRef a = LLVMBuildFAdd(B, x[dx == 1 ? 0 : c], lw_const(L, 0, vec), "");
    a = lw_select_cmp(L, LLVMRealOEQ, a, lw_const(L, -INFINITY, vec), lw_const(L, INFINITY, vec), a);
    LLVMValueRef s = vm1(L, VM_SQRT, a), m = ipow(L, k < 0 ? LLVMBuildFDiv(B, one, a, "") : a, ((k < 0 ? -k : k) - 1) / 2, vec);
    out[c] = k < 0 ? LLVMBuildFDiv(B, m, s, "") : LLVMBuildFMul(B, m, s, "");
  }
  return x != NULL;
}

/* Nodes of this kernel (below root) that have `id` as a child. */
static int consumers(lw *L, uint32_t id) {
  int c = 0;
  for (uint32_t p = id + 1; p <= L->root; p++) {
    const dag_node *n = dag_get(L->d, p);
    for (int k = 0; L->level[p] != 0xff && k < n->nk; k++) c += n->k[k] == id;
  }
  return c;
}

/* s * (t * V) or (t * V) * s, s and t of dim 1, V of dim D > 1, the product t * V used
 * nowhere else: (s * t) * V, one multiplication and D instead of 2D (the simplifier keeps
 * the user's order; n-body's m*(y-x)*(r2+e)**-1.5 is the case). Returns 0 where it does not
 * apply. */
static int lower_scalar_mult(lw *L, const dag_node *n, int u, int vec, LLVMValueRef *out) {
  if (n->dim < 2) return 0;
  int h = dag_get(L->d, n->k[0])->dim == 1 ? 0 : 1;
  const dag_node *p = dag_get(L->d, n->k[1 - h]);
  if (dag_get(L->d, n->k[h])->dim != 1 || p->op != OP_Mult || p->dim != n->dim) return 0;
  int g = dag_get(L->d, p->k[0])->dim == 1 ? 0 : 1;
  if (dag_get(L->d, p->k[g])->dim != 1 || dag_get(L->d, p->k[1 - g])->dim != n->dim ||
      consumers(L, n->k[1 - h]) != 1)
    return 0;
  LLVMValueRef *s = value(L, n->k[h], u, vec), *t = value(L, p->k[g], u, vec), *V = value(L, p->k[1 - g], u, vec);
  if (!s || !t || !V) return 0;
  LLVMValueRef st = C_FMul(s[0], t[0], "");
  for (int q = 0; q < n->dim; q++) out[q] = C_FMul(st, V[q], "");
  return 1;
}

/* Square(a - b) where the kernel also computes b - a: the same value squared (round to
 * nearest is symmetric, so |a - b| and |b - a| are equal), three subtractions fewer in
 * SqDist(x,y) next to y - x. Returns 0 where it does not apply. */
static int lower_square_sub(lw *L, const dag_node *n, int u, int vec, LLVMValueRef *out) {
  const dag_node *a = dag_get(L->d, n->k[0]);
  if (a->op != OP_Subtract) return 0;
  for (uint32_t p = 1; p <= L->root; p++) {
    const dag_node *b = dag_get(L->d, p);
    if (L->level[p] == 0xff || b->op != OP_Subtract || b->k[0] != a->k[1] || b->k[1] != a->k[0] ||
        b->dim != a->dim || p == n->k[0])
      continue;
    LLVMValueRef *v = value(L, p, u, vec);
    for (int q = 0; v && q < n->dim; q++) out[q] = C_FMul(v[q], v[q], "");
    return v != NULL;
  }
  return 0;
}

static LLVMValueRef *value(lw *L, uint32_t id, int u, int vec) {
  int lv = L->level[id];
  if (lv == LV_I || lv == LV_IJ) vec = 1;
  if (L->W == 1) vec = 0; /* scalars are their own broadcast: one map, or the parameter and
                             j-level values would be computed again in the inner loop */
  LLVMValueRef **map = slot(L, lv, vec, u);
  if (map[id]) return map[id];
  const dag_node *n = dag_get(L->d, id);
  LLVMValueRef *out = calloc((size_t)n->dim, sizeof *out);
  if (!out) {
    kerr_set(L->err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory while lowering");
    return NULL;
  }
  if (vec && (lv == LV_P || lv == LV_J) && L->W > 1) {
    LLVMValueRef *s = value(L, id, u, 0);
    for (int c = 0; s && c < n->dim; c++) out[c] = lw_splat(L, s[c]);
  } else if (n->nk == 0) {
    leaf(L, id, n, dag_params(L->d, id), out, u, vec);
  } else if (n->op == OP_Exp && lower_exp_mul(L, n, u, vec, out)) {
  } else if (n->op == OP_Powf && lower_half_pow(L, n, u, vec, out)) {
  } else if (n->op == OP_Mult && lower_scalar_mult(L, n, u, vec, out)) {
  } else if (n->op == OP_Square && lower_square_sub(L, n, u, vec, out)) {
  } else {
    LLVMValueRef *k[DAG_MAX_KIDS] = {0};
    int kd[DAG_MAX_KIDS] = {0};
    for (int c = 0; c < n->nk; c++) {
      kd[c] = dag_get(L->d, n->k[c])->dim;
      if (!(k[c] = value(L, n->k[c], u, vec))) {
        free(out);
        return NULL;
      }
    }
    const int64_t *p = dag_params(L->d, id);
    if (dag_ops[n->op].kind == K_EW) {
      for (int q = 0; q < n->dim; q++) {
        LLVMValueRef a[3] = {0};
        for (int c = 0; c < n->nk; c++) a[c] = k[c][kd[c] == 1 ? 0 : q];
        out[q] = lw_ew(L, n->op, a[0], a[1], a[2], p, vec);
      }
    } else {
      st_in x = {n, p, k, kd, vec};
      st_lower[n->op](L, &x, out);
    }
  }
  map[id] = out;
  return out;
}

LLVMValueRef *lw_vec(lw *L, uint32_t id, int u) { return value(L, id, u, 1); }

int lw_init(lw *L, const dag *d, uint32_t root, kerr *err) {
  size_t n = (size_t)root + 1;
  L->d = d;
  L->root = root;
  L->err = err;
  L->level = malloc(n);
  L->needvec = malloc(n);
  LLVMValueRef ***maps[4 + 2 * LW_MAX_U] = {&L->ps, &L->pv, &L->js, &L->jv};
  for (int u = 0; u < LW_MAX_U; u++) maps[4 + u] = &L->iv[u], maps[4 + LW_MAX_U + u] = &L->ijv[u];
  int ok = L->level && L->needvec;
  for (size_t m = 0; m < sizeof maps / sizeof *maps; m++) ok &= (*maps[m] = calloc(n, sizeof(LLVMValueRef *))) != NULL;
  if (!ok) {
    kerr_set(err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory while lowering");
    return -1;
  }
  /* only nodes below root: the dag also holds the user's formula before the axis swap and
   * intermediate autodiff nodes */
  memset(L->level, 0xff, n);
  memset(L->needvec, 0, n);
  L->level[root] = 0;
  for (uint32_t id = root; id > 0; id--)
    if (L->level[id] != 0xff)
      for (int c = 0; c < dag_get(d, id)->nk; c++) L->level[dag_get(d, id)->k[c]] = 0;
  for (uint32_t id = 1; id <= root; id++) {
    if (L->level[id] == 0xff) continue;
    const dag_node *a = dag_get(d, id);
    int lv = LV_P;
    if (a->op == OP_Var) {
      int64_t cat = dag_params(d, id)[1];
      lv = cat == CAT_I ? LV_I : cat == CAT_J ? LV_J : LV_P;
    }
    for (int c = 0; c < a->nk; c++) lv |= L->level[a->k[c]];
    L->level[id] = (uint8_t)lv;
    /* scalar-level children of vector nodes are read broadcast */
    if (lv == LV_I || lv == LV_IJ)
      for (int c = 0; c < a->nk; c++) L->needvec[a->k[c]] = 1;
  }
  L->needvec[root] = 1;
  return 0;
}

void lw_level_prepare(lw *L, int level, int u) {
  int vec = level == LV_I || level == LV_IJ;
  for (uint32_t id = 1; id <= L->root && L->err->status == KEOPS_OK; id++) {
    if (L->level[id] != level) continue;
    /* CPU: row variables are not preloaded: pair-level nodes then read them inside the j
     * loop (from the row block's buffer, in L1, as memory operands) instead of holding
     * dim * U vectors in registers for the whole loop, which spills for wide variables. */
    if (level == LV_I && L->reload_rows && dag_get(L->d, id)->op == OP_Var) continue;
    if (!value(L, id, u, vec)) return;
    /* scalar levels: broadcast now what vector nodes (or the reduction) will read, so the
     * broadcast sits in this block and not in the inner loop */
    if (!vec && L->needvec[id] && L->W > 1) value(L, id, u, 1);
  }
}

void lw_free(lw *L) {
  size_t n = (size_t)L->root + 1;
  LLVMValueRef **maps[4 + 2 * LW_MAX_U] = {L->ps, L->pv, L->js, L->jv};
  for (int u = 0; u < LW_MAX_U; u++) maps[4 + u] = L->iv[u], maps[4 + LW_MAX_U + u] = L->ijv[u];
  for (size_t m = 0; m < sizeof maps / sizeof *maps; m++) {
    if (!maps[m]) continue;
    for (size_t id = 0; id < n; id++) free(maps[m][id]);
    free(maps[m]);
  }
  free(L->level);
  free(L->needvec);
  L->level = L->needvec = NULL;
  L->ps = L->pv = L->js = L->jv = NULL;
  for (int u = 0; u < LW_MAX_U; u++) L->iv[u] = L->ijv[u] = NULL;
}
