/* keops-bench's static figure (tools/bench_static.c): the parsers of ptxas -v's report and of
 * nvdisasm's SASS on canned text (no CUDA toolkit needed), then keops-bench itself
 * (KEOPS_BENCH, from CMake) on the GPU emulator: the static line is printed, with the tools,
 * or saying which one is missing, and the bench never fails for it. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_static.h"
#include "testutil.h"

#ifndef KEOPS_BENCH
#error "KEOPS_BENCH must name the keops-bench binary"
#endif

static const char ptxas_report[] =
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Compiling entry function 'keops_combine' for 'sm_90'\n"
    "ptxas info    : Function properties for keops_combine\n"
    "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 32 registers, used 0 barriers\n"
    "ptxas info    : Compile time = 20.113 ms\n"
    "ptxas info    : Compiling entry function 'keops_kernel' for 'sm_90'\n"
    "ptxas info    : Function properties for keops_kernel\n"
    "    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
    "ptxas info    : Used 255 registers, used 1 barriers\n"
    "ptxas info    : Compile time = 30.648 ms\n";

START_TEST(ptxas_info) {
  bs_ptxas r;
  ck_assert_int_eq(bs_parse_ptxas(ptxas_report, "keops_kernel", &r), 0);
  ck_assert_int_eq(r.regs, 255);
  ck_assert_int_eq(r.spill_stores, 8);
  ck_assert_int_eq(r.spill_loads, 12);
  ck_assert_int_eq(bs_parse_ptxas(ptxas_report, "keops_combine", &r), 0);
  ck_assert_int_eq(r.regs, 32);
  ck_assert_int_eq(r.spill_stores, 0);
  ck_assert_int_eq(bs_parse_ptxas(ptxas_report, "other", &r), -1);
}
END_TEST

/* nvdisasm's layout, shortened: another kernel first (its loop is not ours), then keops_kernel
 * with a loop holding a barrier (the slices' loop) around two barrier-free ones, the longer of
 * which is the j loop (instructions 3 to 6), and a one-instruction trap loop at the end. */
static const char sass[] =
    "\t.section\t.text.keops_combine,\"ax\",@progbits\n"
    ".text.keops_combine:\n"
    "        /*0000*/                   MOV R1, c[0x0][0x28] ;\n"
    ".L_x_0:\n"
    "        /*0010*/                   IADD3 R0, R0, 0x1, RZ ;\n"
    "        /*0020*/                   IADD3 R0, R0, 0x1, RZ ;\n"
    "        /*0030*/                   IADD3 R0, R0, 0x1, RZ ;\n"
    "        /*0040*/                   IADD3 R0, R0, 0x1, RZ ;\n"
    "        /*0050*/                   IADD3 R0, R0, 0x1, RZ ;\n"
    "        /*0060*/               @P0 BRA `(.L_x_0) ;\n"
    "//--------------------- .text.keops_kernel        --------------------------\n"
    "\t.section\t.text.keops_kernel,\"ax\",@progbits\n"
    "keops_kernel:\n"
    ".text.keops_kernel:\n"
    "        /*0000*/                   LDC R1, c[0x0][0x28] ;\n"
    "        /*0010*/              @!P0 BRA `(.L_x_9) ;\n"
    ".L_x_22:\n"
    "        /*0020*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;\n"
    ".L_x_19:\n"
    "        /*0030*/                   LDS.128 R4, [R2] ;\n"
    "        /*0040*/                   FFMA R8, R4, R4, R8 ;\n"
    "        /*0050*/                   MUFU.EX2 R9, R8 ;\n"
    "        /*0060*/              @!P2 BRA `(.L_x_19) ;\n"
    ".L_x_18:\n"
    "        /*0070*/                   FADD R10, R9, R10 ;\n"
    ".L_x_21:\n"
    "        /*0080*/                   FMUL R11, R10, R10 ;\n"
    "        /*0090*/               @P3 BRA `(.L_x_21) ;\n"
    "        /*00a0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;\n"
    "        /*00b0*/              @!P0 BRA `(.L_x_22) ;\n"
    ".L_x_9:\n"
    "        /*00c0*/                   EXIT ;\n"
    ".L_x_23:\n"
    "        /*10000*/                  BRA `(.L_x_23);\n"
    "\t.section\t.nv.shared.keops_kernel,\"aw\",@nobits\n"
    "        /*0000*/                   NOP ;\n";

/* A barrier-free loop around a shorter one: the inner one is the j loop. */
static const char nested[] = ".text.keops_kernel:\n"
                             ".L_x_1:\n"
                             "        /*0000*/                   FADD R1, R1, R2 ;\n"
                             ".L_x_2:\n"
                             "        /*0010*/                   FMUL R3, R3, R3 ;\n"
                             "        /*0020*/               @P0 BRA `(.L_x_2) ;\n"
                             "        /*0030*/                   FADD R1, R1, R2 ;\n"
                             "        /*0040*/                   FADD R1, R1, R2 ;\n"
                             "        /*0050*/               @P1 BRA `(.L_x_1) ;\n"
                             "        /*0060*/                   EXIT ;\n";

START_TEST(sass_loop) {
  bs_loop l;
  ck_assert_int_eq(bs_parse_sass(sass, "keops_kernel", &l), 0);
  ck_assert_int_eq(l.ninstr, 14);
  ck_assert_int_eq(l.nloops, 4);
  ck_assert_int_eq(l.first, 3);
  ck_assert_int_eq(l.last, 6); /* 4 instructions per iteration */
  ck_assert_int_eq(bs_parse_sass(sass, "keops_combine", &l), 0);
  ck_assert_int_eq(l.ninstr, 7);
  ck_assert_int_eq(l.last - l.first + 1, 6);
  ck_assert_int_eq(bs_parse_sass(nested, "keops_kernel", &l), 0);
  ck_assert_int_eq(l.nloops, 2);
  ck_assert_int_eq(l.first, 1);
  ck_assert_int_eq(l.last, 2);
  ck_assert_int_eq(bs_parse_sass(sass, "keops_absent", &l), -1);
  ck_assert_int_eq(
      bs_parse_sass(".text.keops_kernel:\n        /*0000*/      EXIT ;\n", "keops_kernel", &l), 0);
  ck_assert_int_eq(l.ninstr, 1);
  ck_assert_int_eq(l.first, -1);
}
END_TEST

/* keops-bench's tiny case on the emulator with env (shell assignments) before it: exit status
 * 0 and the static line, returned (caller frees). */
static char *bench_static_line(const char *env) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "KEOPS_GPU=emulator %s '%s' --backend=gpu --case=tiny --dtype=float32 --reps=1 2>&1",
           env, KEOPS_BENCH);
  int status;
  char *out = tu_command_output(cmd, &status);
  ck_assert_msg(status == 0, "%s: exit %d\n%s", cmd, status, out);
  char *line = strstr(out, "\n  static");
  ck_assert_msg(line != NULL, "%s: no static line\n%s", cmd, out);
  line += 3;
  char *r = strndup(line, strcspn(line, "\n"));
  free(out);
  return r;
}

static int have_ptxas(void) {
  const char *e = getenv("KEOPS_PTXAS");
  if (e && *e) return access(e, X_OK) == 0;
  char *out;
  int status;
  out = tu_command_output("command -v ptxas || test -x /usr/local/cuda/bin/ptxas", &status);
  free(out);
  return status == 0;
}

START_TEST(bench_prints_static) {
  char *l = bench_static_line("");
  if (!have_ptxas()) { /* this machine has no CUDA toolkit: the line says so */
    ck_assert_msg(strstr(l, "static: no ptxas"), "%s", l);
  } else {
    ck_assert_msg(!strncmp(l, "static sm_90: ", 14) && strstr(l, " regs, "), "%s", l);
    ck_assert_msg(strstr(l, " SASS instr/pair (") || strstr(l, "no nvdisasm"), "%s", l);
  }
  free(l);
  l = bench_static_line("KEOPS_PTXAS=/nonexistent/ptxas");
  ck_assert_msg(!strncmp(l, "static: no ptxas", 16), "%s", l);
  free(l);
  if (have_ptxas()) {
    l = bench_static_line("KEOPS_NVDISASM=/nonexistent/nvdisasm");
    ck_assert_msg(strstr(l, " regs, ") && strstr(l, "; no nvdisasm"), "%s", l);
    free(l);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("bench_static");
  TCase *tc = tcase_create("static figure");
  tcase_add_test(tc, ptxas_info);
  tcase_add_test(tc, sass_loop);
  tcase_add_test(tc, bench_prints_static);
  tcase_set_timeout(tc, 300);
  suite_add_tcase(s, tc);
  return tu_run(s, 1) != 0;
}
