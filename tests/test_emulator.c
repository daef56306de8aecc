/* The GPU emulator (runtime/emulator.c) and its device (emu_device.c).
 *
 * The launcher is tested with kernels written in C against emu.h's ABI (they call the barrier
 * and access callbacks themselves, as kt_gpuemu's code does): a block-wide tree sum in
 * shared memory must be exact; each fault a GPU would hide - a thread returning while others
 * wait at a barrier, write/write, read/write and write/read races on shared memory, accesses
 * outside the dynamic shared size or outside global memory, misaligned shared accesses - ends
 * the launch with
 * KEOPS_ERROR_DEVICE naming the thread, the block and the access; each launch limit is
 * refused (KEOPS_ERROR_ARGUMENT); float32 kernels run flushing denormals.
 *
 * kt_gpuemu's own code: a kernel compiled from a formula reads its global memory only through
 * the access check (a launch whose global_ok refuses the output fails, naming a store).
 *
 * The emulated device: allocations bounds-checked, work queued on a stream runs only at a
 * synchronisation (a read before the sync sees the poisoned memory), copies into pageable
 * host memory complete on return, errors of queued launches surface at sync. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "emulator.h"
#include "gpu.h"
#include "target.h"
#include "testutil.h"


/* ---- C kernels ------------------------------------------------------------------------------ */

static float ld(kt_emu_thread *t, float *p, int sh) {
  t->access(t, p, 4, KT_EMU_LOAD | (sh ? KT_EMU_SHARED : 0));
  return *p;
}
static void st(kt_emu_thread *t, float *p, float v, int sh) {
  t->access(t, p, 4, KT_EMU_STORE | (sh ? KT_EMU_SHARED : 0));
  *p = v;
}

/* out[block] = sum of in[block * n .. + n), n = blockDim, by halving in shared memory. */
static void tree_sum(void *const *params, kt_emu_thread *t) {
  float *in = *(float **)params[0], *out = *(float **)params[1], *s = t->shared;
  unsigned i = t->sreg[0], n = t->sreg[1], b = t->sreg[2];
  st(t, &s[i], ld(t, &in[b * n + i], 0), 1);
  t->barrier(t);
  for (unsigned h = n / 2; h > 0; h /= 2) {
    if (i < h) st(t, &s[i], ld(t, &s[i], 1) + ld(t, &s[i + h], 1), 1);
    t->barrier(t);
  }
  if (i == 0) st(t, &out[b], ld(t, &s[0], 1), 0);
}

/* The same without the barrier after the first store: thread i reads s[i + h], written by
 * another thread in the same epoch. */
static void racy_sum(void *const *params, kt_emu_thread *t) {
  float *in = *(float **)params[0], *s = t->shared;
  unsigned i = t->sreg[0], n = t->sreg[1];
  st(t, &s[i], ld(t, &in[i], 0), 1);
  if (i < n / 2) st(t, &s[i], ld(t, &s[i], 1) + ld(t, &s[i + n / 2], 1), 1);
}

/* Every thread writes s[0]. */
static void all_write(void *const *params, kt_emu_thread *t) {
  (void)params;
  st(t, t->shared, 1.0f, 1);
}

/* Threads run in order 0, 1, ...: thread 0 reads s[1], then thread 3 writes it with no
 * barrier between (a read/write race). */
static void reader_first(void *const *params, kt_emu_thread *t) {
  (void)params;
  float *s = t->shared;
  if (t->sreg[0] == 0) (void)ld(t, &s[1], 1);
  if (t->sreg[0] == 3) st(t, &s[1], 2.0f, 1);
}

/* Thread 2 returns before the barrier the others wait at. */
static void early_exit(void *const *params, kt_emu_thread *t) {
  (void)params;
  if (t->sreg[0] == 2) return;
  t->barrier(t);
}

/* Thread 1 stores at float index params[0] of shared memory. */
static void shared_at(void *const *params, kt_emu_thread *t) {
  int64_t at = *(int64_t *)params[0];
  if (t->sreg[0] == 1) st(t, (float *)t->shared + at, 1.0f, 1);
}

/* Thread 0 stores 4 bytes at byte offset 2 of shared memory. */
static void misaligned(void *const *params, kt_emu_thread *t) {
  (void)params;
  if (t->sreg[0] == 0) st(t, (float *)((char *)t->shared + 2), 1.0f, 1);
}

/* out[tid] = in[tid] * 2^-100 (float32): 2^-130 is a denormal. */
static void scale_down(void *const *params, kt_emu_thread *t) {
  volatile float *in = *(float **)params[0], *out = *(float **)params[1];
  volatile float k = 0x1p-100f;
  unsigned i = t->sreg[0];
  out[i] = in[i] * k;
}

static rt_emu_function fn_of(kt_emu_entry entry, const char *name, unsigned nparams, unsigned ftz) {
  rt_emu_function f = {entry, {nparams, 256, ftz, 0}, ""};
  snprintf(f.name, sizeof f.name, "%s", name);
  return f;
}

static rt_emu_launch launch_of(const rt_emu_function *f, unsigned blocks, unsigned threads, unsigned shared,
                               void **params) {
  return (rt_emu_launch){f, {blocks, 1, 1}, {threads, 1, 1}, shared, 48 << 10, 1024, params, NULL, NULL};
}

/* A failed launch: status, and every fragment in the message. */
static void expect_fail(const rt_emu_launch *l, keops_status want, const char *const *frags, int nf) {
  kerr e;
  kerr_clear(&e);
  keops_status got = rt_emu_run(l, &e);
  ck_assert_msg(got == want, "status %s, want %s (%s)", keops_status_string(got), keops_status_string(want),
                e.msg);
  for (int q = 0; q < nf; q++) ck_assert_msg(strstr(e.msg, frags[q]), "'%s' not in: %s", frags[q], e.msg);
}

START_TEST(barriers_give_exact_sums) {
  enum { B = 3, T = 256 };
  float *in = malloc(sizeof(float) * B * T), out[B];
  double want[B] = {0};
  for (int q = 0; q < B * T; q++) want[q / T] += in[q] = (float)(q % 7) - 3.0f;
  rt_emu_function f = fn_of(tree_sum, "tree_sum", 2, 0);
  float *pout = out;
  void *params[2] = {&in, &pout};
  rt_emu_launch l = launch_of(&f, B, T, T * 4, params);
  TU_OK(rt_emu_run(&l, &e_));
  for (int b = 0; b < B; b++) ck_assert_msg(out[b] == want[b], "block %d: %g, want %g", b, out[b], want[b]);
  free(in);
}
END_TEST

START_TEST(races_are_faults) {
  float in[64] = {0};
  float *pin = in;
  void *params[1] = {&pin};
  rt_emu_function racy = fn_of(racy_sum, "racy_sum", 1, 0), ww = fn_of(all_write, "all_write", 1, 0),
                  rw = fn_of(reader_first, "reader_first", 1, 0);
  rt_emu_launch l = launch_of(&racy, 1, 64, 256, params);
  /* thread 0 reads s[32], written by thread 32 - who runs later: thread 32 then writes what
   * thread 0 read */
  expect_fail(&l, KEOPS_ERROR_DEVICE, (const char *const[]){"racy_sum", "thread 32 of block (0, 0, 0)", "race"}, 3);
  l.fn = &ww;
  expect_fail(&l, KEOPS_ERROR_DEVICE, (const char *const[]){"thread 1 ", "written by thread 0", "race"}, 3);
  l.fn = &rw;
  expect_fail(&l, KEOPS_ERROR_DEVICE, (const char *const[]){"thread 3 ", "writes shared offset 4", "read by"}, 3);
}
END_TEST

START_TEST(exit_at_barrier_is_a_fault) {
  void *params[1] = {NULL};
  rt_emu_function f = fn_of(early_exit, "early_exit", 0, 0);
  rt_emu_launch l = launch_of(&f, 1, 32, 0, params);
  expect_fail(&l, KEOPS_ERROR_DEVICE,
              (const char *const[]){"thread 2 of block (0, 0, 0) returned while 31 threads wait at a barrier"}, 1);
}
END_TEST

START_TEST(shared_bounds) {
  int64_t at = 16;
  void *params[1] = {&at};
  rt_emu_function f = fn_of(shared_at, "shared_at", 1, 0);
  rt_emu_launch l = launch_of(&f, 1, 32, 64, params);
  expect_fail(&l, KEOPS_ERROR_DEVICE,
              (const char *const[]){"thread 1 ", "stores 4 bytes at shared offset 64, outside the 64 bytes"}, 2);
  at = -1;
  expect_fail(&l, KEOPS_ERROR_DEVICE, (const char *const[]){"shared offset -4"}, 1);
  params[0] = &at, at = 15; /* the last float: fine */
  TU_OK(rt_emu_run(&l, &e_));
  rt_emu_function m = fn_of(misaligned, "misaligned", 0, 0);
  l.fn = &m;
  expect_fail(&l, KEOPS_ERROR_DEVICE, (const char *const[]){"thread 0 ", "shared offset 2: a misaligned address"}, 2);
}
END_TEST

static int refuse_out(void *ctx, const void *addr, uint64_t bytes) {
  const float *out = ctx;
  return !((const float *)addr >= out && (const float *)addr < out + 3) && bytes;
}

START_TEST(global_bounds) {
  enum { B = 3, T = 64 };
  float in[B * T] = {0}, out[B];
  rt_emu_function f = fn_of(tree_sum, "tree_sum", 2, 0);
  float *pin = in, *pout = out;
  void *params[2] = {&pin, &pout};
  rt_emu_launch l = launch_of(&f, B, T, T * 4, params);
  l.global_ok = refuse_out, l.global_ctx = out;
  expect_fail(&l, KEOPS_ERROR_DEVICE,
              (const char *const[]){"tree_sum: thread 0 of block (", ", 0, 0) stores 4 bytes at", "outside every allocation"}, 3);
}
END_TEST

START_TEST(launch_limits) {
  float in[1] = {0};
  float *pin = in;
  void *params[1] = {&pin};
  rt_emu_function f = fn_of(all_write, "all_write", 1, 0);
  rt_emu_launch l = launch_of(&f, 1, 512, 16, params);
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"512 threads per block", "launch bound of 256"}, 2);
  l.max_threads = 128, l.block[0] = 256;
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"256 threads per block, above the device's 128"}, 1);
  l = launch_of(&f, 1, 32, 16, params);
  l.grid[1] = 65536;
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"65535 in y"}, 1);
  l = launch_of(&f, 1, 32, 49 << 10, params);
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"50176 bytes of dynamic shared memory"}, 1);
  l = launch_of(&f, 0, 32, 16, params);
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"empty"}, 1);
  l = launch_of(&f, 1, 32, 16, params);
  l.block[1] = 2;
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"threadIdx.x only"}, 1);
  l = launch_of(NULL, 1, 32, 16, params);
  expect_fail(&l, KEOPS_ERROR_ARGUMENT, (const char *const[]){"NULL function"}, 1);
}
END_TEST

START_TEST(float32_flushes_denormals) {
  float in[32], out[32];
  for (int q = 0; q < 32; q++) in[q] = 0x1p-30f * (float)(q + 1);
  float *pin = in, *pout = out;
  void *params[2] = {&pin, &pout};
  for (unsigned ftz = 0; ftz < 2; ftz++) {
    rt_emu_function f = fn_of(scale_down, "scale_down", 2, ftz);
    rt_emu_launch l = launch_of(&f, 1, 32, 0, params);
    TU_OK(rt_emu_run(&l, &e_));
#if defined(__x86_64__)
    ck_assert_msg(ftz ? out[0] == 0 : out[0] == 0x1p-130f, "ftz %u: %g", ftz, (double)out[0]);
#endif
  }
  volatile float tiny = FLT_MIN, half = 0.5f; /* the launcher restores the caller's modes */
  ck_assert(tiny * half > 0);
}
END_TEST

/* p compiled for kt_gpuemu on this host (caller frees): an object file of *len bytes, or
 * with KC_IR the instrumented IR as text. */
static char *emu_compile(const fe_program *p, kc_out out, size_t *len) {
  kerr e;
  kerr_clear(&e);
  kt_target host, t;
  ck_assert(!kt_pick(&host, "host", &e));
  kt_set(&t, &kt_gpuemu, host.cpu, host.features);
  char *obj = kt_compile(p, &t, "keops_kernel", out, len, &e);
  ck_assert_msg(obj, "%s", e.msg);
  return obj;
}
#define emu_object(p, len) emu_compile(p, KC_OBJ, len)

/* ---- kt_gpuemu's code -------------------------------------------------------------------------- */

START_TEST(generated_code_is_checked) {
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "SqDist(x,y)", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&d, &e);
  ck_assert_msg(p, "%s", e.msg);
  size_t len;
  /* every read of the tile is checked, also through the pair loop's pointer phi: the float
   * loads of shared memory (4 bytes, KT_EMU_LOAD | KT_EMU_SHARED; the merge's are doubles)
   * are the j-variables' components, each read once per j, in each of the two kernels (dense
   * and ranges) */
  char *ir = emu_compile(p, KC_IR, &len), tile_load[32];
  snprintf(tile_load, sizeof tile_load, ", i64 4, i32 %d)", KT_EMU_LOAD | KT_EMU_SHARED);
  int nload = 0;
  for (const char *at = ir; (at = strstr(at, tile_load)); at++) nload++;
  ck_assert_int_eq(nload, 2 * p->red_width);
  free(ir);
  char *obj = emu_object(p, &len);
  rt_emu_module *m;
  kerr_clear(&e); /* not an object file: refused when loaded, not at the first lookup */
  ck_assert_int_eq(rt_emu_module_load("garbage", 7, &m, &e), KEOPS_ERROR_COMPILE);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(e.msg, "not an object file"), "%s", e.msg);
  TU_OK(rt_emu_module_load(obj, len, &m, &e_));
  free(obj);
  const rt_emu_function *f;
  TU_OK(rt_emu_module_function(m, "keops_kernel", &f, &e_));
  ck_assert_uint_eq(f->info.nparams, 5 + 2 + 1);
  ck_assert_uint_eq(f->info.maxntid, GPU_MAX_BLOCK);
  ck_assert_uint_eq(f->info.ftz, 1);
  kerr none;
  kerr_clear(&none);
  const rt_emu_function *g;
  ck_assert_int_eq(rt_emu_module_function(m, "no_such", &g, &none), KEOPS_ERROR_DEVICE);
  ck_assert_ptr_null(g);

  enum { M = 40, N = 300 };
  float x[2 * M], y[2 * N], out[M];
  for (int q = 0; q < 2 * M; q++) x[q] = (float)(q % 5);
  for (int q = 0; q < 2 * N; q++) y[q] = (float)(q % 3);
  int64_t rows = M, j0 = 0, j1 = N, nslice = 1;
  void *partial = NULL, *px = x, *py = y, *po = out;
  void *params[8] = {&rows, &j0, &j1, &nslice, &partial, &px, &py, &po};
  rt_emu_launch l = {f, {1, 1, 1}, {64, 1, 1}, 64 * 2 * 4, 48 << 10, 1024, params, refuse_out, out};
  int U = gpu_rows_per_thread(p); /* gpu.h: 4 slices of 16 threads of U rows */
  size_t merge = (size_t)3 * 16 * (size_t)U * (size_t)p->state * 8;
  kerr_clear(&e);
  /* refuse_out refuses out[0..3): the store of row 0 must be checked and refused */
  ck_assert_int_eq(rt_emu_run(&l, &e), KEOPS_ERROR_DEVICE);
  ck_assert_msg(strstr(e.msg, "keops_kernel: thread 0 of block (0, 0, 0) stores 4 bytes"), "%s", e.msg);
  l.global_ok = NULL;
  /* one slice per row, then 4 slices of 16 rows a block merging their states in shared memory
   * (the race checks watch the merge) */
  for (nslice = 1; nslice <= 4; nslice *= 4) {
    l.grid[0] = nslice == 1 ? 1 : (M + 16 * U - 1) / (16 * U);
    l.shared_bytes = nslice == 1 || merge < 64 * 2 * 4 ? 64 * 2 * 4 : (unsigned)merge;
    memset(out, 0, sizeof out);
    TU_OK(rt_emu_run(&l, &e_));
    for (int i = 0; i < M; i++) {
      double want = 0;
      for (int j = 0; j < N; j++)
        want += (x[2 * i] - y[2 * j]) * (x[2 * i] - y[2 * j]) + (x[2 * i + 1] - y[2 * j + 1]) * (x[2 * i + 1] - y[2 * j + 1]);
      ck_assert_msg(out[i] == (float)want, "%d slices, row %d: %g, want %g", (int)nslice, i, (double)out[i], want);
    }
  }
  rt_emu_module_unload(m);
  fe_free(p);
}
END_TEST

/* keops_combine adds float32 partial sums in double: 2^24 + 1 + 1 is 2^24 + 2 (in float it
 * would stay 2^24, each 1 rounding away). */
START_TEST(combine_adds_in_double) {
  const char *const al[] = {"x = Vj(1)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "x", .aliases = al, .n_aliases = 1, .axis = KEOPS_AXIS_J, .sum_scheme = KEOPS_SUM_DIRECT};
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&d, &e);
  ck_assert_msg(p, "%s", e.msg);
  ck_assert_int_eq(p->state, 1);
  size_t len;
  char *obj = emu_object(p, &len);
  rt_emu_module *m;
  TU_OK(rt_emu_module_load(obj, len, &m, &e_));
  free(obj);
  const rt_emu_function *f;
  TU_OK(rt_emu_module_function(m, "keops_combine", &f, &e_));
  double partial[3] = {0x1p24, 1, 1};
  float out = 0;
  int64_t rows = 1, nsplit = 3;
  void *pp = partial, *po = &out;
  void *params[4] = {&rows, &nsplit, &pp, &po};
  rt_emu_launch l = {f, {1, 1, 1}, {32, 1, 1}, 0, 48 << 10, 1024, params, NULL, NULL};
  TU_OK(rt_emu_run(&l, &e_));
  ck_assert_msg(out == 0x1p24f + 2, "combined %.1f, want 2^24 + 2", (double)out);
  rt_emu_module_unload(m);
  fe_free(p);
}
END_TEST

/* ---- the emulated device ----------------------------------------------------------------------- */

static const rt_device *const dv = &rt_emu_device;

START_TEST(device_memory_and_streams) {
  ck_assert(dv->load && dv->count && dv->info && dv->enter && dv->leave && dv->module_load &&
            dv->module_function && dv->function_max_threads && dv->module_unload && dv->alloc && dv->free &&
            dv->htod && dv->dtoh && dv->memset0 && dv->pointer_device && dv->launch && dv->sync &&
            dv->stream_create && dv->stream_destroy);
  int n;
  TU_OK(dv->count(&n, &e_));
  ck_assert_int_eq(n, 2);
  rt_device_info info;
  kerr e;
  kerr_clear(&e);
  ck_assert_int_eq(dv->info(2, &info, &e), KEOPS_ERROR_NO_DEVICE);
  rt_dptr d = 0;
  ck_assert_int_eq(dv->alloc(16, &d, NULL), KEOPS_ERROR_DEVICE); /* no current device */
  TU_OK(dv->enter(1, &e_));
  TU_OK(dv->alloc(64, &d, &e_));
  int ord;
  TU_OK(dv->pointer_device(d + 10, &ord, &e_));
  ck_assert_int_eq(ord, 1);
  kerr_clear(&e);
  ck_assert_int_eq(dv->pointer_device(d + 64, &ord, &e), KEOPS_ERROR_DEVICE);
  float h[17] = {0}, back[16];
  for (int q = 0; q < 17; q++) h[q] = (float)q;
  kerr_clear(&e); /* 68 bytes into 64 */
  ck_assert_int_eq(dv->htod(d, h, sizeof h, NULL, &e), KEOPS_ERROR_DEVICE);
  ck_assert_msg(strstr(e.msg, "not inside one allocation"), "%s", e.msg);
  rt_stream *s;
  TU_OK(dv->stream_create(&s, &e_));
  TU_OK(dv->htod(d, h, 64, s, &e_));
  h[0] = 100; /* the copy took the source when queued */
  memcpy(back, (void *)(uintptr_t)d, 64);
  ck_assert_msg(isnan(back[0]), "the queued copy ran before any sync: %g", (double)back[0]);
  TU_OK(dv->sync(s, &e_));
  memcpy(back, (void *)(uintptr_t)d, 64);
  ck_assert(back[0] == 0 && back[15] == 15);
  TU_OK(dv->memset0(d, 64, s, &e_));
  TU_OK(dv->dtoh(back, d, 64, s, &e_)); /* pageable: complete on return, after the memset */
  ck_assert(back[0] == 0 && back[15] == 0);
  TU_OK(dv->stream_destroy(s, &e_));
  kerr_clear(&e);
  ck_assert_int_eq(dv->free(d + 4, &e), KEOPS_ERROR_DEVICE);
  TU_OK(dv->free(d, &e_));
  dv->leave();
}
END_TEST

START_TEST(queued_launch_errors_surface_at_sync) {
  rt_emu_function f = fn_of(early_exit, "early_exit", 0, 0);
  TU_OK(dv->enter(0, &e_));
  unsigned grid[3] = {1, 1, 1}, block[3] = {32, 1, 1};
  TU_OK(dv->launch((rt_function *)&f, grid, block, 0, NULL, NULL, &e_));
  kerr e;
  kerr_clear(&e);
  ck_assert_int_eq(dv->sync(NULL, &e), KEOPS_ERROR_DEVICE);
  ck_assert_msg(strstr(e.msg, "returned while 31 threads wait"), "%s", e.msg);
  TU_OK(dv->sync(NULL, &e_)); /* reported once; the device goes on */
  block[0] = 2048;
  kerr_clear(&e);
  ck_assert_int_eq(dv->launch((rt_function *)&f, grid, block, 0, NULL, NULL, &e), KEOPS_ERROR_ARGUMENT);
  dv->leave();
}
END_TEST

int main(void) {
  Suite *s = suite_create("emulator");
  TCase *tc = tcase_create("launcher");
  tcase_add_test(tc, barriers_give_exact_sums);
  tcase_add_test(tc, races_are_faults);
  tcase_add_test(tc, exit_at_barrier_is_a_fault);
  tcase_add_test(tc, shared_bounds);
  tcase_add_test(tc, global_bounds);
  tcase_add_test(tc, launch_limits);
  tcase_add_test(tc, float32_flushes_denormals);
  tcase_add_test(tc, generated_code_is_checked);
  tcase_add_test(tc, combine_adds_in_double);
  tcase_add_test(tc, device_memory_and_streams);
  tcase_add_test(tc, queued_launch_errors_surface_at_sync);
  suite_add_tcase(s, tc);
  return tu_run(s, 0) != 0;
}
