/* Scratch memory and the kernel's code kept between GPU runs (issue 9), on the fake CUDA
 * driver (tests/fakecuda/, found as libcuda.so.1 through LD_LIBRARY_PATH, which ctest sets):
 * a second run allocates nothing and looks nothing up, a larger one grows the buffers, two
 * threads never share them, a failed run leaves them usable; results against the reference
 * interpreter with the tolerances of tests/matrix.h, and no leak at the context's end.
 *
 * Every test runs in a process of its own (check's fork mode), as in test_fakecuda.c. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fc_harness.h"
#include "runtime.h"
#include "testutil.h"

/* Driver calls and cache lookups between two moments. */
typedef struct counts {
  long alloc, free, all, lookups;
} counts;

static counts counts_now(keops_context *c) {
  rt_cache_stats st = rt_cache_get_stats(c->cache);
  return (counts){fake.calls("cuMemAlloc_v2"), fake.calls("cuMemFree_v2"), fake.calls(NULL),
                  st.hits + st.builds + st.waits};
}

static counts counts_since(keops_context *c, counts a) {
  counts b = counts_now(c);
  return (counts){b.alloc - a.alloc, b.free - a.free, b.all - a.all, b.lookups - a.lookups};
}

/* k on the GPU backend with host arrays of M x N, checked against the reference; the status. */
static keops_status checked_run(keops_kernel *k, int64_t M, int64_t N, uint64_t seed, const char *what) {
  prob P;
  mx_prob_init(&P, k, M, N, NULL, 0, NULL, seed);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU};
  keops_status st = keops_kernel_run(k, M, N, (const void *const *)P.arr, P.out[0], &o);
  if (st == KEOPS_OK) {
    snprintf(P.what, sizeof P.what, "%s (M = %lld, N = %lld)", what, (long long)M, (long long)N);
    mx_prob_reference(&P);
    mx_check_outputs(&P);
  }
  mx_prob_free(&P);
  return st;
}

/* A second host-array run of a kernel with the same or smaller sizes allocates and frees no
 * device memory and looks nothing up in the context's cache; a larger one grows the buffers
 * (and the run after it does not); the results are right throughout, and the context's end
 * frees everything. _i: the dtype. */
START_TEST(scratch_reuse) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_kernel *k = split_kernel(c, mx_dtype_of(_i));
  counts a = counts_now(c);
  ck_assert_msg(checked_run(k, 3, 4096, 1, "first run") == KEOPS_OK, "%s", keops_last_error());
  counts first = counts_since(c, a);
  ck_assert_msg(first.alloc == 5, "first run: %ld allocations (3 inputs, the output, the partial states)",
                first.alloc);
  static const int64_t sizes[][2] = {{3, 4096}, {3, 4096}, {2, 1000}, {1, 5}};
  for (int r = 0; r < 4; r++) {
    a = counts_now(c);
    ck_assert_msg(checked_run(k, sizes[r][0], sizes[r][1], 2 + (uint64_t)r, "reusing run") == KEOPS_OK,
                  "%s", keops_last_error());
    counts n = counts_since(c, a);
    ck_assert_msg(n.alloc == 0 && n.free == 0 && n.lookups == 0,
                  "run %d (M = %lld, N = %lld): %ld cuMemAlloc, %ld cuMemFree, %ld cache lookups "
                  "(%ld driver calls; the first run made %ld)",
                  r, (long long)sizes[r][0], (long long)sizes[r][1], n.alloc, n.free, n.lookups,
                  n.all, first.all);
  }
  a = counts_now(c);
  ck_assert_msg(checked_run(k, 300, 5000, 7, "larger run") == KEOPS_OK, "%s", keops_last_error());
  counts g = counts_since(c, a);
  /* x, y, b and the output grow (the partial states too where 300 rows still split j), each
   * freeing its smaller buffer */
  ck_assert_msg(g.alloc >= 4 && g.free == g.alloc, "larger run: %ld cuMemAlloc, %ld cuMemFree", g.alloc,
                g.free);
  a = counts_now(c);
  ck_assert_msg(checked_run(k, 299, 5000, 8, "after growing") == KEOPS_OK, "%s", keops_last_error());
  ck_assert_msg(counts_since(c, a).alloc == 0, "the run after growing allocated");
  fakecuda_live l;
  fake.live(&l);
  ck_assert_int_eq(l.allocations, 5);
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after the context that kept scratch memory");
}
END_TEST

/* An array above the kept bound (64 MiB: x = Vi(1000) of 17000 rows in float32, 68 MB) is
 * freed after its run; the small ones stay. */
START_TEST(scratch_bound) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  const char *const al[] = {"x = Vi(1000)", "b = Vj(1)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "SqNorm2(x)*b", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
  keops_kernel *k = mx_make(c, &d);
  ck_assert_msg(checked_run(k, 17000, 2, 3, "a 68 MB input") == KEOPS_OK, "%s", keops_last_error());
  fakecuda_live l;
  fake.live(&l);
  ck_assert_msg(l.allocations == 2 && l.bytes < 1 << 20, "kept: %d allocations, %zu bytes", l.allocations,
                l.bytes);
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after a large run");
}
END_TEST

/* Two runs in flight at once on one context, deterministically: run A stops at its launch
 * (the fake holds cuLaunchKernel) after its inputs are copied in; run B, same sizes, runs
 * whole meanwhile, its copies executed before A's kernel. Had B taken A's scratch memory, A's
 * kernel would read B's inputs. B allocates a set of its own; both results are right. */
typedef struct held_run {
  keops_kernel *k;
  prob *P;
  keops_status st;
} held_run;

static void *held_thread(void *arg) {
  held_run *h = arg;
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU};
  h->st = keops_kernel_run(h->k, h->P->M, h->P->N, (const void *const *)h->P->arr, h->P->out[0], &o);
  return NULL;
}

START_TEST(scratch_not_shared) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_kernel *k = split_kernel(c, KEOPS_FLOAT32);
  ck_assert_msg(checked_run(k, 3, 4096, 1, "first run") == KEOPS_OK, "%s", keops_last_error());
  prob A, B;
  mx_prob_init(&A, k, 3, 4096, NULL, 0, NULL, 21);
  mx_prob_init(&B, k, 3, 4096, NULL, 0, NULL, 22);
  snprintf(A.what, sizeof A.what, "run A, held at its launch");
  snprintf(B.what, sizeof B.what, "run B, while A is held");
  mx_prob_reference(&A);
  mx_prob_reference(&B);
  fake.hold("cuLaunchKernel", 1);
  held_run h = {k, &A, KEOPS_ERROR_DEVICE};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, held_thread, &h), 0);
  for (int w = 0; w < 20000 && !fake.held(); w++) usleep(1000);
  int held = fake.held();
  counts a = counts_now(c);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU};
  keops_status st = keops_kernel_run(k, B.M, B.N, (const void *const *)B.arr, B.out[0], &o);
  long allocs = counts_since(c, a).alloc;
  fake.release();
  pthread_join(t, NULL);
  ck_assert_msg(held, "run A never reached its launch");
  ck_assert_msg(st == KEOPS_OK && h.st == KEOPS_OK, "B: %s, A: %s: %s", keops_status_string(st),
                keops_status_string(h.st), keops_last_error());
  mx_check_outputs(&B);
  mx_check_outputs(&A);
  ck_assert_msg(allocs == 5, "run B allocated %ld buffers while A held its set", allocs);
  mx_prob_free(&A);
  mx_prob_free(&B);
  fakecuda_live l;
  fake.live(&l);
  ck_assert_int_eq(l.allocations, 10); /* both sets kept */
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after two runs in flight");
}
END_TEST

/* A failure in the middle of a run that reuses scratch memory: _i = 0, the second copy in
 * fails (the run's queued work is waited for, the memory kept); 1, every stream
 * synchronisation fails until cleared (the memory may still be in use: freed, not kept).
 * Later runs are right either way. */
START_TEST(scratch_after_failure) {
  keops_context *c;
  ck_assert_msg(keops_context_create(&c) == KEOPS_OK, "%s", keops_last_error());
  keops_kernel *k = split_kernel(c, KEOPS_FLOAT64);
  ck_assert_msg(checked_run(k, 3, 4096, 1, "before the failure") == KEOPS_OK, "%s", keops_last_error());
  if (_i) /* the default stream's synchronisation is cuCtxSynchronize */
    fake.inject("cuStreamSynchronize", 0, 999, 0), fake.inject("cuCtxSynchronize", 0, 999, 0);
  else
    fake.inject("cuMemcpyHtoDAsync_v2", 2, 999, 0);
  keops_status st = checked_run(k, 3, 4096, 2, "failing");
  ck_assert_msg(st == KEOPS_ERROR_DEVICE && strstr(keops_last_error(), "CUDA_ERROR_UNKNOWN"), "%s: %s",
                keops_status_string(st), keops_last_error());
  fake.clear_failures();
  fakecuda_live l;
  fake.live(&l);
  ck_assert_msg(l.allocations == (_i ? 0 : 5), "after the failure: %d allocations", l.allocations);
  for (int r = 0; r < 2; r++) {
    counts a = counts_now(c);
    ck_assert_msg(checked_run(k, 3, 4096, 3 + (uint64_t)r, "after the failure") == KEOPS_OK, "%s",
                  keops_last_error());
    long allocs = counts_since(c, a).alloc;
    ck_assert_msg(allocs == (_i && !r ? 5 : 0), "run %d after the failure: %ld allocations", r, allocs);
  }
  keops_kernel_destroy(k);
  keops_context_destroy(c);
  assert_no_leak("after a failure with scratch memory");
}
END_TEST

int main(void) {
  load_fake();
  mx_backend = "GPU (fake driver)", mx_ftz_term = 0x1p-100;
  Suite *s = suite_create("fakecuda_scratch");
  TCase *f = tcase_create("scratch");
  tcase_set_timeout(f, 600);
  tcase_add_loop_test(f, scratch_reuse, 0, 2);
  tcase_add_test(f, scratch_bound);
  tcase_add_test(f, scratch_not_shared);
  tcase_add_loop_test(f, scratch_after_failure, 0, 2);
  suite_add_tcase(s, f);
  return tu_run(s, 1) ? 1 : 0;
}
