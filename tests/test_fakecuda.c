/* runtime/cuda.c and gpu_run.c end to end on the fake CUDA driver (tests/fakecuda/, found as
 * libcuda.so.1 through LD_LIBRARY_PATH, which ctest sets): the driver table's contexts,
 * memory, copies, streams and launches; keops_kernel_run with the GPU backend (host arrays,
 * device pointers, streams, the j-split and its combine kernel, both dtypes) against the
 * reference interpreter with the tolerances of tests/matrix.h; and failures injected into
 * every driver entry point a run uses: each returns the right status and a message naming
 * the driver's error, leaks nothing (the fake's live counts, LeakSanitizer in the ASan
 * build) and leaves the process usable (a CPU run, a new context, a GPU run).
 *
 * Every test runs in a process of its own (check's fork mode): cuda.c opens the driver once
 * per process, and the tests script the fake's devices before that. */
#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda.h"
#include "fc_harness.h"
#include "jit.h"
#include "matrix.h"
#include "testutil.h"

static const rt_device *const cu = &cu_driver;

/* The matrices run every STRIDE-th case (both dtypes, axes and pointer kinds still): the fake
 * runs the emulator's code rebuilt from the PTX's key, the very code test_gpu checks for every
 * case on the emulated devices, so what these add is cuda.c's and gpu_run.c's path, which a
 * quarter exercises (an eighth under ASan, where the emulator is several times slower). The
 * failure tests run in full. */
#if defined(__SANITIZE_ADDRESS__)
#define STRIDE 8
#else
#define STRIDE 4
#endif

/* ---- the driver table ------------------------------------------------------------------------ */

START_TEST(table_on_fake) {
  kerr e;
  kerr_clear(&e);
  ck_assert_msg(cu->load(&e) == KEOPS_OK, "%s", e.msg);
  int n = 0;
  TU_OK(cu->count(&n, &e_));
  ck_assert_int_eq(n, 1);
  rt_device_info d;
  TU_OK(cu->info(0, &d, &e_));
  ck_assert_int_eq(d.cc_major, 9);
  ck_assert_int_eq(d.max_shared_per_block, 48 * 1024);
  ck_assert_int_eq(d.max_shared_per_block_optin, 227 * 1024);
  ck_assert_int_eq(d.driver_version, 12080);
  ck_assert_msg(strstr(d.name, "Fake"), "%s", d.name);
  kerr_clear(&e);
  ck_assert_int_eq(cu->info(1, &d, &e), KEOPS_ERROR_NO_DEVICE);

  /* outside a context: the driver's error, named */
  rt_dptr p = 0;
  kerr_clear(&e);
  ck_assert_int_eq(cu->alloc(64, &p, &e), KEOPS_ERROR_DEVICE);
  ck_assert_msg(strstr(e.msg, "cuMemAlloc_v2") && strstr(e.msg, "CUDA_ERROR_INVALID_CONTEXT"), "%s", e.msg);

  TU_OK(cu->enter(0, &e_));
  TU_OK(cu->alloc(100, &p, &e_));
  int ord = -1;
  TU_OK(cu->pointer_device(p, &ord, &e_));
  ck_assert_int_eq(ord, 0);
  kerr_clear(&e);
  ck_assert_int_eq(cu->pointer_device(p + 4096, &ord, &e), KEOPS_ERROR_DEVICE);
  /* fresh memory is poisoned; memset0, copies in and out */
  unsigned char buf[100];
  TU_OK(cu->dtoh(buf, p, 100, NULL, &e_));
  for (int i = 0; i < 100; i++) ck_assert_int_eq(buf[i], 0xff);
  TU_OK(cu->memset0(p, 50, NULL, &e_));
  for (int i = 0; i < 100; i++) buf[i] = (unsigned char)i;
  TU_OK(cu->htod(p + 60, buf, 40, NULL, &e_));
  memset(buf, 7, sizeof buf); /* the source may change at once: pageable memory is staged */
  TU_OK(cu->dtoh(buf, p, 100, NULL, &e_));
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(buf[i], i < 50 ? 0 : i < 60 ? 0xff : i - 60);
  /* bounds: every copy and memset must lie inside one allocation */
  kerr_clear(&e);
  ck_assert_int_eq(cu->htod(p + 1, buf, 100, NULL, &e), KEOPS_ERROR_DEVICE);
  ck_assert_msg(strstr(e.msg, "cuMemcpyHtoDAsync_v2") && strstr(e.msg, "CUDA_ERROR_INVALID_VALUE"), "%s", e.msg);
  kerr_clear(&e);
  ck_assert_int_eq(cu->dtoh(buf, p - 1, 10, NULL, &e), KEOPS_ERROR_DEVICE);
  kerr_clear(&e);
  ck_assert_int_eq(cu->memset0(p, 101, NULL, &e), KEOPS_ERROR_DEVICE);
  kerr_clear(&e);
  ck_assert_int_eq(cu->free(p + 1, &e), KEOPS_ERROR_DEVICE);
  /* too much memory: KEOPS_ERROR_OUT_OF_MEMORY */
  rt_dptr big;
  kerr_clear(&e);
  ck_assert_int_eq(cu->alloc((size_t)1 << 40, &big, &e), KEOPS_ERROR_OUT_OF_MEMORY);
  ck_assert_msg(strstr(e.msg, "CUDA_ERROR_OUT_OF_MEMORY"), "%s", e.msg);
  TU_OK(cu->free(p, &e_));
  cu->leave();
  assert_no_leak("after the table");
}
END_TEST

/* Work runs at synchronisation points only: a copy queued on one stream is not visible to a
 * read on another until that stream is synchronised. */
START_TEST(streams_run_at_sync) {
  TU_OK(cu->enter(0, &e_));
  rt_stream *s1, *s2;
  TU_OK(cu->stream_create(&s1, &e_));
  TU_OK(cu->stream_create(&s2, &e_));
  rt_dptr p;
  TU_OK(cu->alloc(16, &p, &e_));
  unsigned char in[16], out[16];
  memset(in, 3, sizeof in);
  TU_OK(cu->htod(p, in, 16, s1, &e_));
  TU_OK(cu->dtoh(out, p, 16, s2, &e_)); /* s1 not synchronised: the old contents */
  ck_assert_int_eq(out[0], 0xff);
  TU_OK(cu->sync(s1, &e_));
  TU_OK(cu->dtoh(out, p, 16, s2, &e_));
  ck_assert_int_eq(out[0], 3);
  /* a context sync runs every stream */
  TU_OK(cu->memset0(p, 16, s1, &e_));
  TU_OK(cu->sync(NULL, &e_));
  TU_OK(cu->dtoh(out, p, 16, NULL, &e_));
  ck_assert_int_eq(out[15], 0);
  TU_OK(cu->free(p, &e_));
  TU_OK(cu->stream_destroy(s1, &e_));
  TU_OK(cu->stream_destroy(s2, &e_));
  cu->leave();
  assert_no_leak("after the streams");
}
END_TEST

/* PTX the fake cannot rebuild a program from, and PTX newer than the driver or the device. */
START_TEST(modules_refused) {
  static const char *const ptx[] = {
      "//\n.version 8.0\n.target sm_80\n.address_size 64\n",
      "//\n.version 8.0\n.target sm_80\n.address_size 64\n// keops program: Var:1 0 9;|Sum|\n",
      "//\n.version 9.1\n.target sm_80\n.address_size 64\n",
      "//\n.version 8.0\n.target sm_100\n.address_size 64\n",
  };
  static const char *const want[] = {"CUDA_ERROR_INVALID_PTX", "CUDA_ERROR_INVALID_PTX",
                                     "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
                                     "CUDA_ERROR_NO_BINARY_FOR_GPU"};
  static const char *const log[] = {"keops program", "program key", "Unsupported .version", "sm_100"};
  TU_OK(cu->enter(0, &e_));
  for (int i = 0; i < 4; i++) {
    kerr e;
    kerr_clear(&e);
    rt_module *m = (rt_module *)1;
    keops_status st = cu->module_load(ptx[i], strlen(ptx[i]), &m, &e);
    ck_assert_msg(st == KEOPS_ERROR_UNSUPPORTED && !m, "PTX %d: %s", i, keops_status_string(st));
    ck_assert_msg(strstr(e.msg, "cuModuleLoadDataEx") && strstr(e.msg, want[i]) && strstr(e.msg, log[i]),
                  "PTX %d: %s", i, e.msg);
  }
  cu->leave();
  assert_no_leak("after refused modules");
}
END_TEST

/* ---- runs against the reference --------------------------------------------------------------- */

static keops_context *ctx;

static void ctx_setup(void) {
  ck_assert_msg(keops_context_create(&ctx) == KEOPS_OK, "%s", keops_last_error());
}

static void ctx_teardown(void) {
  keops_context_destroy(ctx);
  ctx = NULL;
  assert_no_leak("after the context");
}

/* A device copy of bytes of h on the current context (0 for 0 bytes). */
static rt_dptr dcopy(const void *h, size_t bytes) {
  rt_dptr d = 0;
  TU_OK(cu->alloc(bytes, &d, &e_));
  if (bytes) TU_OK(cu->htod(d, h, bytes, NULL, &e_));
  return d;
}

/* A failure armed for keops_kernel_run in the next gpu_run only (not the test's staging):
 * the entry's nth call fails with code (nth 0: none), failures are cleared after the run, and
 * calls gets the run's calls of the entry. */
static struct {
  const char *entry;
  int nth, code;
  long calls;
} arm;

static keops_status armed_run(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                              void *const *outs, const keops_run_options *o) {
  long before = arm.entry ? fake.calls(arm.entry) : 0;
  if (arm.entry && arm.nth) fake.inject(arm.entry, arm.nth, arm.code, 0);
  keops_status st = keops_kernel_run(k, M, N, args, outs, o);
  if (arm.entry) arm.calls = fake.calls(arm.entry) - before, fake.clear_failures();
  return st;
}

/* Runs k with the GPU backend (over rg when not NULL). devp: inputs and outputs staged by the
 * test, the run on a stream of the test's, asynchronous: the test synchronises that stream and
 * copies back. */
static keops_status gpu_run(keops_kernel *k, int64_t M, int64_t N, void *const *args,
                            void *const *outs, int devp, const keops_ranges *rg) {
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU, .device_pointers = devp,
                         .ranges = rg};
  if (!devp) return armed_run(k, M, N, (const void *const *)args, outs, &o);
  const fe_program *p = rt_kernel_program(k);
  int64_t rows = p->axis ? M : N;
  void *da[FE_MAX_ARGS] = {0}, *dout[2] = {0};
  size_t ob[2] = {0, 0};
  rt_stream *s;
  TU_OK(cu->enter(0, &e_));
  TU_OK(cu->stream_create(&s, &e_));
  for (int pos = 0; pos < p->args.n; pos++)
    da[pos] = (void *)(uintptr_t)dcopy(args[pos], (size_t)(mx_cat_rows(p->args.cat[pos], M, N) *
                                                           p->args.dim[pos]) * (p->dtype == KEOPS_FLOAT32 ? 4 : 8));
  for (int q = 0; q < p->nout; q++) {
    ob[q] = (size_t)(rows * p->out_dim[q]) * (p->out_dtype[q] == KEOPS_FLOAT32 ? 4 : 8);
    dout[q] = (void *)(uintptr_t)dcopy(outs[q], ob[q]);
  }
  o.stream = s;
  TU_OK(cu->sync(NULL, &e_)); /* the staging copies, on the default stream, come first */
  keops_status st = armed_run(k, M, N, (const void *const *)da, dout, &o);
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", keops_last_error());
  if (st == KEOPS_OK) {
    TU_OK(cu->sync(s, &e_));
    for (int q = 0; q < p->nout; q++)
      if (ob[q]) TU_OK(cu->dtoh(outs[q], (uintptr_t)dout[q], ob[q], NULL, &e_));
  }
  cu->sync(NULL, NULL);
  for (int pos = 0; pos < p->args.n; pos++) cu->free((uintptr_t)da[pos], NULL);
  for (int q = 0; q < p->nout; q++) cu->free((uintptr_t)dout[q], NULL);
  cu->stream_destroy(s, NULL);
  cu->leave();
  if (st != KEOPS_OK) rt_fail(st, "%s", msg);
  return st;
}

static void gpu_prob_run(prob *P, int devp) {
  keops_status st = gpu_run(P->k, P->M, P->N, P->arr, P->out[0], devp, NULL);
  ck_assert_msg(st == KEOPS_OK, "%s: GPU run on the fake%s: %s", P->what,
                devp ? " (device pointers)" : "", keops_last_error());
}

static int n_op_cases, n_rcfgs;
static rcfg rcfgs[MAXRCFG];

/* _i = case: the dtype alternates with the case, the axis every two, device pointers every
 * three. */
START_TEST(op_matrix) {
  _i = _i * STRIDE + _i % STRIDE; /* both dtypes, axes and pointer kinds still */
  if (_i >= n_op_cases) return;
  int devp = (_i / 3) % 2;
  mx_op_case(ctx, &mx_op_cases[_i], (_i / 2) % 2, mx_dtype_of(_i % 2), 900 + (uint64_t)_i,
             gpu_prob_run, devp, devp ? ", fake driver, device pointers" : ", fake driver");
}
END_TEST

START_TEST(reduction_matrix) {
  _i = _i * STRIDE + _i % STRIDE;
  if (_i >= n_rcfgs) return;
  int devp = _i % 2;
  mx_red_case(ctx, &rcfgs[_i], 70, 600, 6000 + (uint64_t)_i, gpu_prob_run, devp,
              devp ? ", fake driver, device pointers" : ", fake driver");
}
END_TEST

/* Small M: 3 rows over 4096 reduced indices, so gpu_run.c splits j across blocks and the
 * combine kernel merges the partial states; every reduction row, both dtypes. */
START_TEST(small_m_split) {
  _i = _i * STRIDE + (_i + 1) % STRIDE; /* not the reduction matrix's cases */
  if (_i >= n_rcfgs) return;
  const rcfg *g = &rcfgs[_i];
  int64_t M = g->axis ? 3 : 4096, N = g->axis ? 4096 : 3;
  mx_red_case(ctx, g, M, N, 8000 + (uint64_t)_i, gpu_prob_run, _i % 2,
              _i % 2 ? ", fake driver, j split, device pointers" : ", fake driver, j split");
}
END_TEST

/* ---- injected failures -------------------------------------------------------------------------- */

/* The entry points a host-array GPU run with a j-split calls, after the driver is loaded. */
static const char *const entries[] = {
    "cuDeviceGet",          "cuDeviceGetName",      "cuDeviceGetAttribute", "cuDriverGetVersion",
    "cuDevicePrimaryCtxRetain", "cuCtxPushCurrent_v2", "cuModuleLoadDataEx", "cuModuleGetFunction",
    "cuMemAlloc_v2",        "cuMemcpyHtoDAsync_v2", "cuLaunchKernel",       "cuMemcpyDtoHAsync_v2",
    "cuStreamSynchronize",  "cuCtxSynchronize",     "cuMemFree_v2",
};
enum { NENTRY = sizeof entries / sizeof *entries };

/* A j-split run (3 rows, 4096 reduced indices) on the GPU backend, host arrays; 0 or the
 * failure's status with its message in msg. */
static keops_status split_run(keops_context *c, keops_dtype dt, char *msg, size_t n) {
  keops_kernel *k = split_kernel(c, dt);
  prob P;
  mx_prob_init(&P, k, 3, 4096, NULL, 0, NULL, 77);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU};
  keops_status st = keops_kernel_run(k, 3, 4096, (const void *const *)P.arr, P.out[0], &o);
  snprintf(msg, n, "%s", st ? keops_last_error() : "");
  if (st == KEOPS_OK) {
    snprintf(P.what, sizeof P.what, "split run on the fake");
    mx_prob_reference(&P);
    mx_check_outputs(&P);
  }
  mx_prob_free(&P);
  keops_kernel_destroy(k);
  return st;
}

/* After a failure: nothing leaked; a CPU run works; a new context runs on the GPU. */
static void still_usable(const char *what, int kept) {
  assert_leaks(what, kept);
  fake.clear_failures();
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s: new context: %s", what, keops_last_error());
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "SqDist(x,y)", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
  keops_kernel *k = mx_make(c, &d);
  double x[6] = {0, 1, 2, 3, 4, 5}, y[4] = {1, 1, 2, 2}, out[3];
  const void *args[2] = {x, y};
  void *outs[1] = {out};
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
  ck_assert_msg(keops_kernel_run(k, 3, 2, args, outs, &o) == KEOPS_OK, "%s: CPU run: %s", what,
                keops_last_error());
  keops_kernel_destroy(k);
  char msg[1024];
  keops_status st = split_run(c, KEOPS_FLOAT32, msg, sizeof msg);
  keops_context_destroy(c);
  ck_assert_msg(st == KEOPS_OK, "%s: a GPU run in a new context: %s", what, msg);
  assert_leaks(what, kept);
}

/* _i = entry * 2 + (0: the first call fails, 1: the last call of a clean run fails). The
 * calls of a clean run are counted first (in a context of their own). */
START_TEST(injected_failure) {
  const char *entry = entries[_i / 2];
  keops_context *c;
  char msg[1024];
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  (void)keops_backend_describe(c, KEOPS_BACKEND_AUTO); /* opens the driver and device 0 first */
  long before = fake.calls(entry);
  ck_assert_msg(split_run(c, KEOPS_FLOAT64, msg, sizeof msg) == KEOPS_OK, "clean run: %s", msg);
  long calls = fake.calls(entry) - before;
  keops_context_destroy(c);
  long at_end = fake.calls(entry) - before - calls;
  char what[200];
  snprintf(what, sizeof what, "after %s failed", entry);
  if (calls == 0 && at_end > 0) {
    /* only the context's end calls it (cuMemFree_v2: runs keep their scratch memory until
     * then): that failure must not stop the rest of the cleanup */
    ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
    ck_assert_msg(split_run(c, KEOPS_FLOAT32, msg, sizeof msg) == KEOPS_OK, "%s", msg);
    fake.inject(entry, _i % 2 ? (int)at_end : 1, 999, 0);
    keops_context_destroy(c);
    still_usable(what, !strcmp(entry, "cuMemFree_v2"));
    return;
  }
  if (calls == 0) return; /* not called by a run once the driver is open (e.g. cuDeviceGet) */
  int code = !strcmp(entry, "cuMemAlloc_v2") ? 2 : 999;
  const char *name = code == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_UNKNOWN";
  keops_status want = code == 2 ? KEOPS_ERROR_OUT_OF_MEMORY : KEOPS_ERROR_DEVICE;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  fake.inject(entry, _i % 2 ? (int)calls : 1, code, 0);
  keops_status st = split_run(c, KEOPS_FLOAT32, msg, sizeof msg);
  /* a failure in the cleanup after the outputs are complete (a free, the last synchronisation)
   * need not fail the run, whose outputs split_run checked; any other must, saying why */
  int cleanup = !strcmp(entry, "cuMemFree_v2") || (_i % 2 && strstr(entry, "Synchronize"));
  if (st != KEOPS_OK || !cleanup) {
    ck_assert_msg(st == want, "%s (call %ld of %ld) failing with %d: %s (%s)", entry,
                  _i % 2 ? calls : 1, calls, code, keops_status_string(st), msg);
    ck_assert_msg(strstr(msg, name) && strstr(msg, entry), "%s: message '%s' names neither %s nor %s",
                  entry, msg, name, entry);
  }
  keops_context_destroy(c);
  /* a failed cuMemFree keeps its allocation, on a GPU as here */
  still_usable(what, !strcmp(entry, "cuMemFree_v2"));
}
END_TEST

/* A block-sparse run on the GPU backend (600 x 300, two row blocks with a gap, adjacent
 * j-ranges), float64, host arrays or device pointers, with the armed failure if any: 0 (the
 * outputs checked against the reference with the same ranges) or the failure's status, its
 * message in msg. */
static keops_status ranges_run(keops_context *c, int devp, char *msg, size_t n) {
  keops_kernel *k = split_kernel(c, KEOPS_FLOAT64);
  static const int64_t ci[] = {0, 100, 150, 600}, cj[] = {0, 100, 100, 300};
  static const unsigned char keep[] = {1, 1, 0, 1};
  keops_ranges *rg;
  ck_assert_msg(keops_ranges_from_matrix(ci, 2, cj, 2, keep, &rg) == KEOPS_OK, "%s", keops_last_error());
  prob P;
  mx_prob_init(&P, k, 600, 300, NULL, 0, NULL, 78);
  keops_status st = gpu_run(k, 600, 300, P.arr, P.out[0], devp, rg);
  snprintf(msg, n, "%s", st ? keops_last_error() : "");
  if (st == KEOPS_OK) {
    snprintf(P.what, sizeof P.what, "ranges run on the fake%s", devp ? " (device pointers)" : "");
    keops_run_options ro = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE, .ranges = rg};
    ck_assert_msg(keops_kernel_run(k, 600, 300, (const void *const *)P.arr, P.out[1], &ro) == KEOPS_OK,
                  "%s", keops_last_error());
    mx_check_outputs(&P);
  }
  mx_prob_free(&P);
  keops_ranges_destroy(rg);
  keops_kernel_destroy(k);
  return st;
}

/* _i = entry * 4 + (0: the first call fails, 1: the last call of a clean run) + 2 * (device
 * pointers): a ranges run (lookup table and j-ranges staged through a scratch set, also for
 * device pointers) fails with the driver's error named and leaks nothing. Entries the run does
 * not call are skipped (the context's end: injected_failure). */
START_TEST(ranges_failure) {
  const char *entry = entries[_i / 4];
  int devp = (_i / 2) % 2;
  keops_context *c;
  char msg[1024];
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  (void)keops_backend_describe(c, KEOPS_BACKEND_AUTO);
  arm.entry = entry, arm.nth = 0;
  ck_assert_msg(ranges_run(c, devp, msg, sizeof msg) == KEOPS_OK, "clean run: %s", msg);
  long calls = arm.calls;
  keops_context_destroy(c);
  if (calls == 0) return;
  int code = !strcmp(entry, "cuMemAlloc_v2") ? 2 : 999;
  const char *name = code == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_UNKNOWN";
  keops_status want = code == 2 ? KEOPS_ERROR_OUT_OF_MEMORY : KEOPS_ERROR_DEVICE;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  arm.nth = _i % 2 ? (int)calls : 1, arm.code = code;
  keops_status st = ranges_run(c, devp, msg, sizeof msg);
  arm.entry = NULL;
  int cleanup = !strcmp(entry, "cuMemFree_v2") || (_i % 2 && !devp && strstr(entry, "Synchronize"));
  if (st != KEOPS_OK || !cleanup) {
    ck_assert_msg(st == want, "%s (call %ld of %ld%s) failing with %d: %s (%s)", entry, _i % 2 ? calls : 1,
                  calls, devp ? ", device pointers" : "", code, keops_status_string(st), msg);
    ck_assert_msg(strstr(msg, name) && strstr(msg, entry), "%s: message '%s' names neither %s nor %s",
                  entry, msg, name, entry);
  }
  keops_context_destroy(c);
  char what[200];
  snprintf(what, sizeof what, "after %s failed in a ranges run%s", entry, devp ? " (device pointers)" : "");
  still_usable(what, !strcmp(entry, "cuMemFree_v2"));
}
END_TEST

/* cuInit fails: the GPU backend is KEOPS_ERROR_NO_DEVICE with the driver's error named, AUTO
 * runs on the CPU. */
START_TEST(init_fails) {
  fake.inject("cuInit", 1, 999, 0);
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  char msg[1024];
  keops_status st = split_run(c, KEOPS_FLOAT32, msg, sizeof msg);
  ck_assert_msg(st == KEOPS_ERROR_NO_DEVICE && strstr(msg, "cuInit") && strstr(msg, "CUDA_ERROR_UNKNOWN"),
                "%s: %s", keops_status_string(st), msg);
  ck_assert_int_eq(keops_kernel_backend(NULL, NULL), KEOPS_BACKEND_AUTO);
  keops_context_destroy(c);
  assert_no_leak("after cuInit failed");
}
END_TEST

/* A kernel fault is sticky: the run fails with ILLEGAL_ADDRESS; later GPU runs fail at once
 * naming it (without another driver call on the lost context), AUTO runs on the CPU, in this
 * context and in new ones. */
START_TEST(sticky_fault) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  fake.inject("cuStreamSynchronize", 1, 700, 1);
  fake.inject("cuCtxSynchronize", 1, 700, 1);
  char msg[1024];
  keops_status st = split_run(c, KEOPS_FLOAT32, msg, sizeof msg);
  ck_assert_msg(st == KEOPS_ERROR_DEVICE && strstr(msg, "CUDA_ERROR_ILLEGAL_ADDRESS"), "%s: %s",
                keops_status_string(st), msg);
  fake.clear_failures();
  long calls = fake.calls(NULL);
  st = split_run(c, KEOPS_FLOAT32, msg, sizeof msg);
  ck_assert_msg(st == KEOPS_ERROR_DEVICE && strstr(msg, "CUDA_ERROR_ILLEGAL_ADDRESS") &&
                    strstr(msg, "unusable"),
                "the run after a sticky fault: %s: %s", keops_status_string(st), msg);
  ck_assert_msg(fake.calls(NULL) - calls <= 12, "%ld driver calls after the fault",
                fake.calls(NULL) - calls);
  for (int fresh = 0; fresh < 2; fresh++) {
    keops_context *cc = c;
    if (fresh) ck_assert_msg(keops_context_create(&cc) == KEOPS_OK, "%s", keops_last_error());
    keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))*b", .aliases = run_aliases, .n_aliases = 3,
                           .axis = KEOPS_AXIS_J};
    keops_kernel *k = mx_make(cc, &d);
    ck_assert_int_eq(keops_kernel_backend(k, NULL), KEOPS_BACKEND_CPU);
    prob P;
    mx_prob_init(&P, k, 5, 7, NULL, 0, NULL, 3);
    snprintf(P.what, sizeof P.what, "AUTO after a sticky fault%s", fresh ? ", new context" : "");
    ck_assert_msg(keops_kernel_run(k, 5, 7, (const void *const *)P.arr, P.out[0], NULL) == KEOPS_OK,
                  "%s: %s", P.what, keops_last_error());
    mx_prob_reference(&P);
    mx_check_outputs(&P);
    mx_prob_free(&P);
    keops_kernel_destroy(k);
    if (fresh) keops_context_destroy(cc);
  }
  keops_context_destroy(c);
  assert_no_leak("after a sticky fault");
}
END_TEST

/* AUTO picks the GPU only where it can run (issue 9): _i = 0 a good device; 1 compute
 * capability 3.5 (below sm_50); 2 a driver too old for any PTX this LLVM writes (CUDA 9.0);
 * 3 compute mode PROHIBITED (no primary context). Otherwise the CPU, and
 * keops_backend_describe(AUTO) says why; the GPU backend asked for explicitly fails with the
 * reason. (An LLVM without NVPTX is the third condition; this build has it.) */
START_TEST(auto_choice) {
  fakecuda_device d;
  ck_assert_int_eq(fake.get_device(0, &d), 0);
  static const char *const why[] = {NULL, "compute capability 3.5", "driver", "CUDA_ERROR_DEVICE_UNAVAILABLE"};
  if (_i == 1) d.cc_major = 3, d.cc_minor = 5;
  if (_i == 3) d.compute_mode = 2;
  ck_assert_int_eq(fake.set_device(0, &d), 0);
  if (_i == 2) ck_assert_int_eq(fake.set_devices(1, 8000), 0);
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_kernel_desc kd = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))*b", .aliases = run_aliases, .n_aliases = 3,
                          .axis = KEOPS_AXIS_J};
  keops_kernel *k = mx_make(c, &kd);
  const char *autod = keops_backend_describe(c, KEOPS_BACKEND_AUTO);
  if (!why[_i]) {
    ck_assert_int_eq(keops_kernel_backend(k, NULL), KEOPS_BACKEND_GPU);
    ck_assert_str_eq(autod, keops_backend_describe(c, KEOPS_BACKEND_GPU));
  } else {
    ck_assert_int_eq(keops_kernel_backend(k, NULL), KEOPS_BACKEND_CPU);
    ck_assert_msg(strstr(autod, "CPU") && strstr(autod, "GPU not used") && strstr(autod, why[_i]),
                  "case %d: AUTO is '%s'", _i, autod);
  }
  prob P;
  mx_prob_init(&P, k, 5, 300, NULL, 0, NULL, 4);
  snprintf(P.what, sizeof P.what, "AUTO, case %d", _i);
  ck_assert_msg(keops_kernel_run(k, 5, 300, (const void *const *)P.arr, P.out[0], NULL) == KEOPS_OK,
                "%s: %s", P.what, keops_last_error());
  mx_prob_reference(&P);
  mx_check_outputs(&P);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU};
  keops_status st = keops_kernel_run(k, 5, 300, (const void *const *)P.arr, P.out[0], &o);
  ck_assert_msg(why[_i] ? st != KEOPS_OK : st == KEOPS_OK, "case %d: the GPU backend: %s (%s)", _i,
                keops_status_string(st), keops_last_error());
  mx_prob_free(&P);
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after AUTO");
}
END_TEST

/* Device pointers and a stream of a context the user created (cuCtxCreate): the run uses
 * that context (the memory and the stream are its own), with the j-split (3 rows over 4096)
 * and without, dense or block-sparse (_i >= 4); a Zero formula zeroes outputs of that context
 * too. Nothing stays loaded or allocated in it after the run, so the user may destroy it at
 * once. */
START_TEST(user_context_pointers) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  typedef int (*create_fn)(void **, unsigned, int);
  typedef int (*ctx_fn)(void *);
  typedef int (*pop_fn)(void **);
  create_fn create;
  ctx_fn destroy;
  pop_fn pop;
  void *sy[3] = {dlsym(lib, "cuCtxCreate_v2"), dlsym(lib, "cuCtxDestroy_v2"), dlsym(lib, "cuCtxPopCurrent_v2")};
  memcpy(&create, &sy[0], sizeof create);
  memcpy(&destroy, &sy[1], sizeof destroy);
  memcpy(&pop, &sy[2], sizeof pop);
  ck_assert(create && destroy && pop);
  kerr e;
  kerr_clear(&e);
  ck_assert_msg(cu->load(&e) == KEOPS_OK, "%s", e.msg);
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_dtype dt = mx_dtype_of(_i % 2);
  int64_t M = (_i / 2) % 2 ? 3 : 300, N = 4096;
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))*b", .aliases = run_aliases, .n_aliases = 3,
                         .axis = KEOPS_AXIS_J, .dtype = dt};
  keops_kernel *k = mx_make(c, &d);
  prob P;
  mx_prob_init(&P, k, M, N, NULL, 0, NULL, 11);
  snprintf(P.what, sizeof P.what, "user context, M = %lld, %s", (long long)M, mx_dtype_name(dt));
  void *uc = NULL, *popped = NULL;
  ck_assert_int_eq(create(&uc, 0, 0), 0); /* current on this thread */
  size_t es = dt == KEOPS_FLOAT32 ? 4 : 8;
  void *da[3], *dout[1];
  size_t bytes[3] = {(size_t)M * 3 * es, (size_t)N * 3 * es, (size_t)N * 2 * es}, ob = (size_t)M * 2 * es;
  for (int q = 0; q < 3; q++) da[q] = (void *)(uintptr_t)dcopy(P.arr[q], bytes[q]);
  dout[0] = (void *)(uintptr_t)dcopy(P.out[0][0], ob);
  rt_stream *s;
  TU_OK(cu->stream_create(&s, &e_));
  TU_OK(cu->sync(NULL, &e_));
  ck_assert_int_eq(pop(&popped), 0);
  ck_assert_ptr_eq(popped, uc);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU, .device_pointers = 1, .stream = s};
  /* _i >= 4: block-sparse, its tables in buffers of the user's context, freed after the run */
  const int64_t ci[] = {0, 1, 2, M}, cj[] = {0, 1000, 1000, 4096};
  static const unsigned char keep[] = {1, 1, 0, 1};
  keops_ranges *rg = NULL;
  if (_i >= 4) {
    ck_assert_msg(keops_ranges_from_matrix(ci, 2, cj, 2, keep, &rg) == KEOPS_OK, "%s", keops_last_error());
    o.ranges = rg;
    strcat(P.what, ", ranges");
  }
  fakecuda_live l;
  fake.live(&l);
  int allocs = l.allocations;
  keops_status st = keops_kernel_run(k, M, N, (const void *const *)da, dout, &o);
  ck_assert_msg(st == KEOPS_OK, "%s: %s", P.what, keops_last_error());
  o.ranges = NULL;
  fake.live(&l);
  ck_assert_int_eq(l.modules, 0); /* the run's module is gone: the user's context may go */
  ck_assert_int_eq(l.allocations, allocs); /* and so are its buffers */
  /* the user's side: its context current again, its stream synchronised, results copied */
  typedef int (*push_fn)(void *);
  push_fn push;
  void *ps = dlsym(lib, "cuCtxPushCurrent_v2");
  memcpy(&push, &ps, sizeof push);
  ck_assert_int_eq(push(uc), 0);
  TU_OK(cu->sync(s, &e_));
  TU_OK(cu->dtoh(P.out[0][0], (uintptr_t)dout[0], ob, NULL, &e_));
  keops_run_options ro = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE, .ranges = rg};
  ck_assert_msg(keops_kernel_run(k, M, N, (const void *const *)P.arr, P.out[1], &ro) == KEOPS_OK, "%s",
                keops_last_error());
  mx_check_outputs(&P);
  keops_ranges_destroy(rg);
  ck_assert_int_eq(pop(&popped), 0);
  /* a Zero formula on outputs of the user's context */
  keops_kernel_desc z = {.size = sizeof(keops_kernel_desc), .formula = "Zero(2)", .aliases = run_aliases, .n_aliases = 3, .axis = KEOPS_AXIS_J,
                         .dtype = dt};
  keops_kernel *kz = mx_make(c, &z);
  st = keops_kernel_run(kz, M, N, (const void *const *)da, dout, &o);
  ck_assert_msg(st == KEOPS_OK, "Zero on the user's context: %s", keops_last_error());
  ck_assert_int_eq(push(uc), 0);
  TU_OK(cu->sync(s, &e_));
  TU_OK(cu->dtoh(P.out[0][0], (uintptr_t)dout[0], ob, NULL, &e_));
  for (int64_t q = 0; q < 2 * M; q++) ck_assert(mx_outv(&P, 0, 0, q) == 0);
  for (int q = 0; q < 3; q++) cu->free((uintptr_t)da[q], NULL);
  cu->free((uintptr_t)dout[0], NULL);
  cu->stream_destroy(s, NULL);
  ck_assert_int_eq(pop(&popped), 0);
  ck_assert_int_eq(destroy(uc), 0);
  keops_kernel_destroy(kz);
  mx_prob_free(&P);
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after runs in a user context");
}
END_TEST

/* Wide j-variables (y = Vj(100), float64: 200 KiB for a block of 256): above 48 KiB of shared
 * memory the kernel must opt in (cuFuncSetAttribute; the fake refuses the launch otherwise),
 * up to the device's limit; a device without opt-in room (_i = 1) or a Volta (_i = 2, 96 KiB)
 * gets smaller blocks. Results against the reference either way. */
START_TEST(shared_limits) {
  fakecuda_device d;
  ck_assert_int_eq(fake.get_device(0, &d), 0);
  if (_i == 1) d.shared_per_block_optin = 48 * 1024;
  if (_i == 2) d.cc_major = 7, d.cc_minor = 0, d.shared_per_block_optin = 96 * 1024;
  ck_assert_int_eq(fake.set_device(0, &d), 0);
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  const char *const al[] = {"x = Vi(100)", "y = Vj(100)"};
  keops_kernel_desc kd = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J,
                          .dtype = KEOPS_FLOAT64};
  keops_kernel *k = mx_make(c, &kd);
  prob P;
  mx_prob_init(&P, k, 300, 500, NULL, 0, NULL, 5);
  snprintf(P.what, sizeof P.what, "Vj(100) float64, device case %d", _i);
  long before = fake.calls("cuFuncSetAttribute");
  gpu_prob_run(&P, 0);
  ck_assert_msg((fake.calls("cuFuncSetAttribute") > before) == (_i != 1),
                "case %d: %ld cuFuncSetAttribute calls", _i, fake.calls("cuFuncSetAttribute") - before);
  mx_prob_reference(&P);
  mx_check_outputs(&P);
  mx_prob_free(&P);
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after wide j-variables");
}
END_TEST

/* A device with few registers per block: the kernel reports (MAX_THREADS_PER_BLOCK) that it
 * launches with 128 threads of its 32 registers, and the run uses 128-thread blocks, right
 * against the reference; with room for less than a warp, the run is refused as unsupported,
 * naming the cause. The process goes on. */
START_TEST(block_size_by_registers) {
  fakecuda_device d;
  ck_assert_int_eq(fake.get_device(0, &d), 0);
  d.regs_per_block = 4096; /* 128 threads of 32 registers */
  ck_assert_int_eq(fake.set_device(0, &d), 0);
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  char msg[1024];
  for (int dt = 0; dt < 2; dt++) {
    keops_status st = split_run(c, dt ? KEOPS_FLOAT64 : KEOPS_FLOAT32, msg, sizeof msg);
    ck_assert_msg(st == KEOPS_OK, "128-thread blocks: %s: %s", keops_status_string(st), msg);
  }
  keops_context_destroy(c);
  d.regs_per_block = 512; /* 16 threads */
  ck_assert_int_eq(fake.set_device(0, &d), 0);
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_status st = split_run(c, KEOPS_FLOAT32, msg, sizeof msg);
  ck_assert_msg(st == KEOPS_ERROR_UNSUPPORTED && strstr(msg, "too many registers") && strstr(msg, "at most 0 threads"),
                "%s: %s", keops_status_string(st), msg);
  keops_context_destroy(c);
  d.regs_per_block = 65536;
  ck_assert_int_eq(fake.set_device(0, &d), 0);
  still_usable("after a kernel too large for the registers", 0);
}
END_TEST

/* A process that only runs on the CPU never opens the driver: creating a context, building
 * and running kernels with KEOPS_BACKEND_CPU call no entry point (not even cuInit); asking
 * what AUTO means does, once. */
START_TEST(cpu_only_never_opens_the_driver) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "SqDist(x,y)", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
  keops_kernel *k = mx_make(c, &d);
  float x[4] = {0, 1, 2, 3}, y[2] = {1, 1}, out[2];
  const void *args[2] = {x, y};
  void *outs[1] = {out};
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
  ck_assert_msg(keops_kernel_run(k, 2, 1, args, outs, &o) == KEOPS_OK, "%s", keops_last_error());
  ck_assert(out[0] == 1 && out[1] == 5);
  ck_assert_int_eq(keops_kernel_backend(k, &o), KEOPS_BACKEND_CPU);
  ck_assert_msg(fake.calls(NULL) == 0, "%ld driver calls, cuInit %ld", fake.calls(NULL), fake.calls("cuInit"));
  ck_assert_int_eq(keops_kernel_backend(k, NULL), KEOPS_BACKEND_GPU); /* AUTO: now the driver */
  ck_assert_int_eq(fake.calls("cuInit"), 1);
  ck_assert_msg(strstr(keops_backend_describe(c, KEOPS_BACKEND_AUTO), "GPU"), "%s",
                keops_backend_describe(c, KEOPS_BACKEND_AUTO));
  keops_kernel_destroy(k);
  keops_context_destroy(c);
}
END_TEST

/* Two devices: runs on each; a pointer of device 1 in a run on device 0 is a bad argument. */
START_TEST(two_devices) {
  ck_assert_int_eq(fake.set_devices(2, 12080), 0);
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_kernel_desc kd = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))*b", .aliases = run_aliases, .n_aliases = 3,
                          .axis = KEOPS_AXIS_I};
  keops_kernel *k = mx_make(c, &kd);
  for (int dev = 0; dev < 2; dev++) {
    prob P;
    mx_prob_init(&P, k, 40, 30, NULL, 0, NULL, 6 + (uint64_t)dev);
    snprintf(P.what, sizeof P.what, "device %d of 2", dev);
    keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU, .device_id = dev};
    ck_assert_msg(keops_kernel_run(k, 40, 30, (const void *const *)P.arr, P.out[0], &o) == KEOPS_OK,
                  "%s: %s", P.what, keops_last_error());
    mx_prob_reference(&P);
    mx_check_outputs(&P);
    if (dev == 1) { /* device 1's pointers, the run on device 0 */
      TU_OK(cu->enter(1, &e_));
      void *da[3], *dout[1] = {(void *)(uintptr_t)dcopy(P.out[0][0], 30 * 2 * 4)};
      for (int q = 0; q < 3; q++)
        da[q] = (void *)(uintptr_t)dcopy(P.arr[q], (size_t)(q ? 30 : 40) * (q == 2 ? 2 : 3) * 4);
      cu->leave();
      keops_run_options od = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU, .device_pointers = 1};
      keops_status st = keops_kernel_run(k, 40, 30, (const void *const *)da, dout, &od);
      ck_assert_msg(st == KEOPS_ERROR_ARGUMENT && strstr(keops_last_error(), "device 1"),
                    "%s: %s", keops_status_string(st), keops_last_error());
      od.device_id = 1;
      ck_assert_msg(keops_kernel_run(k, 40, 30, (const void *const *)da, dout, &od) == KEOPS_OK, "%s",
                    keops_last_error());
      TU_OK(cu->enter(1, &e_));
      TU_OK(cu->sync(NULL, &e_));
      for (int q = 0; q < 3; q++) cu->free((uintptr_t)da[q], NULL);
      cu->free((uintptr_t)dout[0], NULL);
      cu->leave();
    }
    mx_prob_free(&P);
  }
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after two devices");
}
END_TEST

/* Runs from 4 threads at once, host arrays and device pointers on streams of their own: the
 * per-thread context stacks, the fake's queues and the context's scratch memory (gpu_run.c)
 * under concurrent use; the context keeps at most 4 sets of it. */
static void *thread_runs(void *arg) {
  keops_context *c = arg;
  for (int i = 0; i < 3; i++) {
    char msg[1024];
    if (split_run(c, i % 2 ? KEOPS_FLOAT64 : KEOPS_FLOAT32, msg, sizeof msg) != KEOPS_OK)
      return (void *)1;
  }
  return NULL;
}

START_TEST(threads) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  pthread_t t[4];
  for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&t[i], NULL, thread_runs, c), 0);
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(t[i], &r);
    ck_assert_msg(r == NULL, "thread %d: a run failed", i);
  }
  fakecuda_live l;
  fake.live(&l);
  ck_assert_msg(l.allocations <= 4 * 5, "%d allocations kept (4 sets of 5 buffers at most)", l.allocations);
  keops_context_destroy(c);
  assert_no_leak("after threads");
}
END_TEST

int main(void) {
  load_fake();
  mx_backend = "GPU (fake driver)", mx_ftz_term = 0x1p-100;
  n_op_cases = mx_build_op_cases(MX_GPU);
  n_rcfgs = mx_build_rcfgs(rcfgs, MAXRCFG);
  Suite *s = suite_create("fakecuda");
  TCase *tc = tcase_create("driver");
  tcase_add_test(tc, table_on_fake);
  tcase_add_test(tc, streams_run_at_sync);
  tcase_add_test(tc, modules_refused);
  suite_add_tcase(s, tc);
  TCase *m = tcase_create("runs");
  tcase_set_timeout(m, 1800);
  tcase_add_checked_fixture(m, ctx_setup, ctx_teardown);
  tcase_add_loop_test(m, op_matrix, 0, n_op_cases > 0 ? (n_op_cases + STRIDE - 1) / STRIDE : 0);
  tcase_add_loop_test(m, reduction_matrix, 0, n_rcfgs > 0 ? (n_rcfgs + STRIDE - 1) / STRIDE : 0);
  tcase_add_loop_test(m, small_m_split, 0, n_rcfgs > 0 ? (n_rcfgs + STRIDE - 1) / STRIDE : 0);
  suite_add_tcase(s, m);
  TCase *f = tcase_create("failures");
  tcase_set_timeout(f, 600);
  tcase_add_loop_test(f, injected_failure, 0, 2 * NENTRY);
  tcase_add_loop_test(f, ranges_failure, 0, 4 * NENTRY);
  tcase_add_test(f, init_fails);
  tcase_add_test(f, sticky_fault);
  tcase_add_loop_test(f, auto_choice, 0, 4);
  tcase_add_loop_test(f, user_context_pointers, 0, 8);
  tcase_add_loop_test(f, shared_limits, 0, 3);
  tcase_add_test(f, block_size_by_registers);
  tcase_add_test(f, two_devices);
  tcase_add_test(f, cpu_only_never_opens_the_driver);
  tcase_add_test(f, threads);
  suite_add_tcase(s, f);
  return tu_run(s, 1) ? 1 : 0;
}
