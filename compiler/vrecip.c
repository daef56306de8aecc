/* Reciprocal, reciprocal square root, division and x^(-3/2) (vrecip.h), for vmath's rows
 * RSQRT, RECIP, DIV, RSQRT3, RSQRT3D.
 *
 * Exact form (scalars, the generic target, NVPTX, vectors without estimates but RSQRT3D's):
 * IEEE division
 * and square root, Rsqrt(+-0) = 0, and x^(-3/2) as (1/a)/sqrt(a) with a = x + 0 (-0 -> +0)
 * and -inf read as +inf, pow's special cases (lower.c's lower_half_pow documents them).
 *
 * Estimate form, on vectors where the target has estimate instructions: AVX-512's
 * vrsqrt14/vrcp14 (relative error < 2^-14, Intel's bound; 2^-14.02 / 2^-14.17 measured on
 * Zen 4) on 512-bit vectors, AVX's vrsqrtps/vrcpps (< 1.5 2^-12 = 2^-11.4) on <8 x float>.
 * A vector takes it when every lane lies in a range where no intermediate under- or
 * overflows; otherwise (a zero, inf, NaN, negative or denormal lane, or one near the ends of
 * the range) the whole vector takes the exact form, behind a branch marked unlikely, so the
 * special values behave exactly as the exact form by construction and the common path pays
 * a subtraction, an unsigned compare and a mask test (kortest + jcc) per range instead of a
 * select per special case. The
 * range also keeps legacy rsqrtps/rcpps away from the denormals they flush.
 *
 * The estimate is not refined by Newton steps but corrected by a short series, with one
 * rounding at the end:
 *   rsqrt:   y0 = estimate cut to B bits (12 f32 / 26 f64), so y0^2 is exact; r = 1 - x y0^2
 *            by one FMA (|r| <= 2^-9.2, its rounding below 2^-34); x^(-1/2) =
 *            y0 (1 - r)^(-1/2) = y0 + y0 r (1/2 + 3/8 r + 5/16 r^2 + 35/128 r^3), the terms
 *            up to r^2 for float32 (the next one below 2^-29), r^4 for float64 (2^-67);
 *   x^-3/2:  float64 only (see vr_emit): the same with B = 17, so y0^3 is exact too, and
 *            (1 - r)^(-3/2) - 1 = r (3/2 + 15/8 r + 35/16 r^2 + 315/128 r^3), the next term
 *            below 2^-62: one rounding where sqrt and two divisions rounded three times
 *            (float32 would take B = 8, |r| <= 2^-5.9, the next term below 2^-28);
 *   1/x:     y0 = estimate, r = 1 - x y0 by one FMA, 1/x = y0 (1 + r + r^2 [+ r^3 + r^4]);
 *   x/y:     r1 = 1/y to 2^-22 (one correction), q0 = x r1, q = q0 + (x - y q0) r1 (two
 *            FMAs): q's error is q0's times r1's, 2^-44 relative, plus the last rounding.
 * Bounds: within 0.5 ulp plus the series' and estimate's leftovers; tests/test_vmath.c
 * measures every float32 of [1, 4) (rsqrt 0.502, recip 0.500 ulp, AVX-512 and AVX2) and
 * sampled float64 binades (0.500; div 0.52 on its random sweep), against vmath.def's 2 ulp.
 *
 * Divider form (RSQRT3D, vectors): r = 1/(x + 0), x^(-3/2) = r sqrt(r), one division, one
 * square root, one product; special values come out as pow's without a guard (-0 -> +inf,
 * -inf -> -0 -> +0, overflows and underflows of r are those of the result; vectors run on
 * the CPU only, whose denormals are kept: flushed, 1/x of x <= -2^126 would give -0 and +0
 * instead of NaN). Error: r's half-ulp relative error raised to 3/2, sqrt's, then the last
 * rounding: m_y (0.75/m_r + 0.5/m_s) + 0.5 ulp with m the significands in [1, 2) of y, r and
 * s = sqrt(r), at most about 2.33 ulp; 2.29 measured on every float32 of [1, 4), 2.20 on the
 * float64 binades; vmath.def's bound is 2.5.
 * lower.c alternates it with RSQRT3 across unrolled vectors, so that the divider and the FMA
 * pipes work at once.
 *
 * Cost: the estimate forms take 5 (1/x, float32) to 10 (x^-3/2) FMA-unit operations plus
 * the guard's integer compare, against one or three divider operations; measured in isolation
 * on Zen 4 (AVX-512, 512-bit vectors) rsqrt ran 2.5-3x faster, float64 1/x and x/y 1.3x,
 * float32 1/x about even (the divider is fast there); n-body: lower.c's lower_half_pow. */
#include "vrecip.h"

#include "vmir.h"

#include <stdint.h>
#include <string.h>

/* A call of a target intrinsic of fixed type (the estimates): vmir.h's are overloaded. */
static LLVMValueRef call_fixed(const vm *v, const char *name, LLVMValueRef *args, unsigned n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, NULL, 0),
                        LLVMGetIntrinsicDeclaration(v->mod, id, NULL, 0), args, n, "");
}
static LLVMValueRef sqrt_(const vm *v, LLVMValueRef a) { return intr1(v, "llvm.sqrt", a); }
/* a*b + c with one rounding (the estimate paths run on targets with FMA only) */
static LLVMValueRef fma_(const vm *v, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef a3[3] = {a, b, c};
  return intrinsic(v, "llvm.fma", a3, 3);
}

static LLVMValueRef exact(const vm *v, vr_op op, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef one = K(v, 1.0), zero = K(v, 0.0);
  switch (op) {
  case VR_RSQRT: return sel(v, fcmp(v, LLVMRealOEQ, x, zero), zero, fdiv(v, one, sqrt_(v, x)));
  case VR_RECIP: return fdiv(v, one, x);
  case VR_DIV: return fdiv(v, x, y);
  case VR_RSQRT3:
  case VR_RSQRT3D: {
    LLVMValueRef a = LLVMBuildFAdd(v->b, x, zero, ""), inf = K(v, __builtin_inf());
    a = sel(v, fcmp(v, LLVMRealOEQ, a, K(v, -__builtin_inf())), inf, a);
    return fdiv(v, fdiv(v, one, a), sqrt_(v, a));
  }
  }
  return NULL;
}

/* The estimate instruction for v's type (rsqrt or rcp), or NULL where est allows none. */
static const char *estimate_name(const vm *v, int rsqrt, unsigned est) {
  if ((est & VR_EST14) && v->lanes * (v->dbl ? 64u : 32u) == 512)
    return rsqrt ? (v->dbl ? "llvm.x86.avx512.rsqrt14.pd.512" : "llvm.x86.avx512.rsqrt14.ps.512")
                 : (v->dbl ? "llvm.x86.avx512.rcp14.pd.512" : "llvm.x86.avx512.rcp14.ps.512");
  if ((est & VR_EST12) && !v->dbl && v->lanes == 8)
    return rsqrt ? "llvm.x86.avx.rsqrt.ps.256" : "llvm.x86.avx.rcp.ps.256";
  return NULL;
}

static LLVMValueRef estimate(const vm *v, const char *name, LLVMValueRef x) {
  if (strstr(name, "avx512")) { /* (a, passthrough, mask): every lane */
    LLVMValueRef a[3] = {x, LLVMConstNull(v->ty), LLVMConstAllOnes(LLVMIntTypeInContext(v->C, v->lanes))};
    return call_fixed(v, name, a, 3);
  }
  return call_fixed(v, name, &x, 1);
}

/* y0 with its mantissa cut to `bits` significant bits (truncation: within 2^(1-bits)). */
static LLVMValueRef cut(const vm *v, LLVMValueRef y0, int bits) {
  int drop = (v->dbl ? 52 : 23) - (bits - 1);
  LLVMValueRef m = splat(v, LLVMConstInt(LLVMGetElementType(v->ity), ~((1ULL << drop) - 1), 0));
  return LLVMBuildBitCast(v->b, LLVMBuildAnd(v->b, LLVMBuildBitCast(v->b, y0, v->ity, ""), m, ""), v->ty, "");
}

/* r * (c[0] + c[1] r + ... + c[n-1] r^(n-1)) */
static LLVMValueRef series(const vm *v, LLVMValueRef r, const double *c, int n) {
  LLVMValueRef p = K(v, c[n - 1]);
  for (int k = n - 2; k >= 0; k--) p = fma_(v, p, r, K(v, c[k]));
  return mul(v, r, p);
}

static LLVMValueRef fast(const vm *v, vr_op op, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef one = K(v, 1.0);
  switch (op) {
  case VR_RSQRT3:
  case VR_RSQRT: {
    static const double H[] = {0.5, 0.375, 0.3125, 0.2734375};        /* (1-r)^(-1/2) */
    static const double T[] = {1.5, 1.875, 2.1875, 2.4609375};        /* (1-r)^(-3/2) */
    int three = op == VR_RSQRT3;
    LLVMValueRef y0 = cut(v, estimate(v, name, x), three ? (v->dbl ? 17 : 8) : (v->dbl ? 26 : 12));
    LLVMValueRef w = mul(v, y0, y0), r = fma_(v, LLVMBuildFNeg(v->b, x, ""), w, one);
    LLVMValueRef base = three ? mul(v, w, y0) : y0;
    return fma_(v, base, series(v, r, three ? T : H, three || v->dbl ? 4 : 2), base);
  }
  case VR_RECIP: {
    LLVMValueRef y0 = estimate(v, name, x), r = fma_(v, LLVMBuildFNeg(v->b, x, ""), y0, one), c = r;
    for (int k = 0; k < (v->dbl ? 3 : 1); k++) c = fma_(v, c, r, r);
    return fma_(v, y0, c, y0);
  }
  case VR_DIV: {
    LLVMValueRef ny = LLVMBuildFNeg(v->b, y, ""), y0 = estimate(v, name, y);
    LLVMValueRef r1 = fma_(v, y0, fma_(v, ny, y0, one), y0), q0 = mul(v, x, r1);
    return fma_(v, fma_(v, ny, q0, x), r1, q0);
  }
  case VR_RSQRT3D: { /* no estimate, no guard: r = 1/(x + 0) keeps every special value */
    LLVMValueRef r = fdiv(v, one, LLVMBuildFAdd(v->b, x, K(v, 0.0), ""));
    return mul(v, r, sqrt_(v, r));
  }
  }
  return NULL;
}

/* a in [lo, hi] (0 < lo <= hi), per lane, false for NaN and negative lanes: one unsigned
 * compare of bit patterns, which order as the positive floats do and put -0, negatives and
 * NaNs above hi. On AVX-512 it runs beside the FMA pipes, where two FP compares took their
 * slots (Zen 4); AVX2, without unsigned vector compares, pays about what the two took. */
static LLVMValueRef within(const vm *v, LLVMValueRef a, double lo, double hi) {
  LLVMTypeRef it = LLVMGetElementType(v->ity);
  uint64_t bl, bh;
  if (v->dbl) memcpy(&bl, &lo, 8), memcpy(&bh, &hi, 8);
  else {
    float fl = (float)lo, fh = (float)hi;
    uint32_t l32, h32;
    memcpy(&l32, &fl, 4), memcpy(&h32, &fh, 4);
    bl = l32, bh = h32;
  }
  LLVMValueRef d = LLVMBuildSub(v->b, LLVMBuildBitCast(v->b, a, v->ity, ""), splat(v, LLVMConstInt(it, bl, 0)), "");
  return LLVMBuildICmp(v->b, LLVMIntULE, d, splat(v, LLVMConstInt(it, bh - bl, 0)), "");
}

/* Every lane of the estimate form's inputs in its range (see the file's comment). */
static LLVMValueRef guard(const vm *v, vr_op op, LLVMValueRef x, LLVMValueRef y) {
  int d = v->dbl;
  LLVMValueRef ok;
  switch (op) {
  case VR_RSQRT: ok = within(v, x, d ? 0x1p-1021 : 0x1p-125, d ? 0x1p1021 : 0x1p125); break;
  case VR_RSQRT3: ok = within(v, x, d ? 0x1p-680 : 0x1p-83, d ? 0x1p680 : 0x1p83); break;
  case VR_RECIP: ok = within(v, fabs_(v, x), d ? 0x1p-1021 : 0x1p-125, d ? 0x1p1021 : 0x1p125); break;
  default: /* x/y: 1/y, q and the residual x - y q0 normal */
    ok = LLVMBuildAnd(v->b, within(v, fabs_(v, y), d ? 0x1p-511 : 0x1p-63, d ? 0x1p511 : 0x1p63),
                      within(v, fabs_(v, x), d ? 0x1p-510 : 0x1p-62, d ? 0x1p510 : 0x1p62), "");
  }
  LLVMTypeRef mask = LLVMIntTypeInContext(v->C, v->lanes);
  return LLVMBuildICmp(v->b, LLVMIntEQ, LLVMBuildBitCast(v->b, ok, mask, ""), LLVMConstAllOnes(mask), "");
}

LLVMValueRef vr_emit(const vm *vp, vr_op op, LLVMValueRef x, LLVMValueRef y, unsigned est) {
  const vm v = *vp;
  LLVMBuilderRef b = v.b;
  /* float32 x^(-3/2) keeps its exact form: on Zen 4 its sqrt and two divisions beat the
   * estimate and four-term series in n-body (1.7-1.8x against 1.5x the -ffast-math loop), the
   * divider running beside the FMA pipes (and the exact form is 2.04 ulp, RSQRT3D 2.29). */
  if (op == VR_RSQRT3D) return v.lanes ? fast(&v, op, NULL, x, y) : exact(&v, op, x, y);
  int est_ok = v.lanes && !(op == VR_RSQRT3 && !v.dbl);
  const char *name = est_ok ? estimate_name(&v, op == VR_RSQRT || op == VR_RSQRT3, est) : NULL;
  if (!name || !LLVMLookupIntrinsicID(name, strlen(name))) return exact(&v, op, x, y);

  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
  LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(v.C, fn, "vr.estimate");
  LLVMBasicBlockRef bx = LLVMAppendBasicBlockInContext(v.C, fn, "vr.exact");
  LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(v.C, fn, "vr.join");
  LLVMValueRef br = LLVMBuildCondBr(b, guard(&v, op, x, y), bf, bx);
  /* the exact block is for special values: laid out of line, predicted not taken */
  LLVMMetadataRef w[3] = {LLVMMDStringInContext2(v.C, "branch_weights", 14),
                          LLVMValueAsMetadata(LLVMConstInt(LLVMInt32TypeInContext(v.C), 2000, 0)),
                          LLVMValueAsMetadata(LLVMConstInt(LLVMInt32TypeInContext(v.C), 1, 0))};
  LLVMSetMetadata(br, LLVMGetMDKindIDInContext(v.C, "prof", 4),
                  LLVMMetadataAsValue(v.C, LLVMMDNodeInContext2(v.C, w, 3)));
  LLVMPositionBuilderAtEnd(b, bf);
  LLVMValueRef vf = fast(&v, op, name, x, y);
  LLVMBuildBr(b, bj);
  LLVMPositionBuilderAtEnd(b, bx);
  LLVMValueRef vx = exact(&v, op, x, y);
  LLVMBuildBr(b, bj);
  LLVMPositionBuilderAtEnd(b, bj);
  LLVMValueRef phi = LLVMBuildPhi(b, v.ty, "");
  LLVMValueRef vals[2] = {vf, vx};
  LLVMBasicBlockRef from[2] = {bf, bx};
  LLVMAddIncoming(phi, vals, from, 2);
  return phi;
}
