/* vmath.c against libm: every function, f32 and f64, scalar and vector, compiled by ORC LLJIT
 * for the host CPU and for forced AVX2 (haswell) and generic x86-64 targets. Errors are in
 * ulps of the result type against the long double libm result, over dense sweeps of each
 * documented range plus special values; zeros and infinities must match exactly, sign
 * included, and NaN must stay NaN. Each function's reference, bounds and inputs are its row
 * of vmath.def, so a new row is tested without a change here. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>

#include "testutil.h"
#include "vmath.h"

/* The rows of vmath.def, as data: name, arity, reference, bounds and test inputs. */
enum { V_NONE, V_LIN, V_UNI, V_LOGU, V_SLOGU, V_NLOGU, V_ONEM, V_HALF, V_INT, V_BITS, V_ABITS,
       V_SCALE, V_RESULT };
typedef struct dist {
  int kind;
  double b[4]; /* a32, b32, a64, b64 */
} dist;
typedef struct piece {
  dist d[2]; /* x, y */
} piece;
enum { E_PT = 1, E_EPS, E_MULT };
typedef struct extra {
  int kind;
  double v[3];
} extra;

#define UNPAREN(...) __VA_ARGS__
#define P(...) {{__VA_ARGS__}}
#define D_(k, a32, b32, a64, b64) {k, {a32, b32, a64, b64}}
#define LIN(a, b) D_(V_LIN, a, b, a, b)
#define LIN_T(a32, b32, a64, b64) D_(V_LIN, a32, b32, a64, b64)
#define UNI(a, b) D_(V_UNI, a, b, a, b)
#define LOGU(a, b) D_(V_LOGU, a, b, a, b)
#define LOGU_T(a32, b32, a64, b64) D_(V_LOGU, a32, b32, a64, b64)
#define SLOGU(a, b) D_(V_SLOGU, a, b, a, b)
#define SLOGU_T(a32, b32, a64, b64) D_(V_SLOGU, a32, b32, a64, b64)
#define NLOGU(a, b) D_(V_NLOGU, a, b, a, b)
#define ONEM(a, b) D_(V_ONEM, a, b, a, b)
#define ONEM_T(a32, b32, a64, b64) D_(V_ONEM, a32, b32, a64, b64)
#define HALF(a, b) D_(V_HALF, a, b, a, b)
#define INT(a, b) D_(V_INT, a, b, a, b)
#define BITS D_(V_BITS, 0, 0, 0, 0)
#define ABITS D_(V_ABITS, 0, 0, 0, 0)
#define SCALE(a, b) D_(V_SCALE, a, b, a, b)
#define RESULT_T(a32, b32, a64, b64) D_(V_RESULT, a32, b32, a64, b64)
#define PT(...) {E_PT, {__VA_ARGS__}}
#define EPS(a, b) {E_EPS, {a, b}}
#define MULT(c, m, k) {E_MULT, {c, m, k}}

/* Per row: its reference and its lists; a leading zero entry lets a list be empty. */
#define X(NAME, name, nargs, emit, ref, ulp32, ulp64, lim32, lim64, dom, extras)                  \
  static long double ref_##NAME(long double x, long double y) {                                  \
    (void)x, (void)y;                                                                             \
    return ref;                                                                                   \
  }                                                                                               \
  static const piece DOM_##NAME[] = {{.d = {{.kind = V_NONE}}}, UNPAREN dom};                   \
  static const extra EX_##NAME[] = {{.kind = 0}, UNPAREN extras};
#include "vmath.def"
#undef X

typedef struct vrow {
  const char *name;
  int nargs;
  double ulp[2], lim[2]; /* f32, f64 */
  long double (*ref)(long double x, long double y);
  const piece *dom;
  const extra *ex;
  int ndom, nex;
} vrow;
static const vrow ROW[VM_COUNT] = {
#define X(NAME, name, nargs, emit, ref, ulp32, ulp64, lim32, lim64, dom, extras)                  \
  [VM_##NAME] = {name,           nargs,                                                        \
                 {ulp32, ulp64}, {lim32, lim64},                                               \
                 ref_##NAME,     DOM_##NAME + 1,                                               \
                 EX_##NAME + 1,  (int)(sizeof DOM_##NAME / sizeof *DOM_##NAME) - 1,            \
                 (int)(sizeof EX_##NAME / sizeof *EX_##NAME) - 1},
#include "vmath.def"
#undef X
};
static double bound(int fn, int dbl) { return ROW[fn].ulp[dbl]; }

/* Kernel types: element (0 float, 1 double) and lane count (0 scalar). */
typedef struct kty {
  int dbl;
  unsigned lanes;
} kty;
static const kty TYPES[] = {{0, 0}, {0, 8}, {0, 16}, {1, 0}, {1, 4}, {1, 8}};
#define NTYPES 6

typedef struct target {
  const char *name, *cpu, *features; /* NULL cpu: the host's */
} target;

typedef void (*kernel)(const void *x, const void *y, void *out, int64_t n);

typedef struct jit {
  LLVMOrcLLJITRef j;
  char features[4096]; /* the target's LLVM features */
  kernel k[VM_COUNT][NTYPES];
} jit;

static void ck_llvm(LLVMErrorRef e, const char *what) {
  if (!e) return;
  char *m = LLVMGetErrorMessage(e);
  ck_abort_msg("%s: %s", what, m);
}

static void type_name(kty t, char *buf, size_t n) {
  if (t.lanes) snprintf(buf, n, "v%u%s", t.lanes, t.dbl ? "f64" : "f32");
  else snprintf(buf, n, "%s", t.dbl ? "f64" : "f32");
}

/* void k(const T *x, const T *y, T *out, int64_t n): n > 0 and a multiple of the lanes. */
static void build_kernel(LLVMModuleRef m, int fn, kty t, const char *cpu, const char *features) {
  LLVMContextRef C = LLVMGetModuleContext(m);
  LLVMTypeRef et = t.dbl ? LLVMDoubleTypeInContext(C) : LLVMFloatTypeInContext(C);
  LLVMTypeRef vt = t.lanes ? LLVMVectorType(et, t.lanes) : et;
  LLVMTypeRef ptr = LLVMPointerTypeInContext(C, 0), i64 = LLVMInt64TypeInContext(C);
  LLVMTypeRef params[4] = {ptr, ptr, ptr, i64};
  char tn[16], name[64];
  type_name(t, tn, sizeof tn);
  snprintf(name, sizeof name, "k_%s_%s", ROW[fn].name, tn);
  LLVMValueRef f = LLVMAddFunction(m, name, LLVMFunctionType(LLVMVoidTypeInContext(C), params, 4, 0));
  LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(C, "target-cpu", 10, cpu, (unsigned)strlen(cpu)));
  LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(C, "target-features", 15, features, (unsigned)strlen(features)));
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(C, f, "entry");
  LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(C, f, "loop");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(C, f, "done");
  LLVMBuilderRef b = LLVMCreateBuilderInContext(C);
  LLVMPositionBuilderAtEnd(b, entry);
  LLVMBuildBr(b, loop);
  LLVMPositionBuilderAtEnd(b, loop);
  LLVMValueRef i = LLVMBuildPhi(b, i64, "i");
  unsigned align = t.dbl ? 8 : 4;
  LLVMValueRef v[2] = {NULL, NULL};
  for (int a = 0; a < ROW[fn].nargs; a++) {
    LLVMValueRef p = LLVMBuildGEP2(b, et, LLVMGetParam(f, (unsigned)a), &i, 1, "");
    v[a] = LLVMBuildLoad2(b, vt, p, "");
    LLVMSetAlignment(v[a], align);
  }
  LLVMValueRef r = vm_call(m, b, (vm_fn)fn, v[0], v[1]);
  ck_assert_ptr_nonnull(r);
  LLVMValueRef st = LLVMBuildStore(b, r, LLVMBuildGEP2(b, et, LLVMGetParam(f, 2), &i, 1, ""));
  LLVMSetAlignment(st, align);
  LLVMValueRef next = LLVMBuildAdd(b, i, LLVMConstInt(i64, t.lanes ? t.lanes : 1, 0), "");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, LLVMGetParam(f, 3), ""), loop, done);
  LLVMValueRef zero = LLVMConstInt(i64, 0, 0);
  LLVMAddIncoming(i, &zero, &entry, 1);
  LLVMAddIncoming(i, &next, &loop, 1);
  LLVMPositionBuilderAtEnd(b, done);
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
}

static LLVMTargetMachineRef make_tm(const char *triple, const char *cpu, const char *features) {
  LLVMTargetRef T;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(triple, &T, &err)) ck_abort_msg("target %s: %s", triple, err);
  return LLVMCreateTargetMachine(T, triple, cpu, features, LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                 LLVMCodeModelJITDefault);
}

/* Builds every kernel for one target in one module, runs the O2 pipeline (which inlines the
 * always-inline bodies) and JIT-compiles it. */
static void jit_open(jit *J, const target *tg) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  char *hcpu = LLVMGetHostCPUName(), *hfeat = LLVMGetHostCPUFeatures();
  const char *cpu = tg->cpu ? tg->cpu : hcpu, *feat = tg->cpu ? tg->features : hfeat;
  snprintf(J->features, sizeof J->features, "%s", feat);
  char *triple = LLVMGetDefaultTargetTriple();
  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(make_tm(triple, cpu, feat)));
  ck_llvm(LLVMOrcCreateLLJIT(&J->j, jb), "LLJIT");
  LLVMOrcDefinitionGeneratorRef gen;
  ck_llvm(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(J->j), NULL, NULL),
          "process symbols");
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(J->j), gen);

#if LLVM_VERSION_MAJOR >= 21
  LLVMContextRef C = LLVMContextCreate();
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContextFromLLVMContext(C);
#else
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMContextRef C = LLVMOrcThreadSafeContextGetContext(tsc);
#endif
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("vmath_test", C);
  /* as the x86 targets do (x86.c): 512-bit vectors take the vscalef path, and the
   * estimates of rsqrt, recip, div and rsqrt3 (AVX-512's, or AVX's for <8 x float>) */
  if (strstr(feat, "+avx512f")) vm_set_math(m, VM_MATH_SCALEF | VM_MATH_RCP14);
  else if ((strstr(feat, "+avx2") && strstr(feat, "+fma")) || (tg->cpu && !strcmp(tg->cpu, "haswell"))) vm_set_math(m, VM_MATH_RCP12);
  LLVMTargetMachineRef tm = make_tm(triple, cpu, feat);
  LLVMSetTarget(m, triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  for (int fn = 0; fn < VM_COUNT; fn++)
    for (int t = 0; t < NTYPES; t++) build_kernel(m, fn, TYPES[t], cpu, feat);
  char *msg = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) ck_abort_msg("invalid IR: %s", msg);
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  ck_llvm(LLVMRunPasses(m, "default<O2>", tm, po), "passes");
  LLVMDisposePassBuilderOptions(po);
  LLVMDisposeTargetMachine(tm);
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc);
  ck_llvm(LLVMOrcLLJITAddLLVMIRModule(J->j, LLVMOrcLLJITGetMainJITDylib(J->j), tsm), "add module");
  for (int fn = 0; fn < VM_COUNT; fn++)
    for (int t = 0; t < NTYPES; t++) {
      char tn[16], name[64];
      type_name(TYPES[t], tn, sizeof tn);
      snprintf(name, sizeof name, "k_%s_%s", ROW[fn].name, tn);
      LLVMOrcExecutorAddress a;
      ck_llvm(LLVMOrcLLJITLookup(J->j, &a, name), name);
      J->k[fn][t] = (kernel)(uintptr_t)a;
    }
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(hcpu);
  LLVMDisposeMessage(hfeat);
}

/* ------------------------------------------------------------------ inputs, reference -- */

typedef struct inputs {
  double *x, *y;
  long double *ref;
  int64_t n, cap;
} inputs;

static void push(inputs *in, double x, double y, int dbl) {
  if (in->n == in->cap) {
    in->cap = in->cap ? 2 * in->cap : 4096;
    in->x = realloc(in->x, (size_t)in->cap * sizeof *in->x);
    in->y = realloc(in->y, (size_t)in->cap * sizeof *in->y);
  }
  /* f32 inputs are the rounded values, so the reference sees what the kernel sees */
  in->x[in->n] = dbl ? x : (double)(float)x;
  in->y[in->n] = dbl ? y : (double)(float)y;
  in->n++;
}

static double rnd_bits(tu_rng *r, int dbl) { /* any finite value, uniform over bit patterns */
  for (;;) {
    uint64_t u = (uint64_t)(tu_uniform(r, 0, 1) * 0x1p53) << 11 ^ (uint64_t)(tu_uniform(r, 0, 1) * 0x1p53);
    double d;
    if (dbl) memcpy(&d, &u, 8);
    else {
      uint32_t w = (uint32_t)u;
      float f;
      memcpy(&f, &w, 4);
      d = f;
    }
    if (isfinite(d)) return d;
  }
}
static double logu(tu_rng *r, double lo, double hi) { return exp2(tu_uniform(r, lo, hi)); }
static double sgn(tu_rng *r) { return tu_uniform(r, 0, 1) < 0.5 ? -1.0 : 1.0; }

static const double SPECIAL[] = {0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 0.25, 10.0,
                                 INFINITY, -INFINITY, NAN, 0x1p-1074, -0x1p-1074, 0x1p-1022,
                                 0x1p-149, -0x1p-149, 0x1p-126, DBL_MAX, -DBL_MAX, FLT_MAX, -FLT_MAX,
                                 1e-300, 1e300, 1e-30, 1e30};
#define NSPECIAL (int)(sizeof SPECIAL / sizeof *SPECIAL)

/* A value of distribution d; j of cnt is the position in a sweep, other the other argument. */
static double draw(tu_rng *r, const dist *d, int dbl, int64_t j, int64_t cnt, double other) {
  double a = d->b[2 * dbl], b = d->b[2 * dbl + 1];
  switch (d->kind) {
  case V_LIN: return a + (b - a) * (double)j / (double)cnt;
  case V_UNI: return tu_uniform(r, a, b);
  case V_LOGU: return logu(r, a, b);
  case V_SLOGU: return sgn(r) * logu(r, a, b);
  case V_NLOGU: return -logu(r, a, b);
  case V_ONEM: return sgn(r) * (1.0 - logu(r, a, b));
  case V_HALF: return floor(tu_uniform(r, a, b)) + 0.5;
  case V_INT: return floor(tu_uniform(r, a, b));
  case V_BITS: return rnd_bits(r, dbl);
  case V_ABITS: return fabs(rnd_bits(r, dbl));
  case V_SCALE: return other * tu_uniform(r, a, b);
  case V_RESULT: {
    double t = tu_uniform(r, a, b);
    return fabs(log(other)) > 1e-3 ? t / log(other) : tu_uniform(r, -5, 5);
  }
  }
  return 0;
}
static int relative(const dist *d) { return d->kind == V_SCALE || d->kind == V_RESULT; }

/* The row's pieces in turn, `main` points (dense sweeps of the documented range and random
 * points), then the special values and the row's extra points. */
static void gen(inputs *in, int fn, int dbl, int64_t main) {
  const vrow *w = &ROW[fn];
  tu_rng r = tu_seed(0x5eed + (uint64_t)fn * 7 + (uint64_t)dbl);
  int64_t cnt = (main + w->ndom - 1) / w->ndom;
  for (int64_t i = 0; i < main; i++) {
    const dist *d = w->dom[i % w->ndom].d;
    int64_t j = i / w->ndom;
    double x, y;
    if (relative(&d[0])) {
      y = draw(&r, &d[1], dbl, j, cnt, NAN);
      x = draw(&r, &d[0], dbl, j, cnt, y);
    } else {
      x = draw(&r, &d[0], dbl, j, cnt, NAN);
      y = draw(&r, &d[1], dbl, j, cnt, x);
    }
    push(in, x, y, dbl);
  }
  for (int a = 0; a < NSPECIAL; a++) {
    if (isfinite(SPECIAL[a]) && fabs(SPECIAL[a]) > w->lim[dbl]) continue;
    if (w->nargs == 2)
      for (int b = 0; b < NSPECIAL; b++) push(in, SPECIAL[a], SPECIAL[b], dbl);
    else push(in, SPECIAL[a], 0, dbl);
  }
  for (int e = 0; e < w->nex; e++) {
    const double *v = w->ex[e].v;
    switch (w->ex[e].kind) {
    case E_PT: push(in, v[0], v[1], dbl); break;
    case E_EPS: push(in, v[0] + v[1] * (dbl ? 0x1p-53 : 0x1p-24), 0, dbl); break;
    case E_MULT: {
      double c = dbl ? v[0] : (float)v[0];
      for (int k = -(int)v[2]; k <= (int)v[2]; k++) push(in, k * v[1] * c, 0, dbl);
      break;
    }
    }
  }
  in->ref = malloc((size_t)in->n * sizeof *in->ref);
  for (int64_t i = 0; i < in->n; i++) in->ref[i] = w->ref(in->x[i], in->y[i]);
}

static void inputs_free(inputs *in) {
  free(in->x);
  free(in->y);
  free(in->ref);
}

/* Error of got in ulps of the result format at the reference value. Zeros and infinities of
 * the reference must be matched exactly with their sign; NaN only by NaN. inf stands for
 * the next power of two above the largest finite value, so an overflow at the threshold
 * costs at most an ulp. */
static double ulp_err(long double ref, double got, int dbl) {
  if (isnan(ref) || isnan(got)) return isnan(ref) && isnan(got) ? 0 : INFINITY;
  if (ref == 0 || isinf(ref))
    return (got == ref && !signbit(got) == !signbit(ref)) ? 0 : INFINITY;
  int mb = dbl ? 52 : 23, emin = dbl ? -1022 : -126, emax = dbl ? 1023 : 127;
  long double top = ldexpl(1, emax + 1);
  long double g = isinf(got) ? copysignl(top, got) : got;
  if (fabsl(ref) > top) ref = copysignl(top, ref);
  int e = ilogbl(ref);
  if (e < emin) e = emin;
  if (e > emax) e = emax;
  return (double)(fabsl(g - ref) / ldexpl(1, e - mb));
}

typedef struct result {
  double worst;
  double wx, wy, wgot;
  long double wref;
} result;

/* Runs kernel k over the first n inputs (padded to the lane count), returns the worst. */
static result run(kernel k, const inputs *in, int64_t n, kty t) {
  int64_t w = t.lanes ? t.lanes : 1, np = (n + w - 1) / w * w;
  size_t es = t.dbl ? 8 : 4;
  char *x = calloc((size_t)np, es), *y = calloc((size_t)np, es), *o = calloc((size_t)np, es);
  for (int64_t i = 0; i < n; i++) {
    if (t.dbl) {
      ((double *)x)[i] = in->x[i];
      ((double *)y)[i] = in->y[i];
    } else {
      ((float *)x)[i] = (float)in->x[i];
      ((float *)y)[i] = (float)in->y[i];
    }
  }
  k(x, y, o, np);
  result r = {0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; i++) {
    double got = t.dbl ? ((double *)o)[i] : ((float *)o)[i];
    double e = ulp_err(in->ref[i], got, t.dbl);
    if (!(e <= r.worst)) {
      r = (result){e, in->x[i], in->y[i], got, in->ref[i]};
      if (isinf(e) || isnan(e)) break;
    }
  }
  free(x);
  free(y);
  free(o);
  return r;
}

/* Huge arguments, beyond the Cody-Waite range (1e5 f32, 1e9 f64), where the reduction is
 * Payne-Hanek's: |x| random over the exponents up to the largest finite value, both signs,
 * the thresholds and their neighbours, and arguments close to multiples of pi/2, where the
 * reduced argument loses the most bits: 2^k fl(pi/2) for every k, and the closest double and
 * float (Muller, "Elementary functions", ch. 11): 6381956970095103 * 2^797 (4.7e-19 from a
 * multiple) and 16367173 * 2^72 (1.6e-9), with their neighbours. Ordinary values,
 * infinities and NaN are mixed in so that vectors take the per-lane slow path with some
 * lanes on the fast one. */
static void huge_inputs(inputs *in, int dbl) {
  tu_rng r = tu_seed(99 + (uint64_t)dbl);
  double T = dbl ? 1e9 : 1e5, top = dbl ? 1023.999 : 127.999;
  for (int i = 0; i < 40000; i++) {
    double x = sgn(&r) * logu(&r, log2(T), top);
    if (i % 7 == 3) x = sgn(&r) * logu(&r, -3, log2(T)); /* fast lanes among slow ones */
    if (i % 101 == 5) x = (double[]){INFINITY, -INFINITY, NAN}[i % 3];
    push(in, x, 0, dbl);
  }
  /* the thresholds, the limits of the fast path's Cody-Waite (2^17, 2^30), 6381956970095103
   * 2^797, 16367173 2^72 */
  static const double hard[] = {
      1e5,  1e9,   0x1p17,  0x1p30, 0x1.6ac5b262ca1ffp+849, 0x1.f37c8ap+95, 1e22,
      1e30, 1e300, FLT_MAX, DBL_MAX};
  for (int a = 0; a < (int)(sizeof hard / sizeof *hard); a++) {
    double h = dbl ? hard[a] : (float)hard[a];
    if (isinf(h)) continue;
    for (int k = -3; k <= 3; k++) {
      double x = h;
      for (int j = 0; j < abs(k); j++)
        x = dbl ? nextafter(x, k * INFINITY) : nextafterf((float)x, k * INFINITY);
      if (isfinite(x)) {
        push(in, x, 0, dbl);
        push(in, -x, 0, dbl);
      }
    }
  }
  for (int e = 0; e < (dbl ? 1024 : 128); e++) {
    double p = ldexp(dbl ? M_PI_2 : (float)M_PI_2, e);
    if (p < T / 2) continue;
    for (int k = 1; k <= 3; k++) {
      push(in, k * p, 0, dbl);
      push(in, -k * p, 0, dbl);
    }
  }
}

/* Every kernel type of one target against sinl/cosl; the worst errors (f32/f64) go to w. */
static void check_huge_trig(const jit *J, const target *tg, double w[2][2]) {
  for (int dbl = 0; dbl < 2; dbl++) {
    inputs in = {0};
    huge_inputs(&in, dbl);
    long double *ref[2] = {malloc((size_t)in.n * sizeof **ref),
                           malloc((size_t)in.n * sizeof **ref)};
    for (int64_t i = 0; i < in.n; i++) {
      ref[0][i] = sinl(in.x[i]);
      ref[1][i] = cosl(in.x[i]);
    }
    for (int t = 0; t < NTYPES; t++) {
      if (TYPES[t].dbl != dbl) continue;
      for (int c = 0; c < 2; c++) {
        in.ref = ref[c];
        result r = run(J->k[VM_SIN + c][t], &in, in.n, TYPES[t]);
        char tn[16];
        type_name(TYPES[t], tn, sizeof tn);
        ck_assert_msg(r.worst <= bound(VM_SIN + c, dbl),
                      "[%s] huge %s.%s: %.3g ulp at x=%.17g: got %.17g, libm %.20Lg", tg->name,
                      ROW[VM_SIN + c].name, tn, r.worst, r.wx, r.wgot, r.wref);
        if (r.worst > w[c][dbl]) w[c][dbl] = r.worst;
      }
    }
    free(ref[0]);
    free(ref[1]);
    in.ref = NULL;
    inputs_free(&in);
  }
}

/* The case and the hardest double, against mpmath (3000 bits) rather than libm,
 * for every f64 kernel type, the two values alternating over the lanes. */
static void check_trig_anchors(const jit *J) {
  static const double x[2] = {1e30, 0x1.6ac5b262ca1ffp+849}; /* 6381956970095103 * 2^797 */
  static const long double want[2][2] = {
      {0.009331468931175824057237L, 1.0L},                          /* sin */
      {-0.9999564608959664601402L, -4.687165924254627611123e-19L}}; /* cos */
  for (int t = 0; t < NTYPES; t++) {
    if (!TYPES[t].dbl) continue;
    int64_t n = TYPES[t].lanes ? TYPES[t].lanes : 1;
    for (int c = 0; c < 2; c++)
      for (int first = 0; first < 2; first++) {
        double in[16], out[16];
        for (int64_t i = 0; i < n; i++) in[i] = x[(i + first) & 1];
        J->k[VM_SIN + c][t](in, in, out, n);
        for (int64_t i = 0; i < n; i++) {
          long double w = want[c][(i + first) & 1];
          ck_assert_msg(ulp_err(w, out[i], 1) <= bound(VM_SIN + c, 1),
                        "%s(%.17g) = %.17g, want %.22Lg", ROW[VM_SIN + c].name, in[i], out[i], w);
        }
      }
  }
}

/* rsqrt, recip, rsqrt3 and rsqrt3d on every float32 of [1, 4) (every mantissa, at both exponent
 * parities for the square roots) and every 61st positive denormal, and 2^18 random float64
 * of [1, 4) plus 2^12 of each of 40 binades across the range, through the widest vector kernels
 * of the target, which take the estimate forms where it has them (vrecip.c); references in
 * double (float32) and long double (float64). Checked against vmath.def's bounds; the
 * worst go to w[fn][dbl]. */
static long double ref_exh(int fn, long double x) {
  if (fn == VM_RSQRT) return 1.0L / sqrtl(x);
  if (fn == VM_RECIP) return 1.0L / x;
  return 1.0L / (x * sqrtl(x)); /* rsqrt3, rsqrt3d */
}
static double ref_exh_f32(int fn, float x) { /* within 2^-51, 2^-27 float32 ulps */
  double d = x;
  return fn == VM_RSQRT ? 1.0 / sqrt(d) : fn == VM_RECIP ? 1.0 / d : 1.0 / (d * sqrt(d));
}
/* ulp_err for a finite nonzero float32 result of a finite nonzero reference, by bits (the
 * sweep's 2^25 points per function); other cases by ulp_err */
static double ulp_err_f32(double ref, float got) {
  if (!(fabs(ref) >= 0x1p-126 && fabs(ref) < 0x1p127) || !isfinite(got)) return ulp_err(ref, got, 0);
  uint64_t b;
  memcpy(&b, &ref, 8);
  b &= 0x7ff0000000000000u;
  double p2;
  memcpy(&p2, &b, 8);
  return fabs((double)got - ref) / (p2 * 0x1p-23);
}

static void check_binades(const jit *J, const target *tg, int tf, int td, double w[VM_COUNT][2]) {
  static const int fns[] = {VM_RSQRT, VM_RECIP, VM_RSQRT3, VM_RSQRT3D};
  enum { CH = 1 << 16 };
  float *xf = malloc(CH * sizeof *xf), *of = malloc(CH * sizeof *of);
  double *xd = malloc(CH * sizeof *xd), *od = malloc(CH * sizeof *od);
  for (int f = 0; f < 4; f++) {
    int fn = fns[f];
    /* float32: the bit patterns of [1, 4), then 1 .. 2^23 - 1 (the denormals) */
    uint32_t ranges[2][3] = {{0x3f800000u, 0x40800000u, 1}, {1u, 0x800000u, 61}};
    for (int g = 0; g < 2; g++)
      for (uint32_t b = ranges[g][0]; b < ranges[g][1]; b += CH * ranges[g][2]) {
        uint32_t st = ranges[g][2], n = (ranges[g][1] - b + st - 1) / st;
        n = n < CH ? n : CH;
        uint32_t np = (n + 15) / 16 * 16;
        for (uint32_t i = 0; i < np; i++) {
          uint32_t u = i < n ? b + i * st : b;
          memcpy(&xf[i], &u, 4);
        }
        J->k[fn][tf](xf, xf, of, np);
        for (uint32_t i = 0; i < n; i++) {
          double e = ulp_err_f32(ref_exh_f32(fn, xf[i]), of[i]);
          if (!(e <= bound(fn, 0))) /* ck_assert_msg would message the parent per point */
            ck_abort_msg("[%s] %s f32 x=%a: got %a, %.3g ulp", tg->name, ROW[fn].name, (double)xf[i],
                         (double)of[i], e);
          if (g == 0 && e > w[fn][0]) w[fn][0] = e; /* [1, 4): the estimate forms */
        }
      }
    tu_rng r = tu_seed(0xb1a + (uint64_t)fn);
    for (int g = 0; g < 41; g++) {
      int e0 = g == 40 ? 0 : -1020 + 51 * g, cnt = g == 40 ? 1 << 18 : 1 << 12;
      for (int done = 0; done < cnt; done += CH) {
        int n = cnt - done < CH ? cnt - done : CH;
        for (int i = 0; i < n; i++) xd[i] = ldexp(tu_uniform(&r, 1, 4), e0);
        J->k[fn][td](xd, xd, od, n);
        for (int i = 0; i < n; i++) {
          double e = ulp_err(ref_exh(fn, xd[i]), od[i], 1);
          if (!(e <= bound(fn, 1)))
            ck_abort_msg("[%s] %s f64 x=%a: got %a, %.3g ulp", tg->name, ROW[fn].name, xd[i], od[i], e);
          if (e > w[fn][1]) w[fn][1] = e;
        }
      }
    }
  }
  free(xf), free(of), free(xd), free(od);
}

/* Full sweeps with the widest vector types, shorter ones with the others. */
static void check_target(const target *tg, int64_t nmain, int64_t nsmall, int print) {
  jit J;
  jit_open(&J, tg);
  char line[2048];
  int pos = snprintf(line, sizeof line, "vmath max ulp [%s]:", tg->name);
  for (int fn = 0; fn < VM_COUNT; fn++) {
    double worst[2] = {0, 0};
    for (int dbl = 0; dbl < 2; dbl++) {
      inputs in = {0};
      gen(&in, fn, dbl, nmain);
      for (int t = 0; t < NTYPES; t++) {
        if (TYPES[t].dbl != dbl) continue;
        int widest = TYPES[t].lanes == (dbl ? 8u : 16u);
        /* the specials sit at the end: short runs take the head of the sweep plus them */
        int64_t n = in.n;
        inputs view = in;
        if (!widest) {
          view.x = in.x + (nmain - nsmall);
          view.y = in.y + (nmain - nsmall);
          view.ref = in.ref + (nmain - nsmall);
          n = in.n - (nmain - nsmall);
        }
        result r = run(J.k[fn][t], &view, n, TYPES[t]);
        char tn[16];
        type_name(TYPES[t], tn, sizeof tn);
        ck_assert_msg(r.worst <= bound(fn, dbl), "[%s] %s.%s: %.3g ulp at x=%.17g y=%.17g: got %.17g, libm %.20Lg",
                      tg->name, ROW[fn].name, tn, r.worst, r.wx, r.wy, r.wgot, r.wref);
        if (r.worst > worst[dbl]) worst[dbl] = r.worst;
      }
      inputs_free(&in);
    }
    pos += snprintf(line + pos, sizeof line - (size_t)pos, " %s %.2f/%.2f", ROW[fn].name, worst[0],
                    worst[1]);
  }
  double hw[2][2] = {{0, 0}, {0, 0}}, bw[VM_COUNT][2] = {{0}};
  check_huge_trig(&J, tg, hw);
  check_trig_anchors(&J);
  /* the widest vectors: v16f32 / v8f64 with AVX-512, v8f32 / v4f64 otherwise */
  int avx512 = strstr(J.features, "+avx512f") != NULL;
  if (!tg->cpu || strcmp(tg->cpu, "x86-64")) /* the generic target has no estimates */
    check_binades(&J, tg, avx512 ? 2 : 1, avx512 ? 5 : 4, bw);
  if (print)
    printf(
        "%s (f32/f64)\nvmath max ulp, huge arguments [%s]: sin %.2f/%.2f cos %.2f/%.2f (f32/f64)\n",
        line, tg->name, hw[0][0], hw[0][1], hw[1][0], hw[1][1]);
  if (bw[VM_RECIP][1] > 0)
    printf("vmath max ulp, every float32 of [1,4), sampled float64 binades [%s]: rsqrt %.3f/%.3f "
           "recip %.3f/%.3f rsqrt3 %.3f/%.3f rsqrt3d %.3f/%.3f (f32/f64)\n",
           tg->name, bw[VM_RSQRT][0], bw[VM_RSQRT][1], bw[VM_RECIP][0], bw[VM_RECIP][1],
           bw[VM_RSQRT3][0], bw[VM_RSQRT3][1], bw[VM_RSQRT3D][0], bw[VM_RSQRT3D][1]);
  LLVMOrcDisposeLLJIT(J.j);
}

/* Sizes: about 2 x 600k points per row of vmath.def on the host, 96k on the forced targets;
 * ASan builds would take minutes with more. */
START_TEST(test_host) {
  target tg = {"host", NULL, NULL};
  check_target(&tg, 600000, 100000, 1);
}
END_TEST

#if defined(__x86_64__)
START_TEST(test_avx2) {
  target tg = {"haswell", "haswell", ""};
  check_target(&tg, 100000, 100000, 0);
}
END_TEST

START_TEST(test_generic) {
  target tg = {"x86-64", "x86-64", ""};
  check_target(&tg, 100000, 100000, 0);
}
END_TEST
#endif

/* The same IR must compile for the GPU, to PTX without calls to anything external (libm). */
START_TEST(test_nvptx) {
  LLVMInitializeAllTargetInfos();
  LLVMInitializeAllTargets();
  LLVMInitializeAllTargetMCs();
  LLVMInitializeAllAsmPrinters();
  const char *triple = "nvptx64-nvidia-cuda";
  LLVMTargetRef T;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(triple, &T, &err)) { /* an LLVM built without NVPTX */
    LLVMDisposeMessage(err);
    return;
  }
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(T, triple, "sm_70", "", LLVMCodeGenLevelAggressive,
                                                    LLVMRelocDefault, LLVMCodeModelDefault);
  LLVMContextRef C = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("vmath_ptx", C);
  LLVMSetTarget(m, triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  for (int fn = 0; fn < VM_COUNT; fn++)
    for (int t = 0; t < NTYPES; t++) build_kernel(m, fn, TYPES[t], "sm_70", "");
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  ck_llvm(LLVMRunPasses(m, "default<O2>", tm, po), "passes");
  LLVMDisposePassBuilderOptions(po);
  LLVMMemoryBufferRef buf = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMAssemblyFile, &err, &buf)) ck_abort_msg("PTX: %s", err);
  size_t n = LLVMGetBufferSize(buf);
  char *ptx = malloc(n + 1);
  memcpy(ptx, LLVMGetBufferStart(buf), n);
  ptx[n] = 0;
  ck_assert_msg(strstr(ptx, ".extern") == NULL, "PTX calls an external function: %s", strstr(ptx, ".extern"));
  ck_assert_ptr_nonnull(strstr(ptx, "k_pow_v8f64"));
  free(ptx);
  LLVMDisposeMemoryBuffer(buf);
  LLVMDisposeModule(m);
  LLVMContextDispose(C);
  LLVMDisposeTargetMachine(tm);
}
END_TEST

/* vmath's table of 2/pi against an independent computation: pi by Stormer's formula
 * 48 atan(1/18) + 32 atan(1/57) - 20 atan(1/239) in 64-bit limbs of 32-bit digits (limb 0
 * the integer part), 2/pi digit by digit (32 bits at a time, by doubling and comparing),
 * and the leading words as published (fdlibm's ipio2 begins A2F983 6E4E44 1529FC...). */
enum { NL = 56 };
static void nl_div(uint64_t *a, uint64_t d) {
  for (int i = 0, r = 0; i < NL; i++) {
    uint64_t c = ((uint64_t)r << 32) + a[i];
    a[i] = c / d;
    r = (int)(c % d);
  }
}
static void nl_axpy(uint64_t *acc, const uint64_t *t, int64_t k) { /* acc += k t, |k| < 2^20 */
  int64_t carry = 0;
  for (int i = NL - 1; i >= 0; i--) {
    int64_t v = (int64_t)acc[i] + k * (int64_t)t[i] + carry;
    carry = v >> 32; /* floor division: negative partial values borrow */
    acc[i] = (uint64_t)v & 0xffffffffu;
  }
}
static void nl_atan(uint64_t *acc, int64_t k, uint64_t n) {
  uint64_t t[NL] = {1}, u[NL];
  nl_div(t, n);
  for (uint64_t i = 0;; i++) {
    int nz = 0;
    for (int l = 0; l < NL; l++) nz |= t[l] != 0;
    if (!nz) break;
    memcpy(u, t, sizeof u);
    nl_div(u, 2 * i + 1);
    nl_axpy(acc, u, i & 1 ? -k : k);
    nl_div(t, n * n);
  }
}

START_TEST(test_two_over_pi) {
  uint64_t pi[NL] = {0}, r[NL] = {2};
  nl_atan(pi, 48, 18);
  nl_atan(pi, 32, 57);
  nl_atan(pi, -20, 239);
  ck_assert_uint_eq(pi[0], 3);
  ck_assert_uint_eq(pi[1], 0x243f6a88u);
  unsigned nw = 0;
  const uint64_t *tab = vm_two_over_pi(&nw);
  ck_assert_uint_ge(nw, 18); /* 64 + 1024 + 64: the windows of the largest exponent */
  ck_assert_uint_eq(tab[0], 0);
  uint32_t digits[2 * 32];
  for (unsigned d = 0; d < 2 * (nw - 1); d++) {
    uint32_t dig = 0;
    for (int b = 31; b >= 0; b--) {
      nl_axpy(r, r, 1); /* r = 2r, then subtract pi where it fits */
      int ge = 1;
      for (int l = 0; l < NL; l++)
        if (r[l] != pi[l]) {
          ge = r[l] > pi[l];
          break;
        }
      if (ge) {
        nl_axpy(r, pi, -1);
        dig |= 1u << b;
      }
    }
    digits[d] = dig;
  }
  static const uint32_t published[] = {0xA2F9836E, 0x4E441529, 0xFC2757D1, 0xF534DDC0,
                                       0xDB629599, 0x3C439041, 0xFE5163AB};
  for (int d = 0; d < 7; d++) ck_assert_uint_eq(digits[d], published[d]);
  for (unsigned w = 1; w < nw; w++)
    ck_assert_msg(tab[w] == ((uint64_t)digits[2 * w - 2] << 32 | digits[2 * w - 1]),
                  "word %u: %016llx", w, (unsigned long long)tab[w]);
}
END_TEST

/* Interface contract: names, one body per (fn, type), bad operand types refused. */
START_TEST(test_interface) {
  LLVMContextRef C = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("iface", C);
  LLVMTypeRef f32 = LLVMFloatTypeInContext(C), v8 = LLVMVectorType(LLVMDoubleTypeInContext(C), 8);
  LLVMTypeRef ps[2] = {f32, v8};
  LLVMValueRef f = LLVMAddFunction(m, "user", LLVMFunctionType(LLVMVoidTypeInContext(C), ps, 2, 0));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(C);
  LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(C, f, "entry");
  LLVMPositionBuilderAtEnd(b, bb);
  LLVMValueRef x = LLVMGetParam(f, 0), v = LLVMGetParam(f, 1);
  ck_assert_ptr_nonnull(vm_call(m, b, VM_EXP, x, NULL));
  ck_assert_ptr_nonnull(vm_call(m, b, VM_EXP, x, NULL));
  ck_assert_ptr_nonnull(vm_call(m, b, VM_ATAN2, v, v));
  ck_assert_ptr_null(vm_call(m, b, VM_ATAN2, v, NULL));
  ck_assert_ptr_null(vm_call(m, b, VM_POW, v, x));
  ck_assert_ptr_null(vm_call(m, b, VM_EXP, LLVMConstInt(LLVMInt32TypeInContext(C), 1, 0), NULL));
  ck_assert_ptr_eq(LLVMGetInsertBlock(b), bb); /* the caller's position is kept */
  ck_assert_ptr_nonnull(LLVMGetNamedFunction(m, "keops.exp.f32"));
  ck_assert_ptr_nonnull(LLVMGetNamedFunction(m, "keops.atan2.v8f64"));
  int n = 0;
  for (LLVMValueRef g = LLVMGetFirstFunction(m); g; g = LLVMGetNextFunction(g))
    n += strncmp(LLVMGetValueName(g), "keops.", 6) == 0;
  ck_assert_int_eq(n, 2);
  LLVMBuildRetVoid(b);
  char *msg = NULL;
  ck_assert_msg(!LLVMVerifyModule(m, LLVMReturnStatusAction, &msg), "%s", msg);
  LLVMDisposeMessage(msg);
  LLVMDisposeBuilder(b);
  LLVMDisposeModule(m);
  LLVMContextDispose(C);
}
END_TEST

int main(void) {
  Suite *s = suite_create("vmath");
  TCase *t = tcase_create("accuracy");
  tcase_set_timeout(t, 600);
  tcase_add_test(t, test_interface);
  tcase_add_test(t, test_two_over_pi);
  tcase_add_test(t, test_nvptx);
  tcase_add_test(t, test_host);
#if defined(__x86_64__)
  tcase_add_test(t, test_avx2);
  tcase_add_test(t, test_generic);
#endif
  suite_add_tcase(s, t);
  int failed = tu_run(s, 1);
  return failed ? 1 : 0;
}
