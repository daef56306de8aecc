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
#include "vmir.h"
#include "vrecip.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
 * finite |x| go through vm_huge_reduce (Payne-Hanek, vhuge.c); infinities give NaN.
 * Quadrant q = n (+1 for cos) selects +-sin/+-cos. The polynomials take r = rh + rl: f32
 * evaluates in float with the double r split in two, f64 keeps the reduction's rounding
 * errors in rl. */
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
  vm_huge_reduce(v, ax, a, red, v->dbl ? 3 : 2);
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
static int has_ex2(const vm *v) { return !v->dbl && !v->lanes && has_math(v, VM_MATH_EX2_APPROX); }
static LLVMValueRef ex2_approx(const vm *v, LLVMValueRef t) {
  static const char *const names[] = KEOPS_NVPTX_EX2_NAMES;
  if (!has_ex2(v)) return NULL;
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

/* a*b rounded toward zero (NVPTX's mul.rz.ftz.f32): a finite product that overflows stays
 * finite (+-FLT_MAX) instead of becoming inf. The emulator's model: the product in double
 * (exact: 24 + 24 bits), rounded to nearest into float, then one step toward zero where that
 * rounded away; it leaves denormal products unflushed, which moves exp_gpu_f32's t by less
 * than 2^-126 (ex2 of it is 1 either way). */
static LLVMValueRef mul_rz(const vm *v, LLVMValueRef a, LLVMValueRef b) {
  if (has_math(v, VM_MATH_EX2_MODEL)) {
    vm d = vm_other(v, 1);
    LLVMValueRef pd = mul(&d, LLVMBuildFPExt(v->b, a, d.ty, ""), LLVMBuildFPExt(v->b, b, d.ty, ""));
    LLVMValueRef p = LLVMBuildFPTrunc(v->b, pd, v->ty, "");
    LLVMValueRef away = fcmp(&d, LLVMRealOGT, fabs_(&d, LLVMBuildFPExt(v->b, p, d.ty, "")), fabs_(&d, pd));
    return sel(v, away, as_flt(v, isub(v, as_int(v, p), KI(v, 1))), p);
  }
  static const char name[] = "llvm.nvvm.mul.rz.ftz.f";
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef a2[2] = {a, b};
  return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, NULL, 0),
                        LLVMGetIntrinsicDeclaration(v->mod, id, NULL, 0), a2, 2, "");
}

/* VM_MATH_EX2_APPROX, the GPU's float32 exp(c*x), c = lh / log2(e) (vm_exp_mul): with
 * VM_MATH_FAST, ex2.approx(t), t = x*lh rounded: CUDA's __expf, 2 + 1.17 |x| ulp (the
 * rounding of t costs |t| 2^-24 of the exponent). Otherwise the rounding is undone:
 * r = x*lh - t exactly (an FMA) and exp = ex2.approx(t) * (1 + r ln2): ex2.approx's 2 ulp
 * plus a few roundings. Ranges need no clamps: t = +-inf or NaN (x infinite, x*lh
 * overflowing) makes r infinite or NaN, which min(|s|, 2) maps to 2 (min of a NaN is the
 * other operand, in PTX as in llvm.minnum): harmless against ex2's 0 or inf, and |s| < 1.01
 * otherwise (|r| <= 2^-16). That is one FMNMX (|s| is an operand modifier) where clamping x
 * took two. */
static LLVMValueRef exp_ex2(const vm *v, LLVMValueRef x, LLVMValueRef lh) {
  LLVMValueRef t = mul(v, x, lh), p = ex2_approx(v, t);
  if (!p || has_math(v, VM_MATH_FAST)) return p;
  /* llvm.fma, not fmuladd: the residual is exact only fused (an emulator host without FMA
   * calls fmaf) */
  LLVMValueRef a3[3] = {x, lh, neg(v, t)};
  LLVMValueRef r = intrinsic(v, "llvm.fma", a3, 3);
  LLVMValueRef s = fabs_(v, fmadd(v, r, K(v, 0.6931471805599453), K(v, 1.0)));
  LLVMValueRef two = K(v, 2.0), a[2] = {s, two};
  return mul(v, p, intrinsic(v, "llvm.minnum", a, 2));
}

/* The GPU's float32 exp(x), the same way but in natural units (Cody-Waite): t = x log2(e)
 * rounded toward zero, r = x - t ln2 with ln2 in two pieces (FMAs: the first cancels
 * exactly), exp(x) = ex2.approx(t) * e^r = p + p r (|r| <= 2^-16, so r^2/2 < 2^-33): six
 * instructions where exp_ex2's form takes seven, and one rounding fewer. Ranges: t is finite
 * for finite x (rounded toward zero), so r is finite there, and NaN only for x = +-inf
 * (inf - inf); min(r, 2^-10) maps that NaN to 2^-10, harmless against p = inf or 0, and a
 * huge finite r comes only with p = inf (r > 0, min keeps it finite) or p = 0 (p r = 0). */
static LLVMValueRef exp_gpu_f32(const vm *v, LLVMValueRef x) {
  if (!has_ex2(v)) return NULL;
  if (has_math(v, VM_MATH_FAST)) return exp_ex2(v, x, K(v, 1.4426950408889634));
  LLVMValueRef t = mul_rz(v, x, K(v, 1.4426950408889634)), p = ex2_approx(v, t);
  if (!p) return NULL;
  LLVMValueRef a3[3] = {neg(v, t), K(v, 0.6931471805599453), x};
  LLVMValueRef r = intrinsic(v, "llvm.fma", a3, 3);
  LLVMValueRef b3[3] = {neg(v, t), K(v, 0.6931471805599453 - (double)0.6931471805599453f), r};
  r = intrinsic(v, "llvm.fma", b3, 3);
  LLVMValueRef m[2] = {r, K(v, 0x1p-10)};
  LLVMValueRef c3[3] = {p, intrinsic(v, "llvm.minnum", m, 2), p};
  return intrinsic(v, "llvm.fma", c3, 3);
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
  return exp_ex2(&v, x, lh);
}

static LLVMValueRef exp_fn(const vm *v, LLVMValueRef x) {
  LLVMValueRef fast = exp_gpu_f32(v, x);
  return fast ? fast : exp_core(v, x, NULL);
}

/* rsqrt, recip, div, rsqrt3, rsqrt3d: vrecip.c, with the estimates the module's target allows */
static LLVMValueRef recip_fn(const vm *v, vr_op op, LLVMValueRef x, LLVMValueRef y) {
  unsigned est = (has_math(v, VM_MATH_RCP14) ? VR_EST14 : 0) | (has_math(v, VM_MATH_RCP12) ? VR_EST12 : 0);
  return vr_emit(v, op, x, y, est);
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
