/* keops-dump, run as a program (KEOPS_DUMP is its path, from CMake): the three views of the
 * seed formula and its gradient, exit statuses, and errors identical to the API's. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "testutil.h"

#ifndef KEOPS_DUMP
#error "KEOPS_DUMP must name the keops-dump binary"
#endif

#define SEED_ALIASES "'x = Vi(3)' 'y = Vj(3)' 'a = Vj(1)' 'p = Pm(1)'"
#define SEED_ARGS "--axis=1 'Square(p-a)*Exp(x+y)' " SEED_ALIASES
#define GRAD_ARGS "--axis=0 'Grad(Square(p-a)*Exp(x+y), y, e)' " SEED_ALIASES " 'e = Vi(3)'"

typedef struct result {
  int status; /* exit status, -1 if it did not exit */
  char *text; /* stdout, or stderr when asked */
} result;

/* Runs keops-dump with args (shell words, already quoted) and captures one stream. */
static result run_dump(const char *args, int want_stderr) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' %s %s", KEOPS_DUMP, args,
           want_stderr ? "2>&1 >/dev/null" : "2>/dev/null");
  result r;
  r.text = tu_command_output(cmd, &r.status);
  return r;
}

static void expect_output(const char *args, const char *const *needles) {
  result r = run_dump(args, 0);
  ck_assert_msg(r.status == 0, "keops-dump %s: exit %d", args, r.status);
  for (int k = 0; needles[k]; k++)
    ck_assert_msg(strstr(r.text, needles[k]), "keops-dump %s: output lacks '%s':\n%.2000s", args,
                  needles[k], r.text);
  free(r.text);
}

START_TEST(seed_views) {
  expect_output("--emit=tree " SEED_ARGS,
                (const char *const[]){"formula:\n  Mult dim=3", "Var x pos=0 cat=Vi dim=3",
                                      "Var p pos=3 cat=Pm dim=1", "Exp dim=3", "Square dim=1",
                                      NULL});
  expect_output(
      SEED_ARGS, /* simplified is the default */
      (const char *const[]){"formula:", "named:", "reduction: Sum, axis 1",
                            "inputs:    0: x = Vi(3), 1: y = Vj(3), 2: a = Vj(1), 3: p = Pm(1)",
                            "outputs:   0: M rows x 3 float32", "key:", NULL});
  expect_output("--emit=dot " SEED_ARGS, (const char *const[]){"digraph", "}", NULL});
  /* the code views: the CPU kernel and its combine step, the GPU kernels */
  expect_output("--emit=llvm " SEED_ARGS,
                (const char *const[]){"define void @keops_kernel(", "keops_kernel_combine", NULL});
  expect_output("--emit=llvm-opt --target=avx2 " SEED_ARGS,
                (const char *const[]){"<8 x float>", "\"target-cpu\"=\"haswell\"", NULL});
  expect_output("--emit=asm --target=generic " SEED_ARGS, (const char *const[]){"keops_kernel:", NULL});
  expect_output("--emit=ptx --gpu-arch=sm_90 " SEED_ARGS,
                (const char *const[]){".target sm_90", ".entry keops_kernel(", ".entry keops_combine(", NULL});
  expect_output("--emit=nvvm " SEED_ARGS, (const char *const[]){"ptx_kernel", "nvptx64", NULL});
}
END_TEST

START_TEST(grad_views) {
  expect_output("--emit=tree " GRAD_ARGS,
                (const char *const[]){"formula:\n", "Var e pos=4 cat=Vi dim=3", NULL});
  expect_output("--emit=simplified --dtype=float64 " GRAD_ARGS,
                (const char *const[]){"reduction: Sum, axis 0 (one output row per j",
                                      "4: e = Vi(3)", "outputs:   0: N rows x 3 float64", NULL});
  expect_output("--emit=dot " GRAD_ARGS, (const char *const[]){"digraph", NULL});
  expect_output("--emit=asm " GRAD_ARGS, (const char *const[]){"keops_kernel:", NULL});
  expect_output("--emit=ptx " GRAD_ARGS, (const char *const[]){".target sm_80", NULL});
}
END_TEST

/* The canonical text is the same for differently spaced formulas. */
START_TEST(canonical_spacing) {
  result a = run_dump("--axis=j 'x+y' 'x = Vi(3)' 'y = Vj(3)'", 0);
  result b = run_dump("--axis=1 ' x  +   y ' 'x=Vi(3)' 'y =Vj( 3 )'", 0);
  ck_assert_int_eq(a.status, 0);
  ck_assert_str_eq(a.text, b.text);
  free(a.text);
  free(b.text);
}
END_TEST

/* The message on stderr is the API's, byte for byte, and the exit status 1. */
START_TEST(bad_input) {
  static const char *const aliases[] = {"x = Vi(3)", "y = Vj(3)", "a = Vj(1)", "p = Pm(1)"};
  keops_context *ctx;
  keops_kernel *k;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = "Square(p-a)*Exx(x+y)";
  d.aliases = aliases;
  d.n_aliases = 4;
  d.axis = KEOPS_AXIS_I;
  ck_assert_int_ne(keops_kernel_create(ctx, &d, &k), KEOPS_OK);
  result r = run_dump("--axis=0 'Square(p-a)*Exx(x+y)' " SEED_ALIASES, 1);
  ck_assert_int_eq(r.status, 1);
  char want[8192];
  snprintf(want, sizeof want, "%s\n", keops_last_error());
  ck_assert_str_eq(r.text, want);
  free(r.text);

  d.formula = "x";
  d.reduction = "KMin";
  ck_assert_int_ne(keops_kernel_create(ctx, &d, &k), KEOPS_OK);
  r = run_dump("--axis=i --reduction=KMin x " SEED_ALIASES, 1);
  ck_assert_int_eq(r.status, 1);
  snprintf(want, sizeof want, "%s\n", keops_last_error());
  ck_assert_str_eq(r.text, want);
  free(r.text);
  keops_context_destroy(ctx);
}
END_TEST

START_TEST(command_line) {
  result r = run_dump("--help", 0);
  ck_assert_int_eq(r.status, 0);
  ck_assert_ptr_nonnull(strstr(r.text, "usage: keops-dump"));
  free(r.text);
  static const char *const bad[] = {"--emit=sass x 'x = Vi(1)'", "--axis=one x 'x = Vi(1)'",
                                    "--bogus x 'x = Vi(1)'", "", "--dtype=int64 x 'x = Vi(1)'",
                                    "x 'x = Vi(1)'" /* no --axis: no default */};
  for (int k = 0; k < 6; k++) {
    r = run_dump(bad[k], 1);
    ck_assert_msg(r.status == 2, "keops-dump %s: exit %d", bad[k], r.status);
    ck_assert_msg(strstr(r.text, "usage: keops-dump"), "keops-dump %s: no usage", bad[k]);
    free(r.text);
  }
  r = run_dump("x 'x = Vi(1)'", 1);
  ck_assert_ptr_nonnull(strstr(r.text, "keops-dump: missing --axis: 1 (or j) reduces over j"));
  free(r.text);
  /* a formula starting with '-' after "--" */
  r = run_dump("--axis=1 -- '-x' 'x = Vi(2)'", 0);
  ck_assert_int_eq(r.status, 0);
  free(r.text);
  /* ... and without it: the message names the formula, not the option before it, and says
   * what to do (issue 11) */
  static const char *const dash[] = {"--reduction=LogSumExp '-SqDist(x,y)' 'x = Vi(3)' 'y = Vj(3)'",
                                     "--reduction LogSumExp '-SqDist(x,y)' 'x = Vi(3)' 'y = Vj(3)'"};
  for (int k = 0; k < 2; k++) {
    r = run_dump(dash[k], 1);
    ck_assert_msg(r.status == 2, "keops-dump %s: exit %d", dash[k], r.status);
    ck_assert_msg(strstr(r.text, "'-SqDist(x,y)' is not an option") && strstr(r.text, "after '--'") &&
                      !strstr(r.text, "bad option"),
                  "keops-dump %s:\n%s", dash[k], r.text);
    free(r.text);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("dump");
  TCase *tc = tcase_create("keops-dump");
  tcase_add_test(tc, seed_views);
  tcase_add_test(tc, grad_views);
  tcase_add_test(tc, canonical_spacing);
  tcase_add_test(tc, bad_input);
  tcase_add_test(tc, command_line);
  suite_add_tcase(s, tc);
  int failed = tu_run(s, 1);
  return failed != 0;
}
