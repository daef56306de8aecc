/* Concurrency of the runtime: the kernel cache compiles a key once however many threads ask
 * at the same moment (through the API and on rt_cache directly, failures included), the
 * worker pool runs every task exactly once (nested and concurrent callers, destruction),
 * one kernel runs from many threads at once (row chunks and j-splits), contexts come and go
 * in threads, and keops_last_error() stays per thread. tools/test.sh also runs this suite
 * under ThreadSanitizer (build-tsan/).
 *
 * Assertions are made on the test's own thread only: worker threads record what they saw and
 * the test checks it after joining them (check's ck_assert cannot fail from another thread). */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jit.h"
#include "keops.h"
#include "runtime.h"
#include "testutil.h"

/* Every thread count of this suite is fixed so that it behaves alike on a 2-core builder and
 * a large machine: the contexts' pools have 4 threads (set in main, before any context). */
#define POOL_THREADS 4

static void start_threads(pthread_t *th, int n, void *(*fn)(void *), void *jobs, size_t size) {
  for (int t = 0; t < n; t++)
    ck_assert_int_eq(pthread_create(&th[t], NULL, fn, (char *)jobs + (size_t)t * size), 0);
}

static void join_threads(pthread_t *th, int n) {
  for (int t = 0; t < n; t++) ck_assert_int_eq(pthread_join(th[t], NULL), 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- a test problem: x = Vi(3), y = Vj(3), b = Vj(1), g = Pm(1) ---------------------------- */

static const char *const aliases[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"};

/* Four distinct formulas over the same inputs (output dims 1, 1, 3, 1). */
static const char *const formulas[] = {"Exp(-g*SqDist(x,y))*b", "SqDist(x,y)*b",
                                       "Exp(-g*SqDist(x,y))*b*(x-y)", "Sqrt(SqDist(x,y)+g)*b"};
enum { NFORM = 4, MAXDIM = 3 };

static keops_kernel_desc desc_of(int f, int axis) {
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = formulas[f];
  d.aliases = aliases;
  d.n_aliases = 4;
  d.axis = tu_axis(axis);
  d.dtype = KEOPS_FLOAT32;
  return d;
}

typedef struct problem {
  int64_t M, N;
  float *x, *y, *b, g[1];
  const void *args[4];
} problem;

static void problem_init(problem *p, int64_t M, int64_t N, uint64_t seed) {
  tu_rng r = tu_seed(seed);
  double *x = tu_randn(&r, 3 * M), *y = tu_randn(&r, 3 * N), *b = tu_randn(&r, N);
  p->M = M, p->N = N;
  p->x = tu_to_dtype(x, 3 * M, KEOPS_FLOAT32);
  p->y = tu_to_dtype(y, 3 * N, KEOPS_FLOAT32);
  p->b = tu_to_dtype(b, N, KEOPS_FLOAT32);
  p->g[0] = 0.5f;
  p->args[0] = p->x, p->args[1] = p->y, p->args[2] = p->b, p->args[3] = p->g;
  free(x), free(y), free(b);
}

static void problem_free(problem *p) { free(p->x), free(p->y), free(p->b); }

static int64_t out_len(const problem *p, int axis) { return (axis == 1 ? p->M : p->N) * MAXDIM; }

static const keops_run_options cpu_opts = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
static const keops_run_options ref_opts = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE};

/* The reference backend's result of formula f (out_len floats, caller frees). */
static float *reference(keops_context *ctx, const problem *p, int f, int axis) {
  keops_kernel_desc d = desc_of(f, axis);
  keops_kernel *k = NULL;
  keops_status st = keops_kernel_create(ctx, &d, &k);
  ck_assert_msg(st == KEOPS_OK, "%s: %s", keops_status_string(st), keops_last_error());
  ck_assert_int_eq(keops_kernel_arg_count(k), 4);
  float *out = calloc((size_t)out_len(p, axis), sizeof *out);
  void *outs[1] = {out};
  st = keops_kernel_run(k, p->M, p->N, p->args, outs, &ref_opts);
  ck_assert_msg(st == KEOPS_OK, "%s: %s", keops_status_string(st), keops_last_error());
  keops_kernel_destroy(k);
  return out;
}

/* The compiled float32 result against the reference: the sums here have up to 20000 terms of
 * size O(1) with both signs, so the float32 rounding of a sum is bounded by a few 1e-7 of the
 * sum of magnitudes, not of the (possibly cancelled) result: atol scales with the reduced
 * length. */
static void expect_close(const float *got, const float *want, int64_t n, int64_t nred) {
  double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
  for (int64_t k = 0; k < n; k++) a[k] = got[k], b[k] = want[k];
  double atol = 5e-7 * (double)nred, ex = tu_excess(a, b, n, 1e-5, atol);
  free(a), free(b);
  ck_assert_msg(ex <= 0, "CPU result differs from the reference by %g beyond tolerance", ex);
}

/* ---- single flight through the API ------------------------------------------------------------ */

typedef struct sf_job {
  keops_context *ctx;
  pthread_barrier_t *bar;
  const problem *p;
  int f;
  keops_status st;
  char err[256];
  float *out;
} sf_job;

/* Released with the others: creates its own kernel on the shared context and runs it. */
static void *sf_thread(void *arg) {
  sf_job *j = arg;
  keops_kernel_desc d = desc_of(j->f, 1);
  keops_kernel *k = NULL;
  void *outs[1] = {j->out};
  pthread_barrier_wait(j->bar);
  j->st = keops_kernel_create(j->ctx, &d, &k);
  if (j->st == KEOPS_OK) j->st = keops_kernel_run(k, j->p->M, j->p->N, j->p->args, outs, &cpu_opts);
  if (j->st != KEOPS_OK) snprintf(j->err, sizeof j->err, "%s", keops_last_error());
  keops_kernel_destroy(k);
  return NULL;
}

/* 16 threads asking at the same moment for nf distinct formulas (thread t: formula t % nf):
 * one compile per formula, every other request served by the cache, identical results. */
static void single_flight(int nf) {
  enum { T = 16 };
  keops_context *ctx;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  problem p;
  problem_init(&p, 300, 1000, 1);
  float *want[NFORM] = {0};
  for (int f = 0; f < nf; f++) want[f] = reference(ctx, &p, f, 1);
  rt_cache_stats s0 = rt_cache_get_stats(ctx->cache);
  ck_assert_int_eq(s0.builds + s0.hits + s0.waits, 0); /* the reference backend compiles nothing */

  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, T);
  sf_job jobs[T];
  pthread_t th[T];
  int64_t n = out_len(&p, 1);
  for (int t = 0; t < T; t++)
    jobs[t] = (sf_job){ctx, &bar, &p, t % nf, KEOPS_OK, "", calloc((size_t)n, sizeof(float))};
  start_threads(th, T, sf_thread, jobs, sizeof *jobs);
  join_threads(th, T);
  pthread_barrier_destroy(&bar);

  rt_cache_stats s = rt_cache_get_stats(ctx->cache);
  for (int t = 0; t < T; t++) {
    ck_assert_msg(jobs[t].st == KEOPS_OK, "thread %d: %s: %s", t, keops_status_string(jobs[t].st),
                  jobs[t].err);
    /* the same code on the same data: the same bits, whichever thread compiled it */
    ck_assert_msg(!memcmp(jobs[t].out, jobs[t % nf].out, sizeof(float) * (size_t)n),
                  "thread %d's result differs from thread %d's", t, t % nf);
  }
  for (int f = 0; f < nf; f++) expect_close(jobs[f].out, want[f], n, p.N);
  /* Each thread's kernel asked the cache once: nf compiles, and every other request was
   * answered with the code (after waiting for it, or later). waits counts the waits. */
  ck_assert_msg(s.builds == nf, "%ld compiles for %d formulas", s.builds, nf);
  ck_assert_msg(s.hits == T - nf, "%ld cache hits, expected %d", s.hits, T - nf);
  ck_assert_int_ge(s.waits, 0);

  for (int t = 0; t < T; t++) free(jobs[t].out);
  for (int f = 0; f < nf; f++) free(want[f]);
  problem_free(&p);
  keops_context_destroy(ctx);
}

START_TEST(single_flight_one_formula) { single_flight(1); }
END_TEST

START_TEST(single_flight_four_formulas) { single_flight(NFORM); }
END_TEST

/* ---- rt_cache directly ------------------------------------------------------------------------ */

/* A build that counts its calls, fails while calls <= fail_upto, and returns &code. The first
 * call holds on (up to 10 s) until `hold_for` callers are waiting on it, so that the single
 * flight is proven under real contention rather than by luck of timing. */
typedef struct counted {
  rt_cache *c;
  atomic_int calls;
  atomic_int fail_upto;
  int hold_for;
  int code;
} counted;

static int calls_of(counted *b) { return atomic_load(&b->calls); }

static void *counted_build(void *arg, kerr *e) {
  counted *b = arg;
  int n = atomic_fetch_add(&b->calls, 1) + 1;
  if (n == 1 && b->hold_for > 0) {
    double t0 = now_s();
    while (rt_cache_get_stats(b->c).waits < b->hold_for && now_s() - t0 < 10) sleep_ms(1);
  }
  sleep_ms(2); /* a compile takes a while */
  if (n <= atomic_load(&b->fail_upto)) {
    kerr_set(e, KEOPS_ERROR_COMPILE, "build %d failed", n);
    return NULL;
  }
  return &b->code;
}

typedef struct get_job {
  rt_cache *c;
  pthread_barrier_t *bar;
  const char *key;
  counted *b;
  void *got;
  kerr e;
} get_job;

static void *get_thread(void *arg) {
  get_job *j = arg;
  kerr_clear(&j->e);
  pthread_barrier_wait(j->bar);
  j->got = rt_cache_get(j->c, j->key, counted_build, j->b, &j->e);
  return NULL;
}

enum { GT = 16 };

/* GT threads released together on `key`; results in jobs. */
static void get_all(rt_cache *c, const char *key, counted *b, get_job *jobs) {
  pthread_barrier_t bar;
  pthread_t th[GT];
  pthread_barrier_init(&bar, NULL, GT);
  for (int t = 0; t < GT; t++) jobs[t] = (get_job){c, &bar, key, b, NULL, {0}};
  start_threads(th, GT, get_thread, jobs, sizeof *jobs);
  join_threads(th, GT);
  pthread_barrier_destroy(&bar);
}

START_TEST(cache_single_flight) {
  rt_cache *c = rt_cache_create();
  ck_assert_ptr_nonnull(c);
  counted b = {.c = c, .hold_for = GT - 1};
  get_job jobs[GT];
  get_all(c, "the key", &b, jobs);
  for (int t = 0; t < GT; t++) {
    ck_assert_ptr_eq(jobs[t].got, &b.code);
    ck_assert_int_eq(jobs[t].e.status, KEOPS_OK);
  }
  ck_assert_int_eq(calls_of(&b), 1);
  rt_cache_stats s = rt_cache_get_stats(c);
  ck_assert_int_eq(s.builds, 1);
  ck_assert_int_eq(s.hits, GT - 1);
  ck_assert_int_ge(s.waits, GT - 1); /* all of them waited for the one build */

  kerr e;
  kerr_clear(&e);
  ck_assert_ptr_eq(rt_cache_get(c, "the key", counted_build, &b, &e), &b.code);
  ck_assert_int_eq(calls_of(&b), 1);
  ck_assert_int_eq(rt_cache_get_stats(c).hits, GT);
  rt_cache_destroy(c);
}
END_TEST

/* The first build fails: its caller gets the error, the waiters retry, one of them builds. */
START_TEST(cache_failure_retried) {
  rt_cache *c = rt_cache_create();
  counted b = {.c = c, .hold_for = GT - 1};
  atomic_store(&b.fail_upto, 1);
  get_job jobs[GT];
  get_all(c, "k", &b, jobs);
  int failed = 0;
  for (int t = 0; t < GT; t++) {
    if (jobs[t].got) {
      ck_assert_ptr_eq(jobs[t].got, &b.code);
      ck_assert_int_eq(jobs[t].e.status, KEOPS_OK);
      continue;
    }
    failed++;
    ck_assert_int_eq(jobs[t].e.status, KEOPS_ERROR_COMPILE);
    ck_assert_str_eq(jobs[t].e.msg, "build 1 failed");
  }
  ck_assert_int_eq(failed, 1);
  ck_assert_int_eq(calls_of(&b), 2); /* the failure was not cached */
  kerr e;
  kerr_clear(&e);
  ck_assert_ptr_eq(rt_cache_get(c, "k", counted_build, &b, &e), &b.code);
  ck_assert_int_eq(calls_of(&b), 2);
  rt_cache_stats s = rt_cache_get_stats(c);
  ck_assert_int_eq(s.builds, 2);
  ck_assert_int_eq(s.hits, GT - 1);
  rt_cache_destroy(c);
}
END_TEST

/* A build that always fails: every caller builds for itself and gets its own error; a later
 * call tries again, and once the build succeeds the result is cached. */
START_TEST(cache_failure_not_cached) {
  rt_cache *c = rt_cache_create();
  counted b = {.c = c, .hold_for = GT - 1};
  atomic_store(&b.fail_upto, 1 << 30);
  get_job jobs[GT];
  get_all(c, "k", &b, jobs);
  int seen[GT + 1] = {0};
  for (int t = 0; t < GT; t++) {
    ck_assert_ptr_null(jobs[t].got);
    ck_assert_int_eq(jobs[t].e.status, KEOPS_ERROR_COMPILE);
    int n = 0;
    ck_assert_int_eq(sscanf(jobs[t].e.msg, "build %d failed", &n), 1);
    ck_assert(n >= 1 && n <= GT && !seen[n]); /* each caller got the error of its own build */
    seen[n] = 1;
  }
  ck_assert_int_eq(calls_of(&b), GT);
  rt_cache_stats s = rt_cache_get_stats(c);
  ck_assert_int_eq(s.builds, GT);
  ck_assert_int_eq(s.hits, 0);

  kerr e;
  kerr_clear(&e);
  ck_assert_ptr_null(rt_cache_get(c, "k", counted_build, &b, &e));
  ck_assert_str_eq(e.msg, "build 17 failed");
  atomic_store(&b.fail_upto, 0);
  kerr_clear(&e);
  ck_assert_ptr_eq(rt_cache_get(c, "k", counted_build, &b, &e), &b.code);
  ck_assert_ptr_eq(rt_cache_get(c, "k", counted_build, &b, &e), &b.code);
  ck_assert_int_eq(e.status, KEOPS_OK);
  ck_assert_int_eq(calls_of(&b), GT + 2);
  rt_cache_destroy(c);
}
END_TEST

/* Many keys from many threads in different orders, so that the table grows while others look
 * up and build: every key built once, every caller gets its own key's code. */
enum { NKEY = 600, KT = 8 };

typedef struct keys_job {
  rt_cache *c;
  counted *b; /* NKEY of them */
  pthread_barrier_t *bar;
  int t, wrong;
} keys_job;

static void *keys_thread(void *arg) {
  keys_job *j = arg;
  pthread_barrier_wait(j->bar);
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < NKEY; i++) {
      int k = (i * 7 + j->t * 131) % NKEY; /* 7 is prime to NKEY: a permutation */
      char key[32];
      snprintf(key, sizeof key, "key-%d", k);
      kerr e;
      kerr_clear(&e);
      if (rt_cache_get(j->c, key, counted_build, &j->b[k], &e) != &j->b[k].code) j->wrong++;
    }
  return NULL;
}

START_TEST(cache_many_keys) {
  rt_cache *c = rt_cache_create();
  counted *b = calloc(NKEY, sizeof *b);
  for (int k = 0; k < NKEY; k++) b[k].c = c;
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, KT);
  keys_job jobs[KT];
  pthread_t th[KT];
  for (int t = 0; t < KT; t++) jobs[t] = (keys_job){c, b, &bar, t, 0};
  start_threads(th, KT, keys_thread, jobs, sizeof *jobs);
  join_threads(th, KT);
  pthread_barrier_destroy(&bar);
  for (int t = 0; t < KT; t++) ck_assert_int_eq(jobs[t].wrong, 0);
  for (int k = 0; k < NKEY; k++) ck_assert_int_eq(calls_of(&b[k]), 1);
  rt_cache_stats s = rt_cache_get_stats(c);
  ck_assert_int_eq(s.builds, NKEY);
  ck_assert_int_eq(s.hits, 2L * KT * NKEY - NKEY);
  rt_cache_destroy(c);
  free(b);
}
END_TEST

/* ---- rt_pool ------------------------------------------------------------------------------------ */

enum { MAXTASK = 5000, MAXTID = 64 };

typedef struct tally {
  atomic_int count[MAXTASK];
  pthread_mutex_t lock; /* guards tid */
  pthread_t tid[MAXTID];
  int ntid;
  rt_pool *nested; /* when set, each task runs a nested job of `inner` tasks on this pool */
  int inner;
  atomic_int inner_done;
} tally;

static void tally_init(tally *y) {
  memset(y, 0, sizeof *y);
  pthread_mutex_init(&y->lock, NULL);
}

static void tally_reset(tally *y) {
  for (int t = 0; t < MAXTASK; t++) atomic_store(&y->count[t], 0);
  y->ntid = 0;
}

static void inner_task(void *ctx, int t) {
  (void)t;
  atomic_fetch_add(&((tally *)ctx)->inner_done, 1);
}

static void tally_task(void *ctx, int t) {
  tally *y = ctx;
  atomic_fetch_add(&y->count[t], 1);
  pthread_t me = pthread_self();
  pthread_mutex_lock(&y->lock);
  int known = 0;
  for (int k = 0; k < y->ntid; k++) known |= pthread_equal(y->tid[k], me);
  if (!known && y->ntid < MAXTID) y->tid[y->ntid++] = me;
  pthread_mutex_unlock(&y->lock);
  if (y->nested) rt_pool_run(y->nested, POOL_THREADS, y->inner, inner_task, y);
}

/* Whether every task of [0, n) ran exactly once and none beyond. */
static int exactly_once(tally *y, int n) {
  for (int t = 0; t < MAXTASK; t++)
    if (atomic_load(&y->count[t]) != (t < n)) return 0;
  return 1;
}

START_TEST(pool_tasks_once) {
  rt_pool *p = rt_pool_create(POOL_THREADS);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(rt_pool_threads(p), POOL_THREADS);
  tally *y = malloc(sizeof *y);
  tally_init(y);
  static const int threads[] = {1, 2, 3, 4, 8};
  for (int rep = 0; rep < 200; rep++) {
    int n = rep < 10 ? rep : 1 + (rep * 997) % MAXTASK, th = threads[rep % 5];
    tally_reset(y);
    rt_pool_run(p, th, n, tally_task, y);
    ck_assert_msg(exactly_once(y, n), "rep %d: %d tasks on %d threads not run exactly once", rep,
                  n, th);
    /* the caller and at most threads - 1 workers */
    ck_assert_int_le(y->ntid, th < POOL_THREADS ? th : POOL_THREADS);
  }
  rt_pool_destroy(p);
  free(y);
}
END_TEST

/* A task that runs a job on the same pool: the pool is busy, so the nested job runs on the
 * task's own thread, and everything completes. */
START_TEST(pool_nested) {
  rt_pool *p = rt_pool_create(POOL_THREADS);
  tally *y = malloc(sizeof *y);
  tally_init(y);
  y->nested = p;
  y->inner = 100;
  for (int rep = 0; rep < 20; rep++) {
    tally_reset(y);
    atomic_store(&y->inner_done, 0);
    rt_pool_run(p, POOL_THREADS, 64, tally_task, y);
    ck_assert(exactly_once(y, 64));
    ck_assert_int_eq(atomic_load(&y->inner_done), 64 * 100);
  }
  rt_pool_destroy(p);
  free(y);
}
END_TEST

typedef struct pool_job {
  rt_pool *p;
  pthread_barrier_t *bar;
  tally *y;
  int bad;
} pool_job;

static void *pool_thread(void *arg) {
  pool_job *j = arg;
  pthread_barrier_wait(j->bar);
  for (int rep = 0; rep < 30; rep++) {
    int n = 1 + (rep * 331) % 2000;
    tally_reset(j->y);
    atomic_store(&j->y->inner_done, 0);
    rt_pool_run(j->p, POOL_THREADS, n, tally_task, j->y);
    if (!exactly_once(j->y, n) || atomic_load(&j->y->inner_done) != n * j->y->inner) j->bad++;
  }
  return NULL;
}

/* Several threads run jobs on one pool at once (some with nested jobs): one of them has the
 * pool, the others run their tasks themselves; all complete, each task once. */
START_TEST(pool_concurrent_callers) {
  enum { T = 8 };
  rt_pool *p = rt_pool_create(POOL_THREADS);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, T);
  pool_job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    jobs[t] = (pool_job){p, &bar, malloc(sizeof(tally)), 0};
    tally_init(jobs[t].y);
    if (t % 2) jobs[t].y->nested = p, jobs[t].y->inner = 3;
  }
  start_threads(th, T, pool_thread, jobs, sizeof *jobs);
  join_threads(th, T);
  pthread_barrier_destroy(&bar);
  for (int t = 0; t < T; t++) {
    ck_assert_msg(jobs[t].bad == 0, "thread %d: %d jobs went wrong", t, jobs[t].bad);
    free(jobs[t].y);
  }
  rt_pool_destroy(p);
}
END_TEST

/* Destruction: never started, started and idle, started and just finished (workers may not
 * even have woken up yet), single-threaded pools. */
START_TEST(pool_destroy) {
  tally *y = malloc(sizeof *y);
  tally_init(y);
  for (int rep = 0; rep < 50; rep++) {
    rt_pool_destroy(rt_pool_create(POOL_THREADS));
    rt_pool *p = rt_pool_create(rep % 2 ? POOL_THREADS : 16);
    tally_reset(y);
    rt_pool_run(p, 16, 2 + rep % 7, tally_task, y);
    ck_assert(exactly_once(y, 2 + rep % 7));
    if (rep % 3 == 0) sleep_ms(1); /* idle workers */
    rt_pool_destroy(p);
  }
  for (int n = 0; n <= 1; n++) {
    rt_pool *p = rt_pool_create(n);
    ck_assert_int_eq(rt_pool_threads(p), 1);
    tally_reset(y);
    rt_pool_run(p, 8, 100, tally_task, y);
    ck_assert(exactly_once(y, 100));
    ck_assert_int_eq(y->ntid, 1);
    ck_assert(pthread_equal(y->tid[0], pthread_self()));
    rt_pool_destroy(p);
  }
  rt_pool_destroy(NULL);
  free(y);
}
END_TEST

/* ---- one kernel, many threads --------------------------------------------------------------------- */

typedef struct run_job {
  keops_kernel *k;
  pthread_barrier_t *bar;
  const problem *p;
  int reps;
  keops_status st;
  char err[256];
  float *out, *again;
} run_job;

static void *run_thread(void *arg) {
  run_job *j = arg;
  void *outs[1] = {j->out}, *outs2[1] = {j->again};
  pthread_barrier_wait(j->bar);
  for (int r = 0; r < j->reps && j->st == KEOPS_OK; r++)
    j->st = keops_kernel_run(j->k, j->p->M, j->p->N, j->p->args, r % 2 ? outs2 : outs, &cpu_opts);
  if (j->st != KEOPS_OK) snprintf(j->err, sizeof j->err, "%s", keops_last_error());
  return NULL;
}

/* One kernel, not yet compiled, run by 8 threads at once: the first runs compile it once, and
 * every run gives the same bits. Cases: row chunks (M large), j-splits (M small, N large:
 * partial states combined), and the j-split of axis 0 (N small, M large). */
static const struct {
  int64_t M, N;
  int axis;
} run_cases[] = {{3000, 700, 1}, {5, 20000, 1}, {20000, 6, 0}};

START_TEST(kernel_concurrent_runs) {
  enum { T = 8 };
  int64_t M = run_cases[_i].M, N = run_cases[_i].N;
  int axis = run_cases[_i].axis;
  keops_context *ctx;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  problem p;
  problem_init(&p, M, N, 2);
  int64_t n = out_len(&p, axis);
  keops_kernel_desc d = desc_of(2, axis); /* output dim 3 */
  keops_kernel *k = NULL;
  ck_assert_int_eq(keops_kernel_create(ctx, &d, &k), KEOPS_OK);

  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, T);
  run_job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++)
    jobs[t] = (run_job){k,  &bar, &p, 4, KEOPS_OK, "", calloc((size_t)n, sizeof(float)),
                        calloc((size_t)n, sizeof(float))};
  start_threads(th, T, run_thread, jobs, sizeof *jobs);
  join_threads(th, T);
  pthread_barrier_destroy(&bar);

  /* once more alone, on the pool with nobody else */
  float *alone = calloc((size_t)n, sizeof(float));
  void *outs[1] = {alone};
  ck_assert_int_eq(keops_kernel_run(k, M, N, p.args, outs, &cpu_opts), KEOPS_OK);
  size_t bytes = sizeof(float) * (size_t)n;
  for (int t = 0; t < T; t++) {
    ck_assert_msg(jobs[t].st == KEOPS_OK, "thread %d: %s", t, jobs[t].err);
    ck_assert_msg(!memcmp(jobs[t].out, alone, bytes), "thread %d's result differs", t);
    ck_assert_msg(!memcmp(jobs[t].again, alone, bytes), "thread %d's later result differs", t);
  }
  float *want = reference(ctx, &p, 2, axis);
  expect_close(alone, want, n, axis == 1 ? N : M);
  rt_cache_stats s = rt_cache_get_stats(ctx->cache);
  ck_assert_int_eq(s.builds, 1);

  for (int t = 0; t < T; t++) free(jobs[t].out), free(jobs[t].again);
  free(alone), free(want);
  keops_kernel_destroy(k);
  problem_free(&p);
  keops_context_destroy(ctx);
}
END_TEST

/* ---- contexts coming and going in threads ------------------------------------------------------- */

typedef struct churn_job {
  const problem *p;
  const float *want;
  int t, bad;
  char err[256];
} churn_job;

static void *churn_thread(void *arg) {
  churn_job *j = arg;
  int64_t n = out_len(j->p, 1);
  float *out = calloc((size_t)n, sizeof *out);
  void *outs[1] = {out};
  for (int r = 0; r < 4 && !j->bad; r++) {
    keops_context *ctx = NULL;
    keops_kernel *k = NULL;
    keops_status st = keops_context_create(&ctx);
    int what = (j->t + r) % 4; /* 0: context only; 1: a kernel, no run; 2: reference; 3: CPU */
    if (st == KEOPS_OK && what > 0) {
      keops_kernel_desc d = desc_of(0, 1);
      st = keops_kernel_create(ctx, &d, &k);
    }
    if (st == KEOPS_OK && what >= 2) {
      memset(out, 0, sizeof(float) * (size_t)n);
      keops_run_options o = what == 2 ? ref_opts : cpu_opts;
      o.num_threads = 1 + r % 3;
      st = keops_kernel_run(k, j->p->M, j->p->N, j->p->args, outs, &o);
      /* the CPU and reference results were checked against each other elsewhere: here a
       * run only has to give what the same backend gave before */
      if (st == KEOPS_OK && what == 3 && memcmp(out, j->want, sizeof(float) * (size_t)n)) j->bad = 1;
    }
    if (st != KEOPS_OK) {
      j->bad = 1;
      snprintf(j->err, sizeof j->err, "%s: %s", keops_status_string(st), keops_last_error());
    }
    keops_kernel_destroy(k);
    keops_context_destroy(ctx);
  }
  free(out);
  return NULL;
}

START_TEST(context_churn) {
  enum { T = 4 };
  problem p;
  problem_init(&p, 200, 300, 3);
  int64_t n = out_len(&p, 1);
  /* the expected CPU bits (row chunks only at this size, so any thread count agrees) */
  keops_context *ctx;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  keops_kernel_desc d = desc_of(0, 1);
  keops_kernel *k = NULL;
  ck_assert_int_eq(keops_kernel_create(ctx, &d, &k), KEOPS_OK);
  float *want = calloc((size_t)n, sizeof *want);
  void *outs[1] = {want};
  ck_assert_int_eq(keops_kernel_run(k, p.M, p.N, p.args, outs, &cpu_opts), KEOPS_OK);
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);

  churn_job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) jobs[t] = (churn_job){&p, want, t, 0, ""};
  start_threads(th, T, churn_thread, jobs, sizeof *jobs);
  join_threads(th, T);
  for (int t = 0; t < T; t++) ck_assert_msg(!jobs[t].bad, "thread %d: %s", t, jobs[t].err);
  free(want);
  problem_free(&p);
}
END_TEST

/* ---- keops_last_error per thread ---------------------------------------------------------------- */

typedef struct err_job {
  keops_context *ctx;
  keops_kernel *k; /* shared, valid */
  pthread_barrier_t *bar;
  int t, bad;
  char what[512];
} err_job;

static void mismatch(err_job *j, const char *want) {
  if (!j->bad++)
    snprintf(j->what, sizeof j->what, "thread %d: '%s', expected '%s'", j->t, keops_last_error(), want);
}

static void *err_thread(void *arg) {
  err_job *j = arg;
  char want[256], formula[64];
  pthread_barrier_wait(j->bar);
  for (int r = 0; r < 200; r++) {
    keops_kernel *k = NULL;
    keops_kernel_desc d = desc_of(0, 100 + j->t); /* a bad axis naming this thread */
    switch (r % 4) {
    case 0:
      if (keops_kernel_create(j->ctx, &d, &k) != KEOPS_ERROR_ARGUMENT) j->bad++;
      snprintf(want, sizeof want, "keops_kernel_create: axis = %d is not a keops_axis (KEOPS_AXIS_J = 1, "
               "KEOPS_AXIS_I = 2)", 100 + j->t);
      break;
    case 1: /* a success leaves the message alone */
      d.axis = KEOPS_AXIS_J;
      if (keops_kernel_create(j->ctx, &d, &k) != KEOPS_OK) j->bad++;
      keops_kernel_destroy(k);
      break;
    case 2: {
      float out[1];
      void *outs[1] = {out};
      if (keops_kernel_run(j->k, -1 - j->t, 1, NULL, outs, NULL) != KEOPS_ERROR_ARGUMENT) j->bad++;
      snprintf(want, sizeof want, "keops_kernel_run: M = %d is negative", -1 - j->t);
      break;
    }
    case 3: /* a parse error naming this thread's variable */
      snprintf(formula, sizeof formula, "x + nothing_%d_%d", j->t, r);
      d.axis = KEOPS_AXIS_J;
      d.formula = formula;
      if (keops_kernel_create(j->ctx, &d, &k) == KEOPS_OK) j->bad++;
      snprintf(want, sizeof want, "nothing_%d_%d", j->t, r);
      if (!strstr(keops_last_error(), want)) mismatch(j, want);
      continue;
    }
    if (strcmp(keops_last_error(), want)) mismatch(j, want);
  }
  return NULL;
}

START_TEST(last_error_per_thread) {
  enum { T = 16 };
  keops_context *ctx;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  keops_kernel_desc d = desc_of(0, 1);
  keops_kernel *k = NULL;
  ck_assert_int_eq(keops_kernel_create(ctx, &d, &k), KEOPS_OK);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, T);
  err_job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) jobs[t] = (err_job){ctx, k, &bar, t, 0, ""};
  start_threads(th, T, err_thread, jobs, sizeof *jobs);
  join_threads(th, T);
  pthread_barrier_destroy(&bar);
  for (int t = 0; t < T; t++) ck_assert_msg(!jobs[t].bad, "%d wrong: %s", jobs[t].bad, jobs[t].what);
  ck_assert_str_eq(keops_last_error(), ""); /* the test's own thread failed nothing */
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------------------ */

static Suite *concurrency_suite(void) {
  Suite *s = suite_create("concurrency");
  TCase *tc = tcase_create("concurrency");
  /* a deadlock fails the test instead of hanging CI (scaled by CK_TIMEOUT_MULTIPLIER) */
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, single_flight_one_formula);
  tcase_add_test(tc, single_flight_four_formulas);
  tcase_add_test(tc, cache_single_flight);
  tcase_add_test(tc, cache_failure_retried);
  tcase_add_test(tc, cache_failure_not_cached);
  tcase_add_test(tc, cache_many_keys);
  tcase_add_test(tc, pool_tasks_once);
  tcase_add_test(tc, pool_nested);
  tcase_add_test(tc, pool_concurrent_callers);
  tcase_add_test(tc, pool_destroy);
  tcase_add_loop_test(tc, kernel_concurrent_runs, 0, (int)(sizeof run_cases / sizeof *run_cases));
  tcase_add_test(tc, context_churn);
  tcase_add_test(tc, last_error_per_thread);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* pools of POOL_THREADS threads on any machine, so that j-splits happen on 2 cores too;
   * set before any context (and any thread) exists */
  char n[8];
  snprintf(n, sizeof n, "%d", POOL_THREADS);
  setenv("KEOPS_NUM_THREADS", n, 1);
  int failed = tu_run(concurrency_suite(), 1);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
