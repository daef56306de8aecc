/* Payne-Hanek reduction of huge arguments of sin and cos (vmath.c's sincos_fn): the bits of
 * 2/pi, a scalar out-of-line keops.rem_pio2, its per-lane driver, and the branch that sends
 * a vector with a huge lane there. */
#include "vmath.h"
#include "vmir.h"

#include <pthread.h>
#include <stdio.h>

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
void vm_huge_reduce(const vm *v, LLVMValueRef ax, LLVMValueRef a, LLVMValueRef *vals, int nv) {
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

