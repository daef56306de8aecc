/* vmath's IR-building kit, shared by the files that emit its function bodies (vmath.c,
 * vrecip.c, vhuge.c): a value shape (vm), one-line builders over it, double-double
 * arithmetic and function attributes. Everything is static inline: a header of helpers,
 * not a module. */
#ifndef KEOPS_VMIR_H
#define KEOPS_VMIR_H

#include <llvm-c/Core.h>
#include <stdint.h>
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

static inline vm vm_make(LLVMModuleRef mod, LLVMBuilderRef b, int dbl, unsigned lanes) {
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

static inline LLVMValueRef splat(const vm *v, LLVMValueRef s) {
  if (!v->lanes) return s;
  LLVMValueRef small[64], *e = v->lanes <= 64 ? small : malloc(v->lanes * sizeof *e);
  for (unsigned i = 0; i < v->lanes; i++) e[i] = s;
  LLVMValueRef r = LLVMConstVector(e, v->lanes);
  if (e != small) free(e);
  return r;
}

/* Float constant splatted to v's type (rounded to the element format). */
static inline LLVMValueRef K(const vm *v, double c) { return splat(v, LLVMConstReal(v->ety, c)); }
/* Constant by precision: d for double, f for float. */
static inline LLVMValueRef KP(const vm *v, double d, double f) { return K(v, v->dbl ? d : f); }
static inline LLVMValueRef KI(const vm *v, long long c) {
  return splat(v, LLVMConstInt(v->iety, (unsigned long long)c, 1));
}

static inline LLVMValueRef add(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(v->b, a, b, ""); }
static inline LLVMValueRef sub(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(v->b, a, b, ""); }
static inline LLVMValueRef mul(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(v->b, a, b, ""); }
static inline LLVMValueRef fdiv(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(v->b, a, b, ""); }
static inline LLVMValueRef neg(const vm *v, LLVMValueRef a) { return LLVMBuildFNeg(v->b, a, ""); }
static inline LLVMValueRef sel(const vm *v, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(v->b, c, a, b, "");
}
static inline LLVMValueRef fcmp(const vm *v, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(v->b, p, a, b, "");
}
static inline LLVMValueRef icmp(const vm *v, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(v->b, p, a, b, "");
}
static inline LLVMValueRef bor(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildOr(v->b, a, b, ""); }
static inline LLVMValueRef band(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAnd(v->b, a, b, ""); }
static inline LLVMValueRef bxor(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildXor(v->b, a, b, ""); }
static inline LLVMValueRef iadd(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(v->b, a, b, ""); }
static inline LLVMValueRef isub(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(v->b, a, b, ""); }
static inline LLVMValueRef as_int(const vm *v, LLVMValueRef x) { return LLVMBuildBitCast(v->b, x, v->ity, ""); }
static inline LLVMValueRef as_flt(const vm *v, LLVMValueRef i) { return LLVMBuildBitCast(v->b, i, v->ty, ""); }
static inline LLVMValueRef itof(const vm *v, LLVMValueRef i) { return LLVMBuildSIToFP(v->b, i, v->ty, ""); }

static inline LLVMValueRef intrinsic(const vm *v, const char *name, LLVMValueRef *args, unsigned n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef t = v->ty;
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(v->mod, id, &t, 1);
  return LLVMBuildCall2(v->b, LLVMIntrinsicGetType(v->C, id, &t, 1), fn, args, n, "");
}
static inline LLVMValueRef intr1(const vm *v, const char *name, LLVMValueRef a) {
  return intrinsic(v, name, &a, 1);
}
static inline LLVMValueRef fabs_(const vm *v, LLVMValueRef a) { return intr1(v, "llvm.fabs", a); }
static inline LLVMValueRef copysign_(const vm *v, LLVMValueRef mag, LLVMValueRef sgn) {
  LLVMValueRef a[2] = {mag, sgn};
  return intrinsic(v, "llvm.copysign", a, 2);
}
/* a*b + c, fused where the target has FMA. */
static inline LLVMValueRef fmadd(const vm *v, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
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
static inline LLVMValueRef poly(const vm *v, LLVMValueRef x, const cset *cs) {
  const double *c = v->dbl ? cs->d : cs->f;
  int n = v->dbl ? cs->nd : cs->nf;
  LLVMValueRef r = K(v, c[n - 1]);
  for (int k = n - 2; k >= 0; k--) r = fmadd(v, r, x, K(v, c[k]));
  return r;
}

/* round-to-nearest-even of x (|x| < 2^(mbits-1)) without fptosi or llvm.rint: *t gets
 * x + 1.5*2^mbits, whose bits minus the constant's bits are round(x) as an integer. */
static inline LLVMValueRef magic_round(const vm *v, LLVMValueRef x, LLVMValueRef *t) {
  LLVMValueRef M = KP(v, 6755399441055744.0, 12582912.0); /* 1.5*2^52, 1.5*2^23 */
  *t = add(v, x, M);
  return sub(v, *t, M);
}
static inline LLVMValueRef magic_int(const vm *v, LLVMValueRef t) {
  return isub(v, as_int(v, t), as_int(v, KP(v, 6755399441055744.0, 12582912.0)));
}

/* 2^n for integer n within the normal exponent range, by building the exponent field. */
static inline LLVMValueRef pow2i(const vm *v, LLVMValueRef n) {
  return as_flt(v, LLVMBuildShl(v->b, iadd(v, n, KI(v, v->bias)), KI(v, v->mbits), ""));
}

static inline LLVMValueRef is_nan(const vm *v, LLVMValueRef x) { return fcmp(v, LLVMRealUNO, x, x); }
static inline LLVMValueRef sign_mask(const vm *v) { return KI(v, v->dbl ? INT64_MIN : INT32_MIN); }
static inline LLVMValueRef is_neg(const vm *v, LLVMValueRef x) {
  return icmp(v, LLVMIntSLT, as_int(v, x), KI(v, 0));
}
static inline LLVMValueRef kinf(const vm *v) { return K(v, __builtin_inf()); }

/* Same lane count, other precision (f32 functions that reduce or evaluate in double). */
static inline vm vm_other(const vm *v, int dbl) { return vm_make(v->mod, v->b, dbl, v->lanes); }

/* ---------------------------------------------------------- double-double arithmetic -- */
/* Knuth's TwoSum, Dekker's Fast2Sum and product (Veltkamp split): error-free without FMA.
 * Used by f64 pow (log in double-double), f64 sin/cos (reduction error) and atan. */
typedef struct dd {
  LLVMValueRef h, l;
} dd;

static inline dd two_sum(const vm *v, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef s = add(v, a, b), bb = sub(v, s, a);
  LLVMValueRef e = add(v, sub(v, a, sub(v, s, bb)), sub(v, b, bb));
  return (dd){s, e};
}
static inline dd fast_two_sum(const vm *v, LLVMValueRef a, LLVMValueRef b) { /* |a| >= |b| */
  LLVMValueRef s = add(v, a, b);
  return (dd){s, sub(v, b, sub(v, s, a))};
}
static inline dd split(const vm *v, LLVMValueRef a) {
  LLVMValueRef c = mul(v, a, KP(v, 134217729.0, 4097.0)); /* 2^27+1, 2^12+1 */
  LLVMValueRef h = sub(v, c, sub(v, c, a));
  return (dd){h, sub(v, a, h)};
}
static inline dd two_prod(const vm *v, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef p = mul(v, a, b);
  dd x = split(v, a), y = split(v, b);
  LLVMValueRef e = sub(v, mul(v, x.h, y.h), p);
  e = add(v, add(v, add(v, e, mul(v, x.h, y.l)), mul(v, x.l, y.h)), mul(v, x.l, y.l));
  return (dd){p, e};
}
/* (a.h + a.l) * (b.h + b.l), dropping a.l*b.l. */
static inline dd dd_mul(const vm *v, dd a, dd b) {
  dd p = two_prod(v, a.h, b.h);
  p.l = add(v, p.l, add(v, mul(v, a.h, b.l), mul(v, a.l, b.h)));
  return fast_two_sum(v, p.h, p.l);
}

/* ------------------------------------------------------------------ function attributes -- */

static inline void add_enum_attr(LLVMContextRef C, LLVMValueRef f, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(C, kind, 0));
}

/* The body inherits the caller's target so that the always-inliner sees compatible
 * features and an out-of-line copy is compiled for the same ISA. */
static inline void copy_target_attrs(LLVMValueRef from, LLVMValueRef to) {
  static const char *const keys[] = {"target-cpu", "target-features"};
  for (int i = 0; i < 2; i++) {
    LLVMAttributeRef a =
        LLVMGetStringAttributeAtIndex(from, LLVMAttributeFunctionIndex, keys[i], (unsigned)strlen(keys[i]));
    if (a) LLVMAddAttributeAtIndex(to, LLVMAttributeFunctionIndex, a);
  }
}

/* Payne-Hanek reduction of the lanes of ax = |a| >= the Cody-Waite limit (vhuge.c): updates
 * vals[0 .. nv-1] (the quadrant's integer view and the reduced argument's parts) in place. */
void vm_huge_reduce(const vm *v, LLVMValueRef ax, LLVMValueRef a, LLVMValueRef *vals, int nv);

#endif
