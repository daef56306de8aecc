/* Math functions as LLVM IR (polynomials with range reduction), scalar or vector, float or
 * double. Target-neutral IR (fmul/fadd/llvm.fma/bitcasts/integer ops, no target intrinsics)
 * so the CPU and NVPTX backends share it. libm calls would stop vectorization and do not
 * exist on the GPU. */
#ifndef KEOPS_VMATH_H
#define KEOPS_VMATH_H

#include <llvm-c/Core.h>
#include <stdint.h>

/* One per row of vmath.def (the method and the accuracy of each are documented there). */
typedef enum vm_fn {
#define X(NAME, name, nargs, emit, ref, ulp32, ulp64, lim32, lim64, dom, extra) VM_##NAME,
#include "vmath.def"
#undef X
  VM_COUNT
} vm_fn;

/* Emits fn(x) (or fn(x, y) for the two-argument rows) at the builder's position. x and y have
 * the same type: float, double, or a vector of either. The body lives in an internal,
 * always-inline function of `mod` named "keops.<fn>.<type>" created on first use, so the IR
 * stays readable and each variant is emitted once per module (sin and cos add the noinline
 * "keops.rem_pio2", "keops.rem_pio2.<vector type>" and the table "keops.two_over_pi"). NaN
 * and infinities propagate as libm does; denormal inputs are handled (no flush-to-zero
 * assumed). */
LLVMValueRef vm_call(LLVMModuleRef mod, LLVMBuilderRef b, vm_fn fn, LLVMValueRef x,
                     LLVMValueRef y);

/* The bits of 2/pi that sin and cos reduce huge arguments with, computed on first use:
 * word 0 is zero, word j holds fraction bits 64(j-1)+1 .. 64j, most significant first
 * (word 1 = 0xA2F9836E4E441529). *nwords (if not NULL) gets the count. For tests. */
const uint64_t *vm_two_over_pi(unsigned *nwords);

/* Target shortcuts (kt_isa.math), recorded in the module by vm_set_math before vm_call:
 *   VM_MATH_SCALEF      AVX-512's vscalef scales exp's result by 2^n in one rounding;
 *   VM_MATH_EX2_APPROX  PTX's ex2.approx.f32 computes float32 exp's 2^t (about 2-3 ulp);
 *   VM_MATH_EX2_MODEL   with EX2_APPROX, on a host (the GPU emulator): ex2.approx.ftz as
 *                       libm's exp2f with its result flushed to zero below 2^-126 (exp2f is
 *                       within 1 ulp, the hardware 2: tests must allow the hardware's bound),
 *                       and mul.rz.ftz (exp's argument) rounded toward zero in double. */
/*   VM_MATH_FAST        with EX2_APPROX: exp is ex2.approx(x log2(e)) alone (CUDA's __expf,
 *                       2 + 1.17 |x| ulp), for keops_kernel_desc.fast_math.
 *   VM_MATH_RCP14       AVX-512's vrsqrt14/vrcp14 estimates for rsqrt, recip, div, rsqrt3
 *                       on 512-bit vectors (vrecip.c; within 2 ulp);
 *   VM_MATH_RCP12       AVX's vrsqrtps/vrcpps for the same on <8 x float>. */
enum { VM_MATH_SCALEF = 1, VM_MATH_EX2_APPROX = 2, VM_MATH_EX2_MODEL = 4, VM_MATH_FAST = 8,
       VM_MATH_RCP14 = 16, VM_MATH_RCP12 = 32 };
void vm_set_math(LLVMModuleRef m, unsigned flags);

/* exp(c * x) for float scalars where the module's target has VM_MATH_EX2_APPROX, else NULL
 * (then the caller multiplies and calls exp). c is meant to be computed outside the loop that
 * computes x (LICM hoists what depends on c alone): c log2(e) is rounded once, from double,
 * and exp's own scaling by log2(e) takes the place of the multiplication by c: the error of
 * exp(round(c * x)), one multiplication and one correction term fewer.
 * |c| > 2.3e38 (c log2(e) beyond the float range) gives NaN. */
LLVMValueRef vm_exp_mul(LLVMModuleRef mod, LLVMBuilderRef b, LLVMValueRef c, LLVMValueRef x);

#endif
