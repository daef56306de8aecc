/* An LLVM fatal error (its "Cannot select", a pass's own check) is a KEOPS_ERROR_COMPILE
 * with LLVM's reason, and the process and LLVM stay usable; invalid IR and a bad pipeline are
 * compile errors too. Each case builds its module through kc_compile, as every target does.
 * The compile stopped by a fatal error abandons its LLVM objects by design (emit.c), so this
 * suite runs with tests/lsan-fatal.supp under LeakSanitizer. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "cpu.h"
#include "emit.h"
#include "keops.h"
#include "testutil.h"

/* A host module calling an NVPTX intrinsic: the x86 instruction selector cannot select it and
 * reports a fatal error. */
static LLVMModuleRef build_unselectable(LLVMContextRef C, const kc_job *j, kerr *e) {
  (void)j, (void)e;
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("bad", C);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(C);
  LLVMTypeRef fty = LLVMFunctionType(i32, NULL, 0, 0);
  LLVMValueRef tid = LLVMAddFunction(m, "llvm.nvvm.read.ptx.sreg.tid.x", fty);
  LLVMValueRef f = LLVMAddFunction(m, "f", fty);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(C);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(C, f, "entry"));
  LLVMBuildRet(b, LLVMBuildCall2(b, fty, tid, NULL, 0, ""));
  LLVMDisposeBuilder(b);
  return m;
}

/* A function without a terminator: invalid IR, which the verifier must catch first. */
static LLVMModuleRef build_invalid(LLVMContextRef C, const kc_job *j, kerr *e) {
  (void)j, (void)e;
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("invalid", C);
  LLVMValueRef f = LLVMAddFunction(m, "f", LLVMFunctionType(LLVMVoidTypeInContext(C), NULL, 0, 0));
  LLVMAppendBasicBlockInContext(C, f, "entry");
  return m;
}

static char *compile_with(kc_build_fn build, const char *pipeline, kc_out out, kerr *e) {
  kt_target t;
  kerr_clear(e);
  ck_assert_int_eq(kt_pick(&t, "host", e), 0);
  LLVMTargetMachineRef tm = kt_machine(&t, e);
  ck_assert_ptr_nonnull(tm);
  kc_job j = {tm, build, NULL, NULL, "test", pipeline, out, 0};
  size_t n = 0;
  char *code = kc_compile(&j, &n, e);
  LLVMDisposeTargetMachine(tm);
  return code;
}

START_TEST(fatal_error_is_a_status) {
  kerr e;
  char *code = compile_with(build_unselectable, "function(instcombine)", KC_OBJ, &e);
  ck_assert_ptr_null(code);
  ck_assert_int_eq(e.status, KEOPS_ERROR_COMPILE);
  ck_assert_msg(strstr(e.msg, "fatal error") && strstr(e.msg, "Cannot select"), "%s", e.msg);
  /* the process and LLVM are still usable: a real kernel compiles and runs, exactly */
  keops_context *ctx = NULL;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  static const char *const aliases[] = {"x = Vi(1)", "y = Vj(1)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = "x*y";
  d.aliases = aliases;
  d.n_aliases = 2;
  d.dtype = KEOPS_FLOAT64;
  d.axis = KEOPS_AXIS_J;
  keops_kernel *k = NULL;
  ck_assert_int_eq(keops_kernel_create(ctx, &d, &k), KEOPS_OK);
  double x[3] = {0, 1, 2}, y[2] = {3, 4}, out[3];
  const void *args[2] = {x, y};
  void *outs[1] = {out};
  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_CPU;
  ck_assert_msg(keops_kernel_run(k, 3, 2, args, outs, &o) == KEOPS_OK, "%s", keops_last_error());
  for (int q = 0; q < 3; q++) ck_assert_double_eq(out[q], 7 * x[q]);
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
}
END_TEST

START_TEST(invalid_ir_and_pipeline) {
  kerr e;
  ck_assert_ptr_null(compile_with(build_invalid, "function(instcombine)", KC_OBJ, &e));
  ck_assert_int_eq(e.status, KEOPS_ERROR_COMPILE);
  ck_assert_msg(strstr(e.msg, "invalid kernel IR"), "%s", e.msg);
  ck_assert_ptr_null(compile_with(build_unselectable, "no-such-pass", KC_OBJ, &e));
  ck_assert_int_eq(e.status, KEOPS_ERROR_COMPILE);
  ck_assert_msg(strstr(e.msg, "optimisation failed") && strstr(e.msg, "no-such-pass"), "%s", e.msg);
  char *ir = compile_with(build_unselectable, "function(instcombine)", KC_IR, &e);
  ck_assert_msg(ir && strstr(ir, "llvm.nvvm.read.ptx.sreg.tid.x"), "%s", e.msg); /* IR only */
  free(ir);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("fatal");
  TCase *tc = tcase_create("fatal");
  tcase_add_test(tc, fatal_error_is_a_status);
  tcase_add_test(tc, invalid_ir_and_pipeline);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(suite(), 0) ? EXIT_FAILURE : EXIT_SUCCESS; }
