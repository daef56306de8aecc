/* Math functions as target-neutral LLVM IR: range reduction + minimax polynomial, branchless
 * (selects), so one body serves scalars and vectors of any width, on the CPU and on NVPTX.
 *
 * Conventions that the accuracy arguments below rely on:
 * - Exact steps (Cody-Waite products, Fast2Sum, Dekker's product) are plain fmul/fadd/fsub
 *   without fast-math flags, so LLVM neither reassociates nor contracts them. The IR must not
 *   be compiled with fp-contract=fast (a fused c - (c - a) breaks Veltkamp's split).
 * - Polynomials use llvm.fmuladd, not llvm.fma: fused where the target has FMA (x86 with FMA,
 *   NVPTX), mul+add elsewhere; llvm.fma would become a libm call on a generic x86-64. Their
 *   error bounds hold either way.
 * - No fptosi (poison on NaN/inf): integers come from the "magic number" rounding
 *   t = v + 1.5*2^p, whose low mantissa bits hold round(v), and from exponent bit fields.
 * - llvm.floor/round/rint are avoided inside the algorithms for the same libm reason.
 *
 * Polynomial coefficients are relative-error minimax fits computed with a Remez exchange in
 * mpmath (80 digits) on the interval named with each set, then rounded to the format; the
 * Cody-Waite constants are pi/2 and ln 2 cut into pieces of the stated bit lengths. */
#include "vmath.h"

#include "llvm_compat.h"
#include "vrecip.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- builder helper set -- */

typedef struct vm {
  LLVMModuleRef mod;
  LLVMContextRef C;
  LLVMBuilderRef b; /* positioned in the body being built */
  LLVMTypeRef ty;   /* float, double or a vector of either */
  LLVMTypeRef ety;  /* element type */
  LLVMTypeRef ity;  /* integer type of the same shape and width */
  LLVMTypeRef iety; /* its element */
  unsigned lanes;   /* 0: scalar */
  int dbl;          /* element is double */
  int mbits;        /* explicit mantissa bits: 52 / 23 */
  int bias;         /* exponent bias: 1023 / 127 */
} vm;

static vm vm_make(LLVMModuleRef mod, LLVMBuilderRef b, int dbl, unsigned lanes) {
  vm v;
  v.mod = mod;
  v.C = LLVMGetModuleContext(mod);
  v.b = b;
  v.dbl = dbl;
  v.lanes = lanes;
  v.ety = dbl ? LLVMDoubleTypeInContext(v.C) : LLVMFloatTypeInContext(v.C);
  v.iety = LLVMIntTypeInContext(v.C, dbl ? 64 : 32);
  v.ty = lanes ? LLVMVectorType(v.ety, lanes) : v.ety;
  v.ity = lanes ? LLVMVectorType(v.iety, lanes) : v.iety;
  v.mbits = dbl ? 52 : 23;
  v.bias = dbl ? 1023 : 127;
  return v;
}

static LLVMValueRef splat(const vm *v, LLVMValueRef s) {
  if (!v->lanes) return s;
  LLVMValueRef small[64], *e = v->lanes <= 64 ? small : malloc(v->lanes * sizeof *e);
  for (unsigned i = 0; i < v->lanes; i++) e[i] = s;
  LLVMValueRef r = LLVMConstVector(e, v->lanes);
  if (e != small) free(e);
  return r;
}

/* Float constant splatted to v's type (rounded to the element format). */
static LLVMValueRef K(const vm *v, double c) { return splat(v, LLVMConstReal(v->ety, c)); }
/* Constant by precision: d for double, f for float. */
static LLVMValueRef KP(const vm *v, double d, double f) { return K(v, v->dbl ? d : f); }
static LLVMValueRef KI(const vm *v, long long c) {
  return splat(v, LLVMConstInt(v->iety, (unsigned long long)c, 1));
}

static LLVMValueRef add(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(v->b, a, b, ""); }
static LLVMValueRef sub(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(v->b, a, b, ""); }
static LLVMValueRef mul(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(v->b, a, b, ""); }
static LLVMValueRef fdiv(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(v->b, a, b, ""); }
static LLVMValueRef neg(const vm *v, LLVMValueRef a) { return LLVMBuildFNeg(v->b, a, ""); }
static LLVMValueRef sel(const vm *v, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(v->b, c, a, b, "");
}
static LLVMValueRef fcmp(const vm *v, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(v->b, p, a, b, "");
}
static LLVMValueRef icmp(const vm *v, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(v->b, p, a, b, "");
}
static LLVMValueRef bor(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildOr(v->b, a, b, ""); }
static LLVMValueRef band(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAnd(v->b, a, b, ""); }
static LLVMValueRef bxor(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildXor(v->b, a, b, ""); }
static LLVMValueRef iadd(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(v->b, a, b, ""); }
static LLVMValueRef isub(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(v->b, a, b, ""); }
static LLVMValueRef as_int(const vm *v, LLVMValueRef x) { return LLVMBuildBitCast(v->b, x, v->ity, ""); }
static LLVMValueRef as_flt(const vm *v, LLVMValueRef i) { return LLVMBuildBitCast(v->b, i, v->ty, ""); }
static LLVMValueRef itof(const vm *v, LLVMValueRef i) { return LLVMBuildSIToFP(v->b, i, v->ty, ""); }

static LLVMValueRef intrinsic(const vm *v, const char *name, LLVMValueRef *args, unsigned n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef t = v->ty;
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(v->mod, id, &t, 1);
  return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, &t, 1), fn, args, n, "");
}
static LLVMValueRef intr1(const vm *v, const char *name, LLVMValueRef a) {
  return intrinsic(v, name, &a, 1);
}
static LLVMValueRef fabs_(const vm *v, LLVMValueRef a) { return intr1(v, "llvm.fabs", a); }
static LLVMValueRef copysign_(const vm *v, LLVMValueRef mag, LLVMValueRef sgn) {
  LLVMValueRef a[2] = {mag, sgn};
  return intrinsic(v, "llvm.copysign", a, 2);
}
/* a*b + c, fused where the target has FMA. */
static LLVMValueRef fmadd(const vm *v, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef a3[3] = {a, b, c};
  return intrinsic(v, "llvm.fmuladd", a3, 3);
}

/* Coefficients of one polynomial, per precision, lowest degree first. */
typedef struct cset {
  const double *f, *d;
  int nf, nd;
} cset;
#define CSET(F, D) {F, D, (int)(sizeof F / sizeof *F), (int)(sizeof D / sizeof *D)}

/* Horner with fused multiply-adds. */
static LLVMValueRef poly(const vm *v, LLVMValueRef x, const cset *cs) {
  const double *c = v->dbl ? cs->d : cs->f;
  int n = v->dbl ? cs->nd : cs->nf;
  LLVMValueRef r = K(v, c[n - 1]);
  for (int k = n - 2; k >= 0; k--) r = fmadd(v, r, x, K(v, c[k]));
  return r;
}

/* round-to-nearest-even of x (|x| < 2^(mbits-1)) without fptosi or llvm.rint: *t gets
 * x + 1.5*2^mbits, whose bits minus the constant's bits are round(x) as an integer. */
static LLVMValueRef magic_round(const vm *v, LLVMValueRef x, LLVMValueRef *t) {
  LLVMValueRef M = KP(v, 6755399441055744.0, 12582912.0); /* 1.5*2^52, 1.5*2^23 */
  *t = add(v, x, M);
  return sub(v, *t, M);
}
static LLVMValueRef magic_int(const vm *v, LLVMValueRef t) {
  return isub(v, as_int(v, t), as_int(v, KP(v, 6755399441055744.0, 12582912.0)));
}

/* 2^n for integer n within the normal exponent range, by building the exponent field. */
static LLVMValueRef pow2i(const vm *v, LLVMValueRef n) {
  return as_flt(v, LLVMBuildShl(v->b, iadd(v, n, KI(v, v->bias)), KI(v, v->mbits), ""));
}

static LLVMValueRef is_nan(const vm *v, LLVMValueRef x) { return fcmp(v, LLVMRealUNO, x, x); }
static LLVMValueRef sign_mask(const vm *v) { return KI(v, v->dbl ? INT64_MIN : INT32_MIN); }
static LLVMValueRef is_neg(const vm *v, LLVMValueRef x) {
  return icmp(v, LLVMIntSLT, as_int(v, x), KI(v, 0));
}
static LLVMValueRef kinf(const vm *v) { return K(v, __builtin_inf()); }

/* Same lane count, other precision (f32 functions that reduce or evaluate in double). */
static vm vm_other(const vm *v, int dbl) { return vm_make(v->mod, v->b, dbl, v->lanes); }

/* ---------------------------------------------------------- double-double arithmetic -- */
/* Knuth's TwoSum, Dekker's Fast2Sum and product (Veltkamp split): error-free without FMA.
 * Used by f64 pow (log in double-double), f64 sin/cos (reduction error) and atan. */
typedef struct dd {
  LLVMValueRef h, l;
} dd;

static dd two_sum(const vm *v, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef s = add(v, a, b), bb = sub(v, s, a);
  LLVMValueRef e = add(v, sub(v, a, sub(v, s, bb)), sub(v, b, bb));
  return (dd){s, e};
}
static dd fast_two_sum(const vm *v, LLVMValueRef a, LLVMValueRef b) { /* |a| >= |b| */
  LLVMValueRef s = add(v, a, b);
  return (dd){s, sub(v, b, sub(v, s, a))};
}
static dd split(const vm *v, LLVMValueRef a) {
  LLVMValueRef c = mul(v, a, KP(v, 134217729.0, 4097.0)); /* 2^27+1, 2^12+1 */
  LLVMValueRef h = sub(v, c, sub(v, c, a));
  return (dd){h, sub(v, a, h)};
}
static dd two_prod(const vm *v, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef p = mul(v, a, b);
  dd x = split(v, a), y = split(v, b);
  LLVMValueRef e = sub(v, mul(v, x.h, y.h), p);
  e = add(v, add(v, add(v, e, mul(v, x.h, y.l)), mul(v, x.l, y.h)), mul(v, x.l, y.l));
  return (dd){p, e};
}
/* (a.h + a.l) * (b.h + b.l), dropping a.l*b.l. */
static dd dd_mul(const vm *v, dd a, dd b) {
  dd p = two_prod(v, a.h, b.h);
  p.l = add(v, p.l, add(v, mul(v, a.h, b.l), mul(v, a.l, b.h)));
  return fast_two_sum(v, p.h, p.l);
}

/* ------------------------------------------------------------------------------ exp -- */

/* (e^r - 1 - r)/r^2 on |r| <= ln2/2: degree 4 (rel 2^-22.9) / degree 9 (rel 2^-52.1). */
static const double EXP_F[] = {5.000000000e-01, 1.666657776e-01, 4.166685417e-02,
                               8.363146335e-03, 1.390128746e-03};
static const double EXP_D[] = {0.5000000000000001,     0.16666666666666644,   0.04166666666662431,
                               0.008333333333356199,   0.0013888888917138378, 0.00019841269784669295,
                               2.480152139633535e-05,  2.755735550523405e-06, 2.762004665507207e-07,
                               2.506816919552597e-08};
static const cset EXP_P = CSET(EXP_F, EXP_D);

/* The target's shortcuts travel with the module as flags (one per shortcut, present when
 * allowed), so that vm_call needs no target argument and every function of a module agrees. */
static const char *const MATH_FLAGS[] = {"keops.math.scalef", "keops.math.ex2_approx",
                                         "keops.math.ex2_model", "keops.math.fast",
                                         "keops.math.rcp14", "keops.math.rcp12"};

void vm_set_math(LLVMModuleRef m, unsigned flags) {
  LLVMValueRef one = LLVMConstInt(LLVMInt32TypeInContext(LLVMGetModuleContext(m)), 1, 0);
  for (unsigned b = 0; b < sizeof MATH_FLAGS / sizeof *MATH_FLAGS; b++)
    if (flags & (1u << b))
      LLVMAddModuleFlag(m, LLVMModuleFlagBehaviorOverride, MATH_FLAGS[b], strlen(MATH_FLAGS[b]),
                        LLVMValueAsMetadata(one));
}

static int has_math(const vm *v, unsigned flag) {
  unsigned b = (unsigned)__builtin_ctz(flag);
  return LLVMGetModuleFlag(v->mod, MATH_FLAGS[b], strlen(MATH_FLAGS[b])) != NULL;
}

/* VM_MATH_SCALEF, on 512-bit vectors: vscalefps/pd computes p * 2^n for any n with a single
 * rounding (denormal results, overflow to inf), replacing the two-step exponent
 * construction and its 9 integer and multiply operations. */
static int has_scalef(const vm *v) {
  return v->lanes * (v->dbl ? 64u : 32u) == 512 && has_math(v, VM_MATH_SCALEF);
}

static LLVMValueRef scalef(const vm *v, LLVMValueRef p, LLVMValueRef n) {
  const char *name = v->dbl ? "llvm.x86.avx512.mask.scalef.pd.512" : "llvm.x86.avx512.mask.scalef.ps.512";
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef mask = LLVMIntTypeInContext(v->C, v->lanes);
  LLVMValueRef args[5] = {p, n, p, LLVMConstAllOnes(mask),
                          LLVMConstInt(LLVMInt32TypeInContext(v->C), 4, 0)}; /* current rounding */
  return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, NULL, 0),
                        LLVMGetIntrinsicDeclaration(v->mod, id, NULL, 0), args, 5, "");
}

/* exp(x + lo) with |lo| tiny against x (pow's double-double correction) or lo NULL.
 * n = round(x/ln2), r = x - n*ln2 by Cody-Waite (ln2_hi has 32 / 9 bits, so n*ln2_hi and
 * x - n*ln2_hi are exact), e^r = 1 + r + r^2 P(r), times 2^n in two steps 2^(n>>1) and
 * 2^(n - n>>1): each factor is a normal number, the result rounds once into the denormals
 * and overflows to inf by itself. x is clamped first so that n stays in range; the clamp
 * keeps NaN. */
static LLVMValueRef exp_core(const vm *v, LLVMValueRef x, LLVMValueRef lo) {
  LLVMValueRef hi = KP(v, 710.0, 89.0), low = KP(v, -746.0, -105.0); /* beyond over/underflow */
  x = sel(v, fcmp(v, LLVMRealOGT, x, hi), hi, x);
  x = sel(v, fcmp(v, LLVMRealOLT, x, low), low, x);
  int fast = has_scalef(v);
  LLVMValueRef t = NULL, xl = mul(v, x, K(v, 1.4426950408889634));
  /* with AVX-512, llvm.rint is one vrndscale instruction */
  LLVMValueRef n = fast ? intr1(v, "llvm.rint", xl) : magic_round(v, xl, &t);
  /* fdlibm's ln2_hi/ln2_lo (f64); Cephes expf's C1/C2 (f32): n*ln2_hi is exact, so a fused
   * or separate multiply-subtract gives the same r */
  LLVMValueRef r = fmadd(v, n, KP(v, -6.93147180369123816490e-01, -0.693359375), x);
  r = fmadd(v, n, KP(v, -1.90821492927058770002e-10, 2.121944417e-04), r);
  if (lo) r = add(v, r, lo);
  LLVMValueRef p = add(v, K(v, 1.0), fmadd(v, mul(v, r, r), poly(v, r, &EXP_P), r));
  if (fast) return scalef(v, p, n);
  LLVMValueRef ni = magic_int(v, t);
  LLVMValueRef n1 = LLVMBuildAShr(v->b, ni, KI(v, 1), ""), n2 = isub(v, ni, n1);
  return mul(v, mul(v, p, pow2i(v, n1)), pow2i(v, n2));
}

/* ------------------------------------------------------------------------------ log -- */

/* Q(z), log(1+f) = 2s + s z Q(z), s = f/(2+f), z = s^2 <= ((sqrt2-1)/(sqrt2+1))^2 = 0.02944:
 * degree 3 (rel 2^-29.1) / degree 6 (rel 2^-51.0), the form of fdlibm's Lg1..Lg7. */
static const double LOG_F[] = {6.666666865e-01, 4.000012279e-01, 2.855079472e-01,
                               2.333110869e-01};
static const double LOG_D[] = {0.666666666666667,   0.39999999999899116, 0.2857142862613402,
                               0.2222221111128483,  0.18182890699994939, 0.15331673017102085,
                               0.14617011449091966};
static const cset LOG_Q = CSET(LOG_F, LOG_D);

/* x = 2^k m with m in [sqrt(1/2), sqrt(2)), returns f = m - 1 (exact) and k as a float.
 * Denormals are scaled by 2^54 / 2^25 first. Garbage but no poison for x <= 0, inf, NaN. */
static LLVMValueRef log_reduce(const vm *v, LLVMValueRef x, LLVMValueRef *k) {
  LLVMValueRef tiny = fcmp(v, LLVMRealOLT, x, KP(v, 0x1p-1022, 0x1p-126));
  x = sel(v, tiny, mul(v, x, KP(v, 0x1p54, 0x1p25)), x);
  LLVMValueRef kadj = sel(v, tiny, KP(v, -54.0, -25.0), K(v, 0.0));
  /* musl's logf trick: offset the bits so that the exponent field rolls over at sqrt(2). */
  long long one = v->dbl ? 0x3ff0000000000000LL : 0x3f800000LL;
  long long sqrth = v->dbl ? 0x3fe6a09e667f3bcdLL : 0x3f3504f3LL; /* sqrt(1/2) */
  LLVMValueRef ix = iadd(v, as_int(v, x), KI(v, one - sqrth));
  LLVMValueRef ki = isub(v, LLVMBuildAShr(v->b, ix, KI(v, v->mbits), ""), KI(v, v->bias));
  *k = add(v, itof(v, ki), kadj);
  ix = iadd(v, band(v, ix, KI(v, (1LL << v->mbits) - 1)), KI(v, sqrth));
  return sub(v, as_flt(v, ix), K(v, 1.0));
}

/* fdlibm's e_log.c scheme: log(1+f) = f - (hfsq - s(hfsq + R)), R = z Q(z); ln2 split with
 * ln2_hi of 32 / 16 bits so that k*ln2_hi is exact. Error below 1 ulp. */
static LLVMValueRef log_fn(const vm *v, LLVMValueRef x) {
  LLVMValueRef k, f = log_reduce(v, x, &k);
  LLVMValueRef s = fdiv(v, f, add(v, K(v, 2.0), f)), z = mul(v, s, s);
  LLVMValueRef R = mul(v, z, poly(v, z, &LOG_Q));
  LLVMValueRef hfsq = mul(v, mul(v, K(v, 0.5), f), f);
  LLVMValueRef t = add(v, mul(v, s, add(v, hfsq, R)), mul(v, k, KP(v, 1.90821492927058770002e-10, 1.428606765e-06)));
  LLVMValueRef r = sub(v, mul(v, k, KP(v, 6.93147180369123816490e-01, 6.931457520e-01)),
                       sub(v, sub(v, hfsq, t), f));
  r = sel(v, fcmp(v, LLVMRealOEQ, x, kinf(v)), x, r);
  r = sel(v, fcmp(v, LLVMRealOEQ, x, K(v, 0.0)), neg(v, kinf(v)), r);
  r = sel(v, fcmp(v, LLVMRealOLT, x, K(v, 0.0)), K(v, __builtin_nan("")), r);
  return sel(v, is_nan(v, x), x, r);
}

/* (2 atanh(s) - 2s - 2s^3/3)/s^5 as a polynomial in z = s^2 <= 0.02944, degree 7 (rel
 * 2^-57.6), for the double-double log. */
static const double LOGDD_D[] = {0.4,                 0.2857142857142937,  0.2222222222165489,
                                 0.18181818335596578, 0.15384594942717125, 0.13334805681333567,
                                 0.11706211924323616, 0.11723415742628522};
static const cset LOGDD_T = CSET(LOGDD_D, LOGDD_D);

/* log(x) as a double-double with relative error about 2^-64 (SLEEF's logk structure):
 * s = f/(2+f) to double-double accuracy, log = k ln2 + 2s + (2/3)s^3 + s^5 T(s^2), the first
 * three terms in double-double. x must be positive and finite (pow handles the rest). */
static dd log_dd(const vm *v, LLVMValueRef x) {
  LLVMValueRef k, f = log_reduce(v, x, &k);
  dd u = fast_two_sum(v, K(v, 2.0), f); /* 2 + f exactly */
  LLVMValueRef sh = fdiv(v, f, u.h);
  dd p = two_prod(v, sh, u.h);
  LLVMValueRef rem = sub(v, sub(v, sub(v, f, p.h), p.l), mul(v, sh, u.l));
  dd s = fast_two_sum(v, sh, fdiv(v, rem, u.h));
  dd z = dd_mul(v, s, s), s3 = dd_mul(v, z, s);
  dd t3 = dd_mul(v, s3, (dd){K(v, 0.6666666666666666), K(v, 3.700743415417188e-17)});
  LLVMValueRef t5 = mul(v, mul(v, s3.h, z.h), poly(v, z.h, &LOGDD_T));
  dd a = two_sum(v, mul(v, k, K(v, 6.93147180369123816490e-01)), mul(v, K(v, 2.0), s.h));
  dd c = two_sum(v, a.h, t3.h);
  LLVMValueRef lo = add(v, add(v, a.l, c.l), add(v, mul(v, K(v, 2.0), s.l), t3.l));
  lo = add(v, lo, add(v, t5, mul(v, k, K(v, 1.90821492927058770002e-10))));
  return fast_two_sum(v, c.h, lo);
}

/* ------------------------------------------------------------------------------ pow -- */

/* y is an integer / an odd integer: for |y| < 2^52 (2^23), |y| + 2^52 - 2^52 rounds |y| to an
 * integer; every larger float is an even integer (odd: y/2 is not an integer, y/2 exact). */
static LLVMValueRef is_int(const vm *v, LLVMValueRef y) {
  LLVMValueRef a = fabs_(v, y), two_p = KP(v, 0x1p52, 0x1p23);
  LLVMValueRef big = fcmp(v, LLVMRealOGE, a, two_p);
  return bor(v, big, fcmp(v, LLVMRealOEQ, sub(v, add(v, a, two_p), two_p), a));
}
static LLVMValueRef is_odd(const vm *v, LLVMValueRef y) {
  LLVMValueRef h = mul(v, y, K(v, 0.5));
  return band(v, is_int(v, y), LLVMBuildNot(v->b, is_int(v, h), ""));
}

/* C99 F.9.4.4 on top of r = |x|^y computed for the ordinary case. */
static LLVMValueRef pow_fixups(const vm *v, LLVMValueRef x, LLVMValueRef y, LLVMValueRef r) {
  LLVMValueRef ax = fabs_(v, x), one = K(v, 1.0), zero = K(v, 0.0), inf = kinf(v);
  LLVMValueRef ypos = fcmp(v, LLVMRealOGT, y, zero);
  /* x = +-0 or +-inf: 0 or inf by the sign of y. */
  LLVMValueRef xz = fcmp(v, LLVMRealOEQ, ax, zero);
  LLVMValueRef zi = bor(v, xz, fcmp(v, LLVMRealOEQ, ax, inf));
  r = sel(v, zi, sel(v, bxor(v, xz, ypos), inf, zero), r);
  /* Negative x: odd integer y flips the sign, a non-integer y has no real result. */
  r = sel(v, band(v, is_neg(v, x), is_odd(v, y)), neg(v, r), r);
  LLVMValueRef xneg = band(v, fcmp(v, LLVMRealOLT, x, zero), fcmp(v, LLVMRealONE, ax, inf));
  r = sel(v, band(v, xneg, LLVMBuildNot(v->b, is_int(v, y), "")), K(v, __builtin_nan("")), r);
  /* y = +-inf: |x| = 1 gives 1, otherwise 0 or inf. */
  LLVMValueRef yinf = fcmp(v, LLVMRealOEQ, fabs_(v, y), inf);
  LLVMValueRef grow = icmp(v, LLVMIntEQ, fcmp(v, LLVMRealOGT, ax, one), ypos);
  r = sel(v, yinf, sel(v, fcmp(v, LLVMRealOEQ, ax, one), one, sel(v, grow, inf, zero)), r);
  r = sel(v, fcmp(v, LLVMRealUNO, x, y), add(v, x, y), r);
  r = sel(v, fcmp(v, LLVMRealOEQ, x, one), one, r);
  return sel(v, fcmp(v, LLVMRealOEQ, y, zero), one, r);
}

/* f64: exp(y log|x|) with log in double-double and the product's low part fed to exp as a
 * correction (error of the exponent ~ 745 * 2^-64). f32: through this module's own f64
 * log and exp (error ~2^-45, far below a float ulp), then rounded. */
static LLVMValueRef pow_fn(const vm *v, LLVMValueRef x, LLVMValueRef y) {
  if (!v->dbl) {
    vm d = vm_other(v, 1);
    LLVMValueRef xd = LLVMBuildFPExt(v->b, x, d.ty, ""), yd = LLVMBuildFPExt(v->b, y, d.ty, "");
    LLVMValueRef l = vm_call(v->mod, v->b, VM_LOG, fabs_(&d, xd), NULL);
    LLVMValueRef r = vm_call(v->mod, v->b, VM_EXP, mul(&d, yd, l), NULL);
    return LLVMBuildFPTrunc(v->b, pow_fixups(&d, xd, yd, r), v->ty, "");
  }
  dd l = log_dd(v, fabs_(v, x));
  /* Veltkamp's split overflows for |y| > 2^996: such y only matter where the result
   * saturates, and there the low part is dropped below. */
  LLVMValueRef big = K(v, 0x1p900);
  LLVMValueRef ys = sel(v, fcmp(v, LLVMRealOGT, fabs_(v, y), big), copysign_(v, big, y), y);
  dd p = two_prod(v, ys, l.h);
  p.h = mul(v, y, l.h);
  p.l = add(v, p.l, mul(v, y, l.l));
  dd t = fast_two_sum(v, p.h, p.l);
  LLVMValueRef keep = fcmp(v, LLVMRealOLT, fabs_(v, t.h), K(v, 2000.0));
  LLVMValueRef r = exp_core(v, t.h, sel(v, keep, t.l, K(v, 0.0)));
  return pow_fixups(v, x, y, r);
}

/* ----------------------------------------------- Payne-Hanek reduction of huge arguments -- */

/* Bits of 2/pi, computed once rather than typed in (a wrong digit would only show at some
 * exponents): pi = 16 atan(1/5) - 4 atan(1/239) (Machin) in fixed point with 48 32-bit
 * limbs, limb 0 the integer part, then 2/pi by restoring division, one bit per step. ~1500
 * fraction bits against the 1152 kept: the series' truncations cost a few bits only. Word
 * 0 is zero and word j holds fraction bits 64(j-1)+1 .. 64j, so that windows starting
 * before the binary point read zeros. */
enum { FX_LIMBS = 48, TWO_OVER_PI_WORDS = 19 };
static uint64_t two_over_pi[TWO_OVER_PI_WORDS];
static pthread_once_t two_over_pi_once = PTHREAD_ONCE_INIT;

static void fx_div(uint32_t *a, uint32_t d) {
  uint64_t r = 0;
  for (int i = 0; i < FX_LIMBS; i++) {
    uint64_t c = r << 32 | a[i];
    a[i] = (uint32_t)(c / d);
    r = c % d;
  }
}
static void fx_add(uint32_t *acc, const uint32_t *t, int subtract) { /* mod 2^(32 FX_LIMBS) */
  uint64_t c = 0;
  for (int i = FX_LIMBS - 1; i >= 0; i--) {
    uint64_t s = subtract ? (uint64_t)acc[i] - t[i] - c : (uint64_t)acc[i] + t[i] + c;
    acc[i] = (uint32_t)s;
    c = subtract ? s >> 63 : s >> 32;
  }
}
static int fx_cmp(const uint32_t *a, const uint32_t *b) {
  for (int i = 0; i < FX_LIMBS; i++)
    if (a[i] != b[i]) return a[i] > b[i] ? 1 : -1;
  return 0;
}
/* acc +- k atan(1/n) = k sum_i (-1)^i / ((2i+1) n^(2i+1)) */
static void fx_atan_inv(uint32_t *acc, uint32_t k, uint32_t n, int subtract) {
  uint32_t t[FX_LIMBS] = {k}, u[FX_LIMBS], zero[FX_LIMBS] = {0};
  fx_div(t, n);
  for (uint32_t i = 0; fx_cmp(t, zero); i++) {
    memcpy(u, t, sizeof u);
    fx_div(u, 2 * i + 1);
    fx_add(acc, u, subtract ^ (int)(i & 1));
    fx_div(t, n * n);
  }
}
static void two_over_pi_init(void) {
  uint32_t pi[FX_LIMBS] = {0}, r[FX_LIMBS] = {2};
  fx_atan_inv(pi, 16, 5, 0);
  fx_atan_inv(pi, 4, 239, 1);
  for (int bit = 0; bit < 64 * (TWO_OVER_PI_WORDS - 1); bit++) {
    fx_add(r, r, 0);
    if (fx_cmp(r, pi) >= 0) {
      fx_add(r, pi, 1);
      two_over_pi[1 + bit / 64] |= 1ull << (63 - bit % 64);
    }
  }
}

const uint64_t *vm_two_over_pi(unsigned *nwords) {
  pthread_once(&two_over_pi_once, two_over_pi_init);
  if (nwords) *nwords = TWO_OVER_PI_WORDS;
  return two_over_pi;
}

static LLVMValueRef call_intr(const vm *v, const char *name, LLVMTypeRef t, LLVMValueRef *args,
                              unsigned n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, &t, 1),
                        LLVMGetIntrinsicDeclaration(v->mod, id, &t, 1), args, n, "");
}

static void add_enum_attr(LLVMContextRef C, LLVMValueRef f, const char *name);
static void copy_target_attrs(LLVMValueRef from, LLVMValueRef to);

/* The slow path's functions stay out of line (compile time, code size) and cold. */
static void set_fn_attrs(LLVMContextRef C, LLVMValueRef f, LLVMValueRef like) {
  LLVMSetLinkage(f, LLVMInternalLinkage);
  add_enum_attr(C, f, "noinline");
  add_enum_attr(C, f, "cold");
  add_enum_attr(C, f, "nounwind");
  add_enum_attr(C, f, "willreturn");
  copy_target_attrs(like, f);
}

/* x * y = hi 2^64 + lo; an i128 product of zero-extended i64 is one mul on x86-64, and
 * mul.lo/mul.hi.u64 on NVPTX. */
static LLVMValueRef mul_wide(const vm *v, LLVMValueRef x, LLVMValueRef y, LLVMValueRef *hi) {
  LLVMTypeRef i128 = LLVMInt128TypeInContext(v->C);
  LLVMValueRef p =
      LLVMBuildMul(v->b, LLVMBuildZExt(v->b, x, i128, ""), LLVMBuildZExt(v->b, y, i128, ""), "");
  *hi = LLVMBuildTrunc(v->b, LLVMBuildLShr(v->b, p, LLVMConstInt(i128, 64, 0), ""), v->iety, "");
  return LLVMBuildTrunc(v->b, p, v->iety, "");
}

/* keops.rem_pio2(a), a finite and >= 2^16: {q, rh, rl} with a = (4k + q) pi/2 + rh + rl,
 * |rh + rl| <= pi/4. a = m 2^(e-1075) with m < 2^53; bits of 2/pi worth more than 4 (times
 * m 2^(e-1075)) drop out modulo 4, so a 192-bit window W of 2/pi starting 12 bits before
 * the first bit that matters, times m 2^11 (top bit set), gives a 2/pi mod 4 in the top two
 * bits of the low 192 bits of the product, and 190 fraction bits below them. The window's
 * low word only carries into them, so its low product is dropped; with the table's
 * truncation the fraction is good to 2^-125. The closest a double comes to a multiple of
 * pi/2 is ~2^-61 (Muller: 6381956970095103 * 2^797), so rh + rl keeps >= 63 correct bits
 * there and ~100 (the double-double product) elsewhere. One scalar function, called per
 * lane from the rare slow path: the integer work is the same for f32 (extended) and f64,
 * and kept out of line it costs no compile time in the kernels. */
static LLVMValueRef rem_pio2_fn(const vm *v, LLVMTypeRef *fty) {
  static const char name[] = "keops.rem_pio2", tname[] = "keops.two_over_pi";
  LLVMTypeRef i64 = LLVMInt64TypeInContext(v->C), f64 = LLVMDoubleTypeInContext(v->C);
  LLVMTypeRef el[3] = {i64, f64, f64}, st = LLVMStructTypeInContext(v->C, el, 3, 0);
  *fty = LLVMFunctionType(st, &f64, 1, 0);
  LLVMValueRef f = LLVMGetNamedFunction(v->mod, name);
  if (f) return f;
  const uint64_t *bits = vm_two_over_pi(NULL);
  LLVMTypeRef at = LLVMArrayType(i64, TWO_OVER_PI_WORDS);
  LLVMValueRef words[TWO_OVER_PI_WORDS];
  for (int i = 0; i < TWO_OVER_PI_WORDS; i++) words[i] = LLVMConstInt(i64, bits[i], 0);
  LLVMValueRef tab = LLVMAddGlobal(v->mod, at, tname);
  LLVMSetInitializer(tab, LLVMConstArray(i64, words, TWO_OVER_PI_WORDS));
  LLVMSetGlobalConstant(tab, 1);
  LLVMSetLinkage(tab, LLVMInternalLinkage);
  LLVMSetUnnamedAddress(tab, LLVMGlobalUnnamedAddr);

  f = LLVMAddFunction(v->mod, name, *fty);
  set_fn_attrs(v->C, f, LLVMGetBasicBlockParent(LLVMGetInsertBlock(v->b)));
  LLVMBuilderRef bb = LLVMCreateBuilderInContext(v->C);
  LLVMPositionBuilderAtEnd(bb, LLVMAppendBasicBlockInContext(v->C, f, "entry"));
  vm s = vm_make(v->mod, bb, 1, 0);
  LLVMValueRef ai = as_int(&s, LLVMGetParam(f, 0));
  LLVMValueRef e = LLVMBuildLShr(bb, ai, KI(&s, 52), "");
  LLVMValueRef m = bor(&s, LLVMBuildShl(bb, ai, KI(&s, 11), ""), KI(&s, INT64_MIN));
  /* table bit p = e - 1024 starts the window (the mask keeps any input inside the table) */
  LLVMValueRef p = band(&s, isub(&s, e, KI(&s, 1024)), KI(&s, 1023));
  LLVMValueRef wi = LLVMBuildLShr(bb, p, KI(&s, 6), ""), sh = band(&s, p, KI(&s, 63));
  LLVMValueRef t[4], w[3], hi[3], lo[3];
  for (int j = 0; j < 4; j++) {
    LLVMValueRef idx[2] = {KI(&s, 0), iadd(&s, wi, KI(&s, j))};
    t[j] = LLVMBuildLoad2(bb, i64, LLVMBuildInBoundsGEP2(bb, at, tab, idx, 2, ""), "");
  }
  for (int j = 0; j < 3; j++) {
    LLVMValueRef a3[3] = {t[j], t[j + 1], sh};
    w[j] = call_intr(&s, "llvm.fshl", i64, a3, 3);
    lo[j] = mul_wide(&s, m, w[j], &hi[j]);
  }
  /* the product modulo 2^192, less its low word: r2 2^64 + r1 */
  LLVMValueRef r1 = iadd(&s, hi[2], lo[1]);
  LLVMValueRef c = LLVMBuildZExt(bb, icmp(&s, LLVMIntULT, r1, lo[1]), i64, "");
  LLVMValueRef r2 = iadd(&s, iadd(&s, lo[0], hi[1]), c);
  /* round to the nearest quadrant: a fraction >= 1/2 becomes negative in two's complement */
  LLVMValueRef q = iadd(&s, LLVMBuildLShr(bb, r2, KI(&s, 62), ""),
                        band(&s, LLVMBuildLShr(bb, r2, KI(&s, 61), ""), KI(&s, 1)));
  LLVMValueRef H =
      bor(&s, LLVMBuildShl(bb, r2, KI(&s, 2), ""), LLVMBuildLShr(bb, r1, KI(&s, 62), ""));
  LLVMValueRef L = LLVMBuildShl(bb, r1, KI(&s, 2), "");
  /* f = H 2^-64 + L 2^-128 in three exact pieces of 53, 53 and 22 bits */
  LLVMValueRef d1 = mul(&s, itof(&s, LLVMBuildAShr(bb, H, KI(&s, 11), "")), K(&s, 0x1p-53));
  LLVMValueRef d2 = bor(&s, LLVMBuildShl(bb, band(&s, H, KI(&s, 2047)), KI(&s, 42), ""),
                        LLVMBuildLShr(bb, L, KI(&s, 22), ""));
  d2 = mul(&s, itof(&s, d2), K(&s, 0x1p-106));
  LLVMValueRef d3 = mul(&s, itof(&s, band(&s, L, KI(&s, (1 << 22) - 1))), K(&s, 0x1p-128));
  dd f1 = two_sum(&s, d1, d2);
  dd fr = fast_two_sum(&s, f1.h, add(&s, f1.l, d3));
  dd r = dd_mul(&s, fr, (dd){K(&s, 1.5707963267948966), K(&s, 6.123233995736766e-17)});
  LLVMValueRef res = LLVMGetUndef(st);
  res = LLVMBuildInsertValue(bb, res, q, 0, "");
  res = LLVMBuildInsertValue(bb, res, r.h, 1, "");
  LLVMBuildRet(bb, LLVMBuildInsertValue(bb, res, r.l, 2, ""));
  LLVMDisposeBuilder(bb);
  return f;
}

/* {q, rh, rl} = keops.rem_pio2.<vector type>(|x|, |x| in double, q, rh, rl): the fast
 * reduction's values with the lanes T <= |x| < inf replaced by keops.rem_pio2's, one call
 * per lane, through memory (vectors carried in registers across the calls were spilled
 * whole at each one). A function of its own, so that the kernel sees one call in a cold
 * block: with the lane loop inline, the register allocator spilled the values that cross
 * it in the fast path too. f32 has no rl (the double rh suffices). */
static LLVMValueRef lanes_fn(const vm *v, LLVMTypeRef *fty, int nv) {
  LLVMTypeRef rty, i32 = LLVMInt32TypeInContext(v->C);
  LLVMValueRef rem = rem_pio2_fn(v, &rty);
  vm d = vm_other(v, 1);
  LLVMTypeRef pt[5] = {v->ty, d.ty, d.ity, d.ty, d.ty},
              st = LLVMStructTypeInContext(v->C, pt + 2, (unsigned)nv, 0);
  LLVMTypeRef et[5] = {v->ety, d.ety, d.iety, d.ety, d.ety};
  *fty = LLVMFunctionType(st, pt, (unsigned)nv + 2, 0);
  char name[64];
  snprintf(name, sizeof name, "keops.rem_pio2.v%u%s", v->lanes, v->dbl ? "f64" : "f32");
  LLVMValueRef f = LLVMGetNamedFunction(v->mod, name);
  if (f) return f;
  f = LLVMAddFunction(v->mod, name, *fty);
  set_fn_attrs(v->C, f, rem);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(v->C);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(v->C, f, "entry");
  LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(v->C, f, "lane");
  LLVMBasicBlockRef call = LLVMAppendBasicBlockInContext(v->C, f, "huge");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(v->C, f, "next");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(v->C, f, "done");
  LLVMPositionBuilderAtEnd(b, entry);
  LLVMValueRef mem[5];
  for (int k = 0; k < nv + 2; k++) {
    mem[k] = LLVMBuildAlloca(b, pt[k], "");
    LLVMBuildStore(b, LLVMGetParam(f, (unsigned)k), mem[k]);
  }
  LLVMBuildBr(b, loop);
  LLVMPositionBuilderAtEnd(b, loop);
  LLVMValueRef i = LLVMBuildPhi(b, i32, "");
#define LANE(k) LLVMBuildGEP2(b, et[k], mem[k], &i, 1, "")
  LLVMValueRef axi = LLVMBuildLoad2(b, et[0], LANE(0), "");
  LLVMValueRef T = LLVMConstReal(v->ety, v->dbl ? 1e9 : 1e5),
               inf = LLVMConstReal(v->ety, __builtin_inf());
  LLVMValueRef ok = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGE, axi, T, ""),
                                 LLVMBuildFCmp(b, LLVMRealONE, axi, inf, ""), "");
  LLVMBuildCondBr(b, ok, call, next);

  LLVMPositionBuilderAtEnd(b, call);
  LLVMValueRef ai = LLVMBuildLoad2(b, et[1], LANE(1), "");
  LLVMValueRef r = LLVMBuildCall2(b, rty, rem, &ai, 1, "");
  for (int k = 0; k < nv; k++)
    LLVMBuildStore(b, LLVMBuildExtractValue(b, r, (unsigned)k, ""), LANE(k + 2));
#undef LANE
  LLVMBuildBr(b, next);

  LLVMPositionBuilderAtEnd(b, next);
  LLVMValueRef inext = LLVMBuildAdd(b, i, LLVMConstInt(i32, 1, 0), ""),
               ii[2] = {LLVMConstInt(i32, 0, 0), inext};
  LLVMBasicBlockRef back[2] = {entry, next};
  LLVMAddIncoming(i, ii, back, 2);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, inext, LLVMConstInt(i32, v->lanes, 0), ""), done,
                  loop);

  LLVMPositionBuilderAtEnd(b, done);
  LLVMValueRef res = LLVMGetUndef(st);
  for (int k = 0; k < nv; k++)
    res =
        LLVMBuildInsertValue(b, res, LLVMBuildLoad2(b, pt[k + 2], mem[k + 2], ""), (unsigned)k, "");
  LLVMBuildRet(b, res);
  LLVMDisposeBuilder(b);
  return f;
}

/* Replaces vals = {t, rh, rl} (rl: f64 only) of the lanes with T <= |x| < inf (T = 1e5 /
 * 1e9, where Cody-Waite stops being exact) by Payne-Hanek's. t is the integer view of the
 * magic-number sum, whose low two bits, the only ones used, are the quadrant's: passing t
 * rather than q = t - bits(1.5 2^52) lets the q & 1, q & 2 tests fold into tests of t as
 * before, and the slow path's q goes in as is. The fast path pays one compare, a mask test
 * and a branch. Infinite lanes keep the fast path's NaN. */
static void huge_reduce(const vm *v, LLVMValueRef ax, LLVMValueRef a, LLVMValueRef *vals, int nv) {
  LLVMBuilderRef b = v->b;
  LLVMTypeRef i1 = LLVMInt1TypeInContext(v->C), fty;
  LLVMValueRef big = fcmp(v, LLVMRealOGE, ax, KP(v, 1e9, 1e5)), any = big;
  if (v->lanes) {
    LLVMTypeRef iw = LLVMIntTypeInContext(v->C, v->lanes);
    any = icmp(v, LLVMIntNE, LLVMBuildBitCast(b, big, iw, ""), LLVMConstInt(iw, 0, 0));
  }
  LLVMValueRef ex[2] = {any, LLVMConstInt(i1, 0, 0)};
  any = call_intr(v, "llvm.expect", i1, ex, 2);
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
  LLVMBasicBlockRef from = LLVMGetInsertBlock(b),
                    slow = LLVMAppendBasicBlockInContext(v->C, fn, "trig.huge");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(v->C, fn, "trig.join");
  LLVMBuildCondBr(b, any, slow, join);

  LLVMPositionBuilderAtEnd(b, slow);
  LLVMValueRef upd[3];
  if (v->lanes) {
    LLVMValueRef args[5] = {ax, a, vals[0], vals[1], vals[2]}, f = lanes_fn(v, &fty, nv);
    LLVMValueRef r = LLVMBuildCall2(b, fty, f, args, (unsigned)nv + 2, "");
    for (int k = 0; k < nv; k++) upd[k] = LLVMBuildExtractValue(b, r, (unsigned)k, "");
  } else {
    LLVMValueRef f = rem_pio2_fn(v, &fty), r = LLVMBuildCall2(b, fty, f, &a, 1, "");
    LLVMValueRef fin = fcmp(v, LLVMRealONE, ax, kinf(v)); /* inf reads a garbage window */
    for (int k = 0; k < nv; k++)
      upd[k] = sel(v, fin, LLVMBuildExtractValue(b, r, (unsigned)k, ""), vals[k]);
  }
  LLVMBuildBr(b, join);

  LLVMPositionBuilderAtEnd(b, join);
  LLVMBasicBlockRef jb[2] = {from, slow};
  for (int k = 0; k < nv; k++) {
    LLVMValueRef ph = LLVMBuildPhi(b, LLVMTypeOf(vals[k]), ""), iv[2] = {vals[k], upd[k]};
    LLVMAddIncoming(ph, iv, jb, 2);
    vals[k] = ph;
  }
}

/* ------------------------------------------------------------------------- sin, cos -- */

/* sin(r) = r + r z S(z), cos(r) = 1 - z/2 + z^2 C(z), z = r^2 <= (pi/4 * 1.002)^2: degree 3
 * (rel 2^-32.4 / 2^-34.0) for f32, degree 5 (rel 2^-52.8 / 2^-54.8) for f64. */
static const double SIN_F[] = {-1.666666716e-01, 8.333331905e-03, -1.984007249e-04, 2.724818387e-06};
static const double SIN_D[] = {-0.16666666666666666,  0.008333333333330877,   -0.00019841269836654623,
                               2.7557316050815107e-06, -2.5051121418744084e-08, 1.5917398862926923e-10};
static const double COS_F[] = {4.166666791e-02, -1.388888806e-03, 2.480058902e-05, -2.729966013e-07};
static const double COS_D[] = {0.041666666666666664,   -0.0013888888888887356, 2.480158729870758e-05,
                               -2.755731724248724e-07, 2.0876140321425623e-09, -1.1382212606127759e-11};
static const cset SIN_P = CSET(SIN_F, SIN_D), COS_P = CSET(COS_F, COS_D);

/* |x| < 1e5 (f32), 1e9 (f64): n = round(|x| 2/pi), r = |x| - n pi/2 by Cody-Waite in double:
 * f64 cuts pi/2 into 23+23+23+53 bits (n < 2^30, so the first three products are exact, 122
 * bits of pi/2 in all); f32 promotes to double and cuts 36+36+53 bits (n < 2^17). Larger
 * finite |x| go through huge_reduce (Payne-Hanek); infinities give NaN. Quadrant q = n (+1
 * for cos) selects +-sin/+-cos. The polynomials take r = rh + rl: f32 evaluates in float
 * with the double r split in two, f64 keeps the reduction's rounding errors in rl. */
static LLVMValueRef sincos_fn(const vm *v, LLVMValueRef x, int cosine) {
  vm d = vm_other(v, 1);
  LLVMValueRef ax = fabs_(v, x);
  LLVMValueRef a = v->dbl ? ax : LLVMBuildFPExt(v->b, ax, d.ty, "");
  LLVMValueRef t, n = magic_round(&d, mul(&d, a, K(&d, 0.6366197723675814)), &t);
  static const double CW_D[] = {1.570796251296997, 7.549789415861596e-08, 5.390302529957765e-15,
                                3.2820035428735005e-22};
  static const double CW_F[] = {1.5707963267923333, 2.5633441515839558e-12, 1.0562999066987428e-23};
  LLVMValueRef rh, rl = NULL;
  if (v->dbl) {
    /* The first two steps are exact; the last two keep their rounding errors (TwoSum) so
     * that r = rh + rl is good to ~2^-100 relative: without them f64 reached 2.3 ulp. */
    LLVMValueRef r = sub(&d, sub(&d, a, mul(&d, n, K(&d, CW_D[0]))), mul(&d, n, K(&d, CW_D[1])));
    dd s3 = two_sum(&d, r, neg(&d, mul(&d, n, K(&d, CW_D[2]))));
    dd s4 = two_sum(&d, s3.h, neg(&d, mul(&d, n, K(&d, CW_D[3]))));
    dd rr = fast_two_sum(&d, s4.h, add(&d, s3.l, s4.l));
    rh = rr.h;
    rl = rr.l;
  } else {
    /* In double: 36-bit pieces times n < 2^17 are exact, r keeps 53 bits. */
    rh = sub(&d, sub(&d, sub(&d, a, mul(&d, n, K(&d, CW_F[0]))), mul(&d, n, K(&d, CW_F[1]))),
             mul(&d, n, K(&d, CW_F[2])));
  }
  LLVMValueRef red[3] = {as_int(&d, t), rh, rl};
  huge_reduce(v, ax, a, red, v->dbl ? 3 : 2);
  rh = red[1];
  rl = red[2];
  LLVMValueRef q = iadd(&d, magic_int(&d, as_flt(&d, red[0])), KI(&d, cosine));
  if (!v->dbl) {
    LLVMValueRef r = rh;
    rh = LLVMBuildFPTrunc(v->b, r, v->ty, "");
    rl = LLVMBuildFPTrunc(v->b, sub(&d, r, LLVMBuildFPExt(v->b, rh, d.ty, "")), v->ty, "");
  }
  LLVMValueRef z = mul(v, rh, rh), rz = mul(v, rh, z);
  LLVMValueRef s = add(v, rh, fmadd(v, rz, poly(v, z, &SIN_P), rl));
  /* fdlibm's k_cos: w = 1 - z/2 plus the rounding error of that subtraction. */
  LLVMValueRef hz = mul(v, K(v, 0.5), z), w = sub(v, K(v, 1.0), hz);
  LLVMValueRef tail = mul(v, mul(v, z, z), poly(v, z, &COS_P));
  tail = sub(v, tail, mul(v, rh, rl));
  LLVMValueRef c = add(v, w, add(v, sub(v, sub(v, K(v, 1.0), w), hz), tail));
  LLVMValueRef odd = icmp(&d, LLVMIntNE, band(&d, q, KI(&d, 1)), KI(&d, 0));
  LLVMValueRef flip = icmp(&d, LLVMIntNE, band(&d, q, KI(&d, 2)), KI(&d, 0));
  LLVMValueRef res = sel(v, odd, c, s);
  res = sel(v, flip, neg(v, res), res);
  if (!cosine) /* sin is odd: sign of x, also for -0 */
    res = as_flt(v, bxor(v, as_int(v, res), band(v, as_int(v, x), sign_mask(v))));
  return res;
}

/* ------------------------------------------------------------ atan, atan2, asin, acos -- */

/* atan(u) = u + u z A(z), z = u^2 <= tan(pi/8)^2 * 1.001: degree 4 (rel 2^-24.4) / degree
 * 10 (rel 2^-53.2). */
static const double ATAN_F[] = {-3.333333135e-01, 1.999954432e-01, -1.426406354e-01,
                                1.074464321e-01, -6.454303861e-02};
static const double ATAN_D[] = {-0.3333333333333333,  0.1999999999999557,   -0.14285714284675205,
                                0.11111111015843564,  -0.09090904598178781, 0.0769218358035879,
                                -0.0666451599550237,  0.05858181242845413,  -0.050855855950266406,
                                0.03923472341609496,  -0.019179695026931287};
static const cset ATAN_P = CSET(ATAN_F, ATAN_D);

/* pi/2, pi/4, pi as hi + lo pairs per precision. */
#define PIO2_H KP(v, 1.5707963267948966, 1.570796371e+00)
#define PIO2_L KP(v, 6.123233995736766e-17, -4.371138829e-08)
#define PIO4_H KP(v, 0.7853981633974483, 7.853981853e-01)
#define PIO4_L KP(v, 3.061616997868383e-17, -2.185569414e-08)

/* atan(num/den) for num, den >= 0, Cephes' reduction: ratio > tan(3pi/8) uses
 * pi/2 + atan(-den/num), ratio > tan(pi/8) uses pi/4 + atan((num-den)/(num+den)); forming
 * the reduced argument from num and den directly costs one division. u is carried as
 * u + ul: f32 forms it in double (num -+ den exact there) and splits it, f64 adds the
 * rounding errors of num -+ den (TwoSum) and of the division (Dekker's residual). With u
 * alone the mid branch reached 1.9 ulp near u = -tan(pi/8) in both precisions. */
static LLVMValueRef atan_core(const vm *v, LLVMValueRef num, LLVMValueRef den) {
  LLVMValueRef big = fcmp(v, LLVMRealOGT, num, mul(v, den, K(v, 2.414213562373095)));
  LLVMValueRef mid = fcmp(v, LLVMRealOGT, num, mul(v, den, K(v, 0.41421356237309503)));
  LLVMValueRef zero = K(v, 0.0), u, ul;
  if (v->dbl) {
    dd df = two_sum(v, num, neg(v, den)), sm = two_sum(v, num, den);
    LLVMValueRef nn = sel(v, big, neg(v, den), sel(v, mid, df.h, num));
    LLVMValueRef dn = sel(v, big, num, sel(v, mid, sm.h, den));
    LLVMValueRef nl = sel(v, big, zero, sel(v, mid, df.l, zero));
    LLVMValueRef dl = sel(v, big, zero, sel(v, mid, sm.l, zero));
    u = fdiv(v, nn, dn);
    dd p = two_prod(v, u, dn);
    ul = fdiv(v, sub(v, add(v, sub(v, sub(v, nn, p.h), p.l), nl), mul(v, u, dl)), dn);
    ul = sel(v, is_nan(v, ul), zero, ul); /* infinite or huge operands: u alone */
  } else {
    vm d = vm_other(v, 1);
    num = LLVMBuildFPExt(v->b, num, d.ty, "");
    den = LLVMBuildFPExt(v->b, den, d.ty, "");
    LLVMValueRef nn = sel(&d, big, neg(&d, den), sel(&d, mid, sub(&d, num, den), num));
    LLVMValueRef dn = sel(&d, big, num, sel(&d, mid, add(&d, num, den), den));
    LLVMValueRef ud = fdiv(&d, nn, dn);
    u = LLVMBuildFPTrunc(v->b, ud, v->ty, "");
    ul = LLVMBuildFPTrunc(v->b, sub(&d, ud, LLVMBuildFPExt(v->b, u, d.ty, "")), v->ty, "");
  }
  LLVMValueRef z = mul(v, u, u);
  LLVMValueRef bh = sel(v, big, PIO2_H, sel(v, mid, PIO4_H, zero));
  LLVMValueRef bl = sel(v, big, PIO2_L, sel(v, mid, PIO4_L, zero));
  /* atan(u + ul) = atan(u) + ul/(1 + u^2) ~ atan(u) + ul (1 - z) */
  bl = add(v, bl, fmadd(v, neg(v, z), ul, ul));
  return add(v, bh, add(v, u, fmadd(v, mul(v, u, z), poly(v, z, &ATAN_P), bl)));
}

static LLVMValueRef atan_fn(const vm *v, LLVMValueRef x) {
  return copysign_(v, atan_core(v, fabs_(v, x), K(v, 1.0)), x);
}

/* C99 F.9.1.4: quadrant from the sign bits, both zero -> 0, both infinite -> pi/4. Huge
 * operands are scaled by 1/16 so that num + den cannot overflow. */
static LLVMValueRef atan2_fn(const vm *v, LLVMValueRef y, LLVMValueRef x) {
  LLVMValueRef ay = fabs_(v, y), ax = fabs_(v, x), inf = kinf(v), zero = K(v, 0.0);
  LLVMValueRef T = KP(v, 0x1p1000, 0x1p124);
  LLVMValueRef huge = bor(v, fcmp(v, LLVMRealOGT, ay, T), fcmp(v, LLVMRealOGT, ax, T));
  LLVMValueRef sc = sel(v, huge, K(v, 0.0625), K(v, 1.0));
  LLVMValueRef a = atan_core(v, mul(v, ay, sc), mul(v, ax, sc));
  a = sel(v, band(v, fcmp(v, LLVMRealOEQ, ay, zero), fcmp(v, LLVMRealOEQ, ax, zero)), zero, a);
  a = sel(v, band(v, fcmp(v, LLVMRealOEQ, ay, inf), fcmp(v, LLVMRealOEQ, ax, inf)), PIO4_H, a);
  LLVMValueRef pi = add(v, sub(v, KP(v, 3.141592653589793, 3.141592741e+00), a),
                        KP(v, 1.2246467991473532e-16, -8.742277657e-08));
  return copysign_(v, sel(v, is_neg(v, x), pi, a), y);
}

/* asin(s) = s + s z B(z), z = s^2 <= 1/4: degree 5 (rel 2^-25.5) / degree 12 (rel 2^-53.6). */
static const double ASIN_F[] = {1.666666567e-01, 7.500098646e-02, 4.459810629e-02,
                                3.111532144e-02, 1.708165184e-02, 3.379971907e-02};
static const double ASIN_D[] = {0.16666666666666669,   0.07499999999998336,  0.04464285714654185,
                                0.030381944124502566,  0.022372173486961074, 0.017352380248742524,
                                0.013971393834714572,  0.011477452047239626, 0.010333788432917898,
                                0.0054114247018151145, 0.01752354665157868,  -0.015039405969758455,
                                0.02888322969072878};
static const cset ASIN_P = CSET(ASIN_F, ASIN_D);

/* musl's asin/acos scheme: |x| <= 1/2 directly, else through s = sqrt((1-|x|)/2) with
 * asin(|x|) = pi/2 - 2 asin(s); s is split as f + c (f = s with the low half of its mantissa
 * cleared, f*f exact, c = (z - f*f)/(s + f)) so that the cancellation against pi/2 keeps
 * s's rounding error out. |x| > 1 gives sqrt of a negative number: NaN. */
typedef struct asin_parts {
  LLVMValueRef ax, big, z, s, r, f, c;
} asin_parts;

static asin_parts asin_reduce(const vm *v, LLVMValueRef x) {
  asin_parts p;
  p.ax = fabs_(v, x);
  p.big = fcmp(v, LLVMRealOGT, p.ax, K(v, 0.5));
  p.z = sel(v, p.big, mul(v, sub(v, K(v, 1.0), p.ax), K(v, 0.5)), mul(v, x, x));
  p.s = sel(v, p.big, intr1(v, "llvm.sqrt", p.z), p.ax);
  p.r = mul(v, p.z, poly(v, p.z, &ASIN_P));
  p.f = as_flt(v, band(v, as_int(v, p.s), KI(v, v->dbl ? -(1LL << 32) : -(1LL << 12))));
  p.c = fdiv(v, sub(v, p.z, mul(v, p.f, p.f)), add(v, p.s, p.f));
  p.c = sel(v, fcmp(v, LLVMRealOEQ, p.z, K(v, 0.0)), p.z, p.c); /* |x| = 1: 0/0 */
  return p;
}

static LLVMValueRef asin_fn(const vm *v, LLVMValueRef x) {
  asin_parts p = asin_reduce(v, x);
  LLVMValueRef two = K(v, 2.0), hpio2 = mul(v, K(v, 0.5), PIO2_H);
  LLVMValueRef bigv = sub(v, hpio2, sub(v, sub(v, mul(v, mul(v, two, p.s), p.r),
                                             sub(v, PIO2_L, mul(v, two, p.c))),
                                      sub(v, hpio2, mul(v, two, p.f))));
  LLVMValueRef small = fmadd(v, p.ax, p.r, p.ax);
  return copysign_(v, sel(v, p.big, bigv, small), x);
}

static LLVMValueRef acos_fn(const vm *v, LLVMValueRef x) {
  asin_parts p = asin_reduce(v, x);
  LLVMValueRef two = K(v, 2.0);
  LLVMValueRef small = sub(v, PIO2_H, sub(v, x, sub(v, PIO2_L, mul(v, x, p.r))));
  LLVMValueRef pos = mul(v, two, add(v, p.f, fmadd(v, p.r, p.s, p.c)));
  LLVMValueRef negv = mul(v, two, sub(v, PIO2_H, add(v, p.s, sub(v, mul(v, p.r, p.s), PIO2_L))));
  return sel(v, p.big, sel(v, is_neg(v, x), negv, pos), small);
}

/* ------------------------------------------------------------------------ dispatch -- */

static const struct {
  const char *name;
  int nargs;
} FN[VM_COUNT] = {
#define X(NAME, name, nargs, emit, ref, ulp32, ulp64, lim32, lim64, dom, extra) \
  [VM_##NAME] = {name, nargs},
#include "vmath.def"
#undef X
};

/* ex2.approx.ftz.f32 of t (its model on a host), or NULL where the target has none. The
 * intrinsic's name moved between LLVM versions (llvm_compat.h): the first that exists. */
static LLVMValueRef ex2_approx(const vm *v, LLVMValueRef t) {
  static const char *const names[] = KEOPS_NVPTX_EX2_NAMES;
  if (v->dbl || v->lanes || !has_math(v, VM_MATH_EX2_APPROX)) return NULL;
  if (has_math(v, VM_MATH_EX2_MODEL)) { /* libm's exp2f, its result flushed as .ftz does */
    LLVMValueRef p = intr1(v, "llvm.exp2", t);
    return sel(v, fcmp(v, LLVMRealOLT, fabs_(v, p), K(v, 0x1p-126)), K(v, 0.0), p);
  }
  for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
    unsigned id = LLVMLookupIntrinsicID(names[k], strlen(names[k]));
    if (!id) continue;
    LLVMTypeRef ty = v->ty;
    int ov = LLVMIntrinsicIsOverloaded(id);
    return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, ov ? &ty : NULL, ov ? 1 : 0),
                          LLVMGetIntrinsicDeclaration(v->mod, id, ov ? &ty : NULL, ov ? 1 : 0), &t, 1, "");
  }
  return NULL;
}

/* VM_MATH_EX2_APPROX, the GPU's float32 exp: exp(x) = 2^(x*lh + x*ll) with lh + ll = log2(e)
 * (ll NULL: lh alone). With VM_MATH_FAST, ex2.approx(t), t = x*lh rounded: CUDA's __expf,
 * 2 + 1.17 |x| ulp (the rounding of t costs |t| 2^-24 of the exponent). Otherwise the
 * rounding is undone: r = x*lh - t exactly (an FMA), plus x*ll, and
 * exp(x) = ex2.approx(t) * (1 + r ln2): ex2.approx's 2 ulp plus a few roundings. Ranges
 * need no clamps: t = +-inf or NaN (x infinite, x*lh overflowing) makes r infinite or NaN,
 * which min(|s|, 2) maps to 2 (min of a NaN is the other operand, in PTX as in llvm.minnum):
 * harmless against ex2's 0 or inf, and |s| < 1.01 otherwise (|r| <= 2^-16). That is one
 * FMNMX (|s| is an operand modifier) where clamping x took two. */
static LLVMValueRef exp_ex2(const vm *v, LLVMValueRef x, LLVMValueRef lh, LLVMValueRef ll) {
  LLVMValueRef t = mul(v, x, lh), p = ex2_approx(v, t);
  if (!p || has_math(v, VM_MATH_FAST)) return p;
  /* llvm.fma, not fmuladd: the residual is exact only fused (an emulator host without FMA
   * calls fmaf) */
  LLVMValueRef a3[3] = {x, lh, neg(v, t)};
  LLVMValueRef r = intrinsic(v, "llvm.fma", a3, 3);
  if (ll) r = fmadd(v, x, ll, r);
  LLVMValueRef s = fabs_(v, fmadd(v, r, K(v, 0.6931471805599453), K(v, 1.0)));
  LLVMValueRef two = K(v, 2.0), a[2] = {s, two};
  return mul(v, p, intrinsic(v, "llvm.minnum", a, 2));
}

static LLVMValueRef exp_gpu_f32(const vm *v, LLVMValueRef x) {
  return exp_ex2(v, x, K(v, 1.4426950408889634), K(v, 1.4426950408889634 - (double)1.4426950408889634f));
}

LLVMValueRef vm_exp_mul(LLVMModuleRef mod, LLVMBuilderRef b, LLVMValueRef c, LLVMValueRef x) {
  if (!c || !x || LLVMTypeOf(c) != LLVMTypeOf(x) || LLVMGetTypeKind(LLVMTypeOf(x)) != LLVMFloatTypeKind)
    return NULL;
  vm v = vm_make(mod, b, 0, 0);
  if (!has_math(&v, VM_MATH_EX2_APPROX)) return NULL;
  /* a constant c beyond the range below: multiply, as without the fold */
  LLVMBool lost;
  if (LLVMIsAConstantFP(c) && !(__builtin_fabs(LLVMConstRealGetDouble(c, &lost) * 1.4426950408889634) <= 0x1.fffffep127))
    return NULL;
  /* c log2(e) rounded once, from double; beyond the float range it would make t infinite
   * for every x, and exp(c * 0) 0 or inf: NaN instead (documented with Exp) */
  vm vd = vm_make(mod, b, 1, 0);
  LLVMValueRef cd = mul(&vd, LLVMBuildFPExt(b, c, vd.ty, ""), K(&vd, 1.4426950408889634));
  LLVMValueRef ok = fcmp(&vd, LLVMRealOLE, fabs_(&vd, cd), K(&vd, 0x1.fffffep127));
  LLVMValueRef lh = sel(&v, ok, LLVMBuildFPTrunc(b, cd, v.ty, ""), K(&v, __builtin_nan("")));
  return exp_ex2(&v, x, lh, NULL);
}

static LLVMValueRef exp_fn(const vm *v, LLVMValueRef x) {
  LLVMValueRef fast = exp_gpu_f32(v, x);
  return fast ? fast : exp_core(v, x, NULL);
}

/* rsqrt, recip, div, rsqrt3: vrecip.c, with the estimates the module's target allows */
static LLVMValueRef recip_fn(const vm *v, vr_op op, LLVMValueRef x, LLVMValueRef y) {
  unsigned est = (has_math(v, VM_MATH_RCP14) ? VR_EST14 : 0) | (has_math(v, VM_MATH_RCP12) ? VR_EST12 : 0);
  return vr_emit(v->mod, v->b, op, x, y, est);
}

static LLVMValueRef build_body(const vm *v, vm_fn fn, LLVMValueRef x, LLVMValueRef y) {
  switch (fn) {
#define X(NAME, name, nargs, emit, ref, ulp32, ulp64, lim32, lim64, dom, extra) \
  case VM_##NAME: return emit;
#include "vmath.def"
#undef X
  case VM_COUNT: break;
  }
  return NULL;
}

static void add_enum_attr(LLVMContextRef C, LLVMValueRef f, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(C, kind, 0));
}

/* The body inherits the caller's target so that the always-inliner sees compatible
 * features and an out-of-line copy is compiled for the same ISA. */
static void copy_target_attrs(LLVMValueRef from, LLVMValueRef to) {
  static const char *const keys[] = {"target-cpu", "target-features"};
  for (int i = 0; i < 2; i++) {
    LLVMAttributeRef a =
        LLVMGetStringAttributeAtIndex(from, LLVMAttributeFunctionIndex, keys[i], (unsigned)strlen(keys[i]));
    if (a) LLVMAddAttributeAtIndex(to, LLVMAttributeFunctionIndex, a);
  }
}

LLVMValueRef vm_call(LLVMModuleRef mod, LLVMBuilderRef b, vm_fn fn, LLVMValueRef x, LLVMValueRef y) {
  if ((unsigned)fn >= VM_COUNT || !x) return NULL;
  int nargs = FN[fn].nargs;
  LLVMTypeRef ty = LLVMTypeOf(x), et = ty;
  unsigned lanes = 0;
  if (LLVMGetTypeKind(ty) == LLVMVectorTypeKind) {
    lanes = LLVMGetVectorSize(ty);
    et = LLVMGetElementType(ty);
  }
  LLVMTypeKind ek = LLVMGetTypeKind(et);
  if ((ek != LLVMFloatTypeKind && ek != LLVMDoubleTypeKind) || (nargs == 2 && (!y || LLVMTypeOf(y) != ty)))
    return NULL;
  int dbl = ek == LLVMDoubleTypeKind;
  char name[64];
  if (lanes)
    snprintf(name, sizeof name, "keops.%s.v%u%s", FN[fn].name, lanes, dbl ? "f64" : "f32");
  else
    snprintf(name, sizeof name, "keops.%s.%s", FN[fn].name, dbl ? "f64" : "f32");
  LLVMTypeRef params[2] = {ty, ty};
  LLVMTypeRef fty = LLVMFunctionType(ty, params, (unsigned)nargs, 0);
  LLVMValueRef f = LLVMGetNamedFunction(mod, name);
  if (!f) {
    f = LLVMAddFunction(mod, name, fty);
    LLVMSetLinkage(f, LLVMInternalLinkage);
    LLVMContextRef C = LLVMGetModuleContext(mod);
    add_enum_attr(C, f, "alwaysinline");
    add_enum_attr(C, f, "nounwind");
    add_enum_attr(C, f, "willreturn");
    LLVMBasicBlockRef at = LLVMGetInsertBlock(b);
    if (at) copy_target_attrs(LLVMGetBasicBlockParent(at), f);
    LLVMBuilderRef bb = LLVMCreateBuilderInContext(C);
    LLVMPositionBuilderAtEnd(bb, LLVMAppendBasicBlockInContext(C, f, "entry"));
    vm v = vm_make(mod, bb, dbl, lanes);
    LLVMBuildRet(bb, build_body(&v, fn, LLVMGetParam(f, 0), nargs == 2 ? LLVMGetParam(f, 1) : NULL));
    LLVMDisposeBuilder(bb);
  }
  LLVMValueRef args[2] = {x, y};
  return LLVMBuildCall2(b, fty, f, args, (unsigned)nargs, "");
}
