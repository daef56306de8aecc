/* CUDA driver layer (runtime/cuda.c, through its device table cu_driver) and the PTX target
 * choice (runtime/ptx_target.c): the no-driver path, the PTX target tables with
 * synthetic devices, and, where a GPU is present, contexts, modules, memory and launches
 * with hand-written PTX. Without a device the GPU checks are skipped with one line saying
 * why. The suite runs in one process (no fork): the driver must not be used across fork. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>

#include "cuda.h"
#include "testutil.h"

/* The implementation under test; the PTX target tables are device.h's (rt_ptx_target). */
static const rt_device *const cu = &cu_driver;
static int have_gpu;           /* cu->load succeeded (set in main) */
static char load_reason[4096]; /* its message when it did not */

/* ---- without a device (and with one: what must hold either way) ---------------------- */

/* Designated initializers leave a forgotten hook NULL without a warning: the runtime would
 * crash on its first call instead. */
START_TEST(table_complete) {
  ck_assert_ptr_nonnull(cu->name);
  ck_assert(cu->load && cu->count && cu->info && cu->enter && cu->leave);
  ck_assert(cu->module_load && cu->module_function && cu->function_max_threads && cu->module_unload);
  ck_assert(cu->alloc && cu->free && cu->htod && cu->dtoh && cu->memset0 && cu->pointer_device);
  ck_assert(cu->launch && cu->sync && cu->stream_create && cu->stream_destroy);
}
END_TEST

START_TEST(load_consistent) {
  kerr a = {0}, b = {0};
  keops_status s1 = cu->load(&a), s2 = cu->load(&b);
  ck_assert_int_eq(s1, s2);
  ck_assert_str_eq(a.msg, b.msg);
  if (s1 != KEOPS_OK) {
    ck_assert_int_eq(s1, KEOPS_ERROR_NO_DEVICE);
    ck_assert_int_eq(a.status, KEOPS_ERROR_NO_DEVICE);
    /* every reason names the driver library, so users know what was looked for */
    ck_assert_msg(strstr(a.msg, "libcuda.so.1"), "message: %s", a.msg);
  } else {
    ck_assert_int_eq(a.status, KEOPS_OK);
  }
  ck_assert_int_eq(cu->load(NULL), s1); /* a NULL kerr is fine */
}
END_TEST

typedef struct load_result {
  keops_status st;
  kerr e;
} load_result;

static void *load_thread(void *arg) {
  load_result *r = arg;
  for (int i = 0; i < 100; i++) {
    kerr e = {0};
    keops_status st = cu->load(&e);
    if (i == 0 || st != r->st || strcmp(e.msg, r->e.msg) != 0) {
      if (i > 0) { /* a change between calls: record a mismatch the main thread sees */
        r->st = (keops_status)-1;
        return NULL;
      }
      r->st = st;
      r->e = e;
    }
  }
  return NULL;
}

START_TEST(load_from_threads) {
  enum { T = 8 };
  pthread_t th[T];
  static load_result res[T];
  memset(res, 0, sizeof res);
  for (int i = 0; i < T; i++)
    ck_assert_int_eq(pthread_create(&th[i], NULL, load_thread, &res[i]), 0);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  kerr e = {0};
  keops_status st = cu->load(&e);
  for (int i = 0; i < T; i++) {
    ck_assert_int_eq(res[i].st, st);
    ck_assert_str_eq(res[i].e.msg, e.msg);
  }
}
END_TEST

START_TEST(no_device_everywhere) {
  if (have_gpu) return;
  kerr e = {0};
  int n = 7;
  ck_assert_int_eq(cu->count(&n, &e), KEOPS_ERROR_NO_DEVICE);
  ck_assert_int_eq(n, 0);
  ck_assert_str_eq(e.msg, load_reason);
  rt_device_info d;
  kerr e2 = {0};
  ck_assert_int_eq(cu->info(0, &d, &e2), KEOPS_ERROR_NO_DEVICE);
  ck_assert_str_eq(e2.msg, load_reason);
  kerr e3 = {0};
  ck_assert_int_eq(cu->enter(0, &e3), KEOPS_ERROR_NO_DEVICE);
  kerr e4 = {0};
  unsigned long long p = 1;
  ck_assert_int_eq(cu->alloc(16, &p, &e4), KEOPS_ERROR_NO_DEVICE);
  ck_assert(p == 0);
  rt_module *m = (rt_module *)1;
  kerr e5 = {0};
  ck_assert_int_eq(cu->module_load(".version 7.8\n", 13, &m, &e5), KEOPS_ERROR_NO_DEVICE);
  ck_assert_ptr_null(m);
  kerr e6 = {0};
  ck_assert_int_eq(cu->sync(NULL, &e6), KEOPS_ERROR_NO_DEVICE);
  cu->leave(); /* harmless without a driver */
  ck_assert_int_eq(cu->free(0, NULL), KEOPS_OK);
  ck_assert_int_eq(cu->module_unload(NULL, NULL), KEOPS_OK);
}
END_TEST

/* ---- PTX target tables ----------------------------------------------------------------- */

typedef struct target_case {
  int cc_major, cc_minor, driver, llvm;
  const char *sm, *ptx; /* NULL sm: KEOPS_ERROR_UNSUPPORTED expected */
} target_case;

static const target_case target_cases[] = {
    /* LLVM 19: up to sm_90 and PTX 8.5 */
    {5, 2, 11080, 19, "sm_52", "+ptx78"},
    {5, 2, 13000, 19, "sm_52", "+ptx85"},
    {7, 0, 11080, 19, "sm_70", "+ptx78"},
    {7, 0, 12040, 19, "sm_70", "+ptx84"},
    {8, 0, 12000, 19, "sm_80", "+ptx80"},
    {8, 0, 12060, 19, "sm_80", "+ptx85"}, /* 12.6 still accepts only PTX 8.5 */
    {8, 6, 12010, 19, "sm_86", "+ptx81"},
    {8, 6, 13000, 19, "sm_86", "+ptx85"}, /* LLVM caps the ISA */
    {9, 0, 11080, 19, "sm_90", "+ptx78"},
    {9, 0, 12020, 19, "sm_90", "+ptx82"},
    {9, 0, 12030, 19, "sm_90", "+ptx83"},
    {9, 0, 12050, 19, "sm_90", "+ptx85"},
    {9, 0, 12080, 19, "sm_90", "+ptx85"},
    {10, 0, 12080, 19, "sm_90", "+ptx85"}, /* newer than LLVM 19: compute_90 PTX, JIT forward */
    {10, 0, 13000, 19, "sm_90", "+ptx85"},
    {12, 0, 12080, 19, "sm_90", "+ptx85"},
    {12, 0, 12090, 19, "sm_90", "+ptx85"},
    /* LLVM 22: up to sm_121 / sm_110 and PTX 9.0 */
    {5, 2, 11080, 22, "sm_52", "+ptx78"},
    {7, 0, 12050, 22, "sm_70", "+ptx85"},
    {8, 0, 12060, 22, "sm_80", "+ptx85"},
    {8, 0, 12080, 22, "sm_80", "+ptx87"},
    {8, 6, 12090, 22, "sm_86", "+ptx88"},
    {9, 0, 11080, 22, "sm_90", "+ptx78"},
    {9, 0, 12040, 22, "sm_90", "+ptx84"},
    {9, 0, 12090, 22, "sm_90", "+ptx88"},
    {9, 0, 13000, 22, "sm_90", "+ptx90"},
    {9, 0, 13010, 22, "sm_90", "+ptx90"}, /* the driver takes 9.1, LLVM 22 writes up to 9.0 */
    {10, 0, 12080, 22, "sm_100", "+ptx87"},
    {10, 0, 12090, 22, "sm_100", "+ptx88"},
    {10, 0, 13000, 22, "sm_100", "+ptx90"},
    {10, 0, 12060, 22, "sm_90", "+ptx85"}, /* sm_100 needs PTX 8.6: fall back to compute_90 */
    {12, 0, 12080, 22, "sm_120", "+ptx87"},
    {12, 0, 12090, 22, "sm_120", "+ptx88"},
    {12, 0, 13000, 22, "sm_120", "+ptx90"},
    {12, 0, 12070, 22, "sm_100", "+ptx86"}, /* sm_120 needs PTX 8.7 */
    /* LLVM 20 and 21 in between, newer LLVM as 22 */
    {12, 0, 13000, 20, "sm_120", "+ptx87"},
    {10, 3, 12090, 20, "sm_100", "+ptx87"}, /* sm_103 unknown to LLVM 20: the mainline sm_100 */
    {10, 3, 12090, 21, "sm_103", "+ptx88"},
    {12, 1, 13000, 21, "sm_121", "+ptx88"},
    {9, 0, 13000, 23, "sm_90", "+ptx90"},
    /* unsupported */
    {3, 5, 12000, 19, NULL, NULL}, /* older than sm_50 */
    {5, 0, 8000, 19, NULL, NULL},  /* CUDA 8 driver: PTX 5.0 */
    {9, 0, 0, 22, NULL, NULL},     /* unknown driver version */
    {9, 0, 12080, 18, NULL, NULL}, /* LLVM 18 */
};

START_TEST(ptx_target_table) {
  const target_case *c = &target_cases[_i];
  rt_device_info d = {0};
  d.ordinal = 0;
  snprintf(d.name, sizeof d.name, "synthetic");
  d.cc_major = c->cc_major;
  d.cc_minor = c->cc_minor;
  d.driver_version = c->driver;
  char sm[16], ptx[16];
  kerr e = {0};
  keops_status st = rt_ptx_target(&d, c->llvm, sm, sizeof sm, ptx, sizeof ptx, &e);
  if (c->sm) {
    ck_assert_msg(st == KEOPS_OK, "cc %d.%d driver %d LLVM %d: %s", c->cc_major, c->cc_minor,
                  c->driver, c->llvm, e.msg);
    ck_assert_msg(!strcmp(sm, c->sm) && !strcmp(ptx, c->ptx),
                  "cc %d.%d driver %d LLVM %d: got %s %s, want %s %s", c->cc_major, c->cc_minor,
                  c->driver, c->llvm, sm, ptx, c->sm, c->ptx);
  } else {
    ck_assert_msg(st == KEOPS_ERROR_UNSUPPORTED, "cc %d.%d driver %d LLVM %d: status %d (%s %s)",
                  c->cc_major, c->cc_minor, c->driver, c->llvm, st, sm, ptx);
    ck_assert_int_eq(e.status, KEOPS_ERROR_UNSUPPORTED);
    ck_assert(e.msg[0] != '\0');
  }
}
END_TEST

START_TEST(ptx_target_messages) {
  rt_device_info d = {.cc_major = 3, .cc_minor = 5, .driver_version = 12000};
  snprintf(d.name, sizeof d.name, "Tesla K40");
  char sm[16], ptx[16];
  kerr e = {0};
  ck_assert_int_eq(rt_ptx_target(&d, 19, sm, sizeof sm, ptx, sizeof ptx, &e),
                   KEOPS_ERROR_UNSUPPORTED);
  ck_assert_msg(strstr(e.msg, "3.5") && strstr(e.msg, "sm_50") && strstr(e.msg, "Tesla K40"), "%s",
                e.msg);
  rt_device_info old = {.cc_major = 6, .cc_minor = 0, .driver_version = 8000};
  kerr e2 = {0};
  ck_assert_int_eq(rt_ptx_target(&old, 19, sm, sizeof sm, ptx, sizeof ptx, &e2),
                   KEOPS_ERROR_UNSUPPORTED);
  ck_assert_msg(strstr(e2.msg, "8.0") && strstr(e2.msg, "too old"), "%s", e2.msg);
  kerr e3 = {0};
  ck_assert_int_eq(rt_ptx_target(&d, 19, sm, 4, ptx, sizeof ptx, &e3), KEOPS_ERROR_ARGUMENT);
  kerr e4 = {0};
  ck_assert_int_eq(rt_ptx_target(NULL, 19, sm, sizeof sm, ptx, sizeof ptx, &e4),
                   KEOPS_ERROR_ARGUMENT);
}
END_TEST

/* ---- with a GPU ---------------------------------------------------------------------- */

/* c = a + b over n floats, and a dynamic-shared-memory round trip at byte offset `off`. */
static const char test_ptx[] =
    ".version 7.8\n"
    ".target sm_70\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry vadd(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u32 pn)\n"
    "{\n"
    "  .reg .pred %p<2>;\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .f32 %f<4>;\n"
    "  .reg .b64 %rd<11>;\n"
    "  ld.param.u64 %rd1, [pa];\n"
    "  ld.param.u64 %rd2, [pb];\n"
    "  ld.param.u64 %rd3, [pc];\n"
    "  ld.param.u32 %r1, [pn];\n"
    "  mov.u32 %r2, %ctaid.x;\n"
    "  mov.u32 %r3, %ntid.x;\n"
    "  mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p1, %r5, %r1;\n"
    "  @%p1 bra DONE;\n"
    "  cvta.to.global.u64 %rd4, %rd1;\n"
    "  cvta.to.global.u64 %rd5, %rd2;\n"
    "  cvta.to.global.u64 %rd6, %rd3;\n"
    "  mul.wide.u32 %rd7, %r5, 4;\n"
    "  add.s64 %rd8, %rd4, %rd7;\n"
    "  add.s64 %rd9, %rd5, %rd7;\n"
    "  add.s64 %rd10, %rd6, %rd7;\n"
    "  ld.global.f32 %f1, [%rd8];\n"
    "  ld.global.f32 %f2, [%rd9];\n"
    "  add.f32 %f3, %f1, %f2;\n"
    "  st.global.f32 [%rd10], %f3;\n"
    "DONE:\n"
    "  ret;\n"
    "}\n"
    "\n"
    ".extern .shared .align 4 .b8 dsm[];\n"
    "\n"
    ".visible .entry shtest(.param .u64 pout, .param .u32 poff)\n"
    "{\n"
    "  .reg .b32 %r<8>;\n"
    "  .reg .b64 %rd<5>;\n"
    "  ld.param.u64 %rd1, [pout];\n"
    "  ld.param.u32 %r1, [poff];\n"
    "  mov.u32 %r2, %tid.x;\n"
    "  mov.u32 %r3, dsm;\n"
    "  shl.b32 %r4, %r2, 2;\n"
    "  add.s32 %r5, %r1, %r4;\n"
    "  add.s32 %r5, %r5, %r3;\n"
    "  st.shared.u32 [%r5], %r2;\n"
    "  bar.sync 0;\n"
    "  ld.shared.u32 %r6, [%r5];\n"
    "  add.s32 %r7, %r6, 1;\n"
    "  cvta.to.global.u64 %rd2, %rd1;\n"
    "  mul.wide.u32 %rd3, %r2, 4;\n"
    "  add.s64 %rd4, %rd2, %rd3;\n"
    "  st.global.u32 [%rd4], %r7;\n"
    "  ret;\n"
    "}\n";


START_TEST(gpu_device_info) {
  if (!have_gpu) return;
  int n = 0;
  TU_OK(cu->count(&n, &e_));
  ck_assert_int_ge(n, 1);
  for (int i = 0; i < n; i++) {
    rt_device_info d;
    TU_OK(cu->info(i, &d, &e_));
    ck_assert_int_eq(d.ordinal, i);
    ck_assert(d.name[0] != '\0');
    ck_assert_int_ge(d.cc_major, 3);
    ck_assert(d.cc_minor >= 0 && d.cc_minor <= 9);
    ck_assert_int_ge(d.sm_count, 1);
    ck_assert_int_ge(d.max_threads_per_block, 512);
    ck_assert_int_ge(d.max_shared_per_block, 16 * 1024);
    ck_assert_int_ge(d.max_shared_per_block_optin, d.max_shared_per_block);
    ck_assert_int_eq(d.warp_size, 32);
    ck_assert_int_ge(d.driver_version, 9000);
    char sm[16], ptx[16];
    kerr e = {0};
    unsigned llvm_major = 0, llvm_minor = 0, llvm_patch = 0;
    LLVMGetVersion(&llvm_major, &llvm_minor, &llvm_patch);
    keops_status st = rt_ptx_target(&d, (int)llvm_major, sm, sizeof sm, ptx, sizeof ptx, &e);
    if (st == KEOPS_OK)
      ck_assert_int_le(atoi(sm + 3), d.cc_major * 10 + d.cc_minor);
    else
      ck_assert_int_eq(st, KEOPS_ERROR_UNSUPPORTED);
    printf("test_cuda: device %d: %s, sm_%d%d, %d SMs, %d KiB shared (%d opt-in), driver %d.%d -> "
           "%s %s\n",
           i, d.name, d.cc_major, d.cc_minor, d.sm_count, d.max_shared_per_block / 1024,
           d.max_shared_per_block_optin / 1024, d.driver_version / 1000,
           d.driver_version % 1000 / 10, st == KEOPS_OK ? sm : "unsupported",
           st == KEOPS_OK ? ptx : e.msg);
  }
  rt_device_info d;
  kerr e = {0};
  ck_assert_int_eq(cu->info(n, &d, &e), KEOPS_ERROR_NO_DEVICE);
  char want[64];
  snprintf(want, sizeof want, "device %d requested, %d available", n, n);
  ck_assert_str_eq(e.msg, want);
  kerr e2 = {0};
  ck_assert_int_eq(cu->enter(n, &e2), KEOPS_ERROR_NO_DEVICE);
  ck_assert_str_eq(e2.msg, want);
  kerr e3 = {0};
  ck_assert_int_eq(cu->enter(-1, &e3), KEOPS_ERROR_NO_DEVICE);
}
END_TEST

/* Runs vadd over n elements on the current context and checks c; returns NULL or what went
 * wrong (in why). No check assertions: the threads test calls it off the main thread. */
static const char *try_vadd(rt_function *fn, unsigned n, char *why, size_t why_size) {
  float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
  unsigned long long da = 0, db = 0, dc = 0;
  kerr e = {0};
  const char *step = NULL;
  why[0] = '\0';
  if (!a || !b || !c) {
    step = "malloc";
    goto out;
  }
  for (unsigned i = 0; i < n; i++) {
    a[i] = (float)i;
    b[i] = 0.5f * (float)i + 1.0f;
    c[i] = -1.0f;
  }
#define STEP(call)                                                                                 \
  if ((call) != KEOPS_OK) {                                                                        \
    step = #call;                                                                                  \
    goto out;                                                                                      \
  }
  STEP(cu->alloc(n * sizeof *a, &da, &e));
  STEP(cu->alloc(n * sizeof *b, &db, &e));
  STEP(cu->alloc(n * sizeof *c, &dc, &e));
  STEP(cu->htod(da, a, n * sizeof *a, NULL, &e));
  STEP(cu->htod(db, b, n * sizeof *b, NULL, &e));
  STEP(cu->memset0(dc, n * sizeof *c, NULL, &e));
  STEP(cu->dtoh(c, dc, n * sizeof *c, NULL, &e));
  STEP(cu->sync(NULL, &e));
  for (unsigned i = 0; i < n && !step; i++)
    if (c[i] != 0.0f) step = "memset0 left nonzero values";
  if (step) goto out;
  void *params[] = {&da, &db, &dc, &n};
  unsigned grid[3] = {(n + 127) / 128, 1, 1}, block[3] = {128, 1, 1};
  STEP(cu->launch(fn, grid, block, 0, NULL, params, &e));
  STEP(cu->dtoh(c, dc, n * sizeof *c, NULL, &e));
  STEP(cu->sync(NULL, &e));
  for (unsigned i = 0; i < n && !step; i++)
    if (c[i] != a[i] + b[i]) {
      snprintf(e.msg, sizeof e.msg, "c[%u] = %g, want %g", i, (double)c[i], (double)(a[i] + b[i]));
      step = "vadd result";
    }
  if (step) goto out;
  int ord = -1;
  STEP(cu->pointer_device(dc, &ord, &e));
  if (ord != 0) step = "pointer_device gave another device";
#undef STEP
out:
  cu->free(da, NULL);
  cu->free(db, NULL);
  cu->free(dc, NULL);
  free(a);
  free(b);
  free(c);
  if (step) snprintf(why, why_size, "%s: %s", step, e.msg);
  return step ? why : NULL;
}

static void run_vadd(rt_function *fn, unsigned n) {
  char why[4200];
  const char *bad = try_vadd(fn, n, why, sizeof why);
  ck_assert_msg(!bad, "%s", why);
}

START_TEST(gpu_vadd) {
  if (!have_gpu) return;
  TU_OK(cu->enter(0, &e_));
  rt_module *mod = NULL;
  rt_function *fn = NULL;
  TU_OK(cu->module_load(test_ptx, strlen(test_ptx), &mod, &e_));
  TU_OK(cu->module_function(mod, "vadd", &fn, &e_));
  run_vadd(fn, 1000);
  kerr e = {0};
  rt_function *none = (rt_function *)1;
  ck_assert_int_eq(cu->module_function(mod, "no_such_kernel", &none, &e), KEOPS_ERROR_DEVICE);
  ck_assert_ptr_null(none);
  ck_assert_msg(strstr(e.msg, "cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND"), "%s", e.msg);
  TU_OK(cu->module_unload(mod, &e_));
  cu->leave();
}
END_TEST

START_TEST(gpu_big_shared) {
  if (!have_gpu) return;
  rt_device_info d;
  TU_OK(cu->info(0, &d, &e_));
  unsigned shared = 64 * 1024; /* over the 48 KiB that needs no opt-in */
  if ((unsigned)d.max_shared_per_block_optin < shared) return; /* pre-Volta: nothing to test */
  TU_OK(cu->enter(0, &e_));
  rt_module *mod = NULL;
  rt_function *fn = NULL;
  TU_OK(cu->module_load(test_ptx, strlen(test_ptx), &mod, &e_));
  TU_OK(cu->module_function(mod, "shtest", &fn, &e_));
  enum { B = 256 };
  unsigned long long dout;
  TU_OK(cu->alloc(B * sizeof(unsigned), &dout, &e_));
  unsigned off = shared - B * 4; /* the last bytes, beyond 48 KiB */
  void *params[] = {&dout, &off};
  unsigned grid[3] = {1, 1, 1}, block[3] = {B, 1, 1};
  TU_OK(cu->launch(fn, grid, block, shared, NULL, params, &e_));
  unsigned out[B];
  TU_OK(cu->dtoh(out, dout, sizeof out, NULL, &e_));
  TU_OK(cu->sync(NULL, &e_));
  for (unsigned i = 0; i < B; i++) ck_assert_uint_eq(out[i], i + 1);
  /* more than the device allows: a launch error, and the context stays usable */
  kerr e = {0};
  ck_assert_int_eq(
      cu->launch(fn, grid, block, (unsigned)d.max_shared_per_block_optin + 4096, NULL, params, &e),
      KEOPS_ERROR_DEVICE);
  ck_assert_msg(strstr(e.msg, "CUDA_ERROR_"), "%s", e.msg);
  TU_OK(cu->launch(fn, grid, block, shared, NULL, params, &e_));
  TU_OK(cu->sync(NULL, &e_));
  TU_OK(cu->free(dout, &e_));
  TU_OK(cu->module_unload(mod, &e_));
  cu->leave();
}
END_TEST

START_TEST(gpu_bad_ptx) {
  if (!have_gpu) return;
  TU_OK(cu->enter(0, &e_));
  static const char bad[] = ".version 7.8\n.target sm_70\n.address_size 64\n"
                            ".visible .entry k()\n{\n  this is not an instruction;\n  ret;\n}\n";
  rt_module *mod = (rt_module *)1;
  kerr e = {0};
  keops_status st = cu->module_load(bad, strlen(bad), &mod, &e);
  ck_assert_msg(st == KEOPS_ERROR_DEVICE || st == KEOPS_ERROR_COMPILE, "%d: %s", st, e.msg);
  ck_assert_ptr_null(mod);
  ck_assert_msg(!strncmp(e.msg, "cuModuleLoadDataEx failed: CUDA_ERROR_", 38), "%s", e.msg);
  /* the JIT log follows the driver's description: it names the line */
  const char *log = strstr(e.msg, "): ");
  ck_assert_msg(log && strstr(log, "line"), "no JIT log in: %s", e.msg);
  printf("test_cuda: broken PTX -> %s\n", e.msg);
  /* and the context still loads good PTX */
  rt_function *fn = NULL;
  TU_OK(cu->module_load(test_ptx, strlen(test_ptx), &mod, &e_));
  TU_OK(cu->module_function(mod, "vadd", &fn, &e_));
  run_vadd(fn, 33);
  TU_OK(cu->module_unload(mod, &e_));
  cu->leave();
}
END_TEST

START_TEST(gpu_out_of_memory) {
  if (!have_gpu) return;
  TU_OK(cu->enter(0, &e_));
  unsigned long long p = 1;
  kerr e = {0};
  ck_assert_int_eq(cu->alloc((size_t)1 << 50, &p, &e), KEOPS_ERROR_OUT_OF_MEMORY); /* 1 PiB */
  ck_assert(p == 0);
  ck_assert_msg(strstr(e.msg, "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY"), "%s", e.msg);
  rt_module *mod = NULL;
  rt_function *fn = NULL;
  TU_OK(cu->module_load(test_ptx, strlen(test_ptx), &mod, &e_));
  TU_OK(cu->module_function(mod, "vadd", &fn, &e_));
  run_vadd(fn, 4097);
  TU_OK(cu->module_unload(mod, &e_));
  cu->leave();
}
END_TEST

/* Contexts entered from several threads at once: one primary context, all usable. */
static void *vadd_thread(void *fn) { /* fn: the rt_function */
  static char why[6][4200];
  static int next;
  char *w = why[__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % 6];
  kerr e = {0};
  if (cu->enter(0, &e) != KEOPS_OK) {
    snprintf(w, 4200, "enter: %s", e.msg);
    return w;
  }
  const char *bad = try_vadd(fn, 10000, w, 4200);
  cu->leave();
  return (void *)bad;
}

START_TEST(gpu_threads) {
  if (!have_gpu) return;
  TU_OK(cu->enter(0, &e_));
  rt_module *mod = NULL;
  rt_function *fn = NULL;
  TU_OK(cu->module_load(test_ptx, strlen(test_ptx), &mod, &e_));
  TU_OK(cu->module_function(mod, "vadd", &fn, &e_));
  enum { T = 6 };
  pthread_t th[T];
  for (int i = 0; i < T; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, vadd_thread, fn), 0);
  for (int i = 0; i < T; i++) {
    void *r = NULL;
    pthread_join(th[i], &r);
    ck_assert_msg(!r, "thread %d: %s", i, r ? (const char *)r : "");
  }
  TU_OK(cu->module_unload(mod, &e_));
  cu->leave();
}
END_TEST

static Suite *cuda_suite(void) {
  Suite *s = suite_create("cuda");
  TCase *tc = tcase_create("cuda");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, table_complete);
  tcase_add_test(tc, load_consistent);
  tcase_add_test(tc, load_from_threads);
  tcase_add_test(tc, no_device_everywhere);
  tcase_add_loop_test(tc, ptx_target_table, 0, (int)(sizeof target_cases / sizeof *target_cases));
  tcase_add_test(tc, ptx_target_messages);
  tcase_add_test(tc, gpu_device_info);
  tcase_add_test(tc, gpu_vadd);
  tcase_add_test(tc, gpu_big_shared);
  tcase_add_test(tc, gpu_bad_ptx);
  tcase_add_test(tc, gpu_out_of_memory);
  tcase_add_test(tc, gpu_threads);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  kerr e = {0};
  have_gpu = cu->load(&e) == KEOPS_OK;
  if (!have_gpu) {
    snprintf(load_reason, sizeof load_reason, "%s", e.msg);
    printf("test_cuda: no CUDA device (%s), GPU checks skipped\n", e.msg);
    fflush(stdout);
  }
  /* One process: CUDA state does not survive fork, and the load outcome is per process. */
  int failed = tu_run(cuda_suite(), 0);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
