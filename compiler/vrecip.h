/* Reciprocals, reciprocal square roots and division for vmath's rows RSQRT, RECIP, DIV,
 * RSQRT3 and RSQRT3D (vmath.def): exact IEEE operations everywhere, except on vectors where
 * the target has estimate instructions (vmath.h's VM_MATH_RCP14 / VM_MATH_RCP12), where they
 * are an estimate and a polynomial correction, within 2 ulp, and RSQRT3D's vectors, which
 * take r sqrt(r), r = 1/x (measured bounds in vrecip.c). */
#ifndef KEOPS_VRECIP_H
#define KEOPS_VRECIP_H

#include "vmir.h"

typedef enum vr_op {
  VR_RSQRT,  /* 1/sqrt(x), and 0 for x = +-0 (KeOps's Rsqrt) */
  VR_RECIP,  /* 1/x */
  VR_DIV,    /* x/y */
  VR_RSQRT3, /* x^(-3/2) with pow's special cases: +inf at +-0, +0 at -inf, NaN below 0 */
  VR_RSQRT3D, /* the same, its vector form on the divider: r sqrt(r), r = 1/x (vrecip.c) */
} vr_op;

/* Estimate instructions a caller allows (vmath.c passes the module's VM_MATH_* shortcuts). */
enum { VR_EST14 = 1, /* AVX-512 rsqrt14/rcp14, 512-bit vectors of float or double */
       VR_EST12 = 2  /* AVX rsqrtps/rcpps, <8 x float> */ };

/* Emits op(x) (op(x, y) for VR_DIV) at v->b's position, inside the body of a vmath function
 * (the estimate paths add basic blocks to it and leave v->b at the end of the last one). x
 * and y have v's type: float, double or a vector of either. */
LLVMValueRef vr_emit(const vm *v, vr_op op, LLVMValueRef x, LLVMValueRef y, unsigned est);

#endif
