/* keops-bench: times named reductions on random data against a plain C baseline of the same
 * math (tools/bench_baseline.c, built at -O3 -march=native -ffast-math, multi-threaded), checks
 * that both agree (and agree with the reference interpreter on a few rows), and reports the
 * compile, cache-hit and per-call costs of the CPU JIT.
 *
 * --backend=gpu: the same cases on GPU 0 (host arrays, or with --device-pointers inputs staged
 * once with alloc/htod and only kernel runs timed, each followed by a stream sync); the
 * baseline is the same kernel on the CPU backend (on a prefix of the rows for the largest
 * cases, scaled to all rows), the compile column the PTX generation time (kt_compile), and the
 * header adds the launch overhead of a cached kernel. Without a device the PTX generation times
 * are still printed (for sm_90, +ptx80), then the NO_DEVICE message, and the exit status is 1.
 * Each GPU case also gets its static figure (tools/bench_static.c) when the CUDA toolkit's
 * ptxas is found: registers and spills of keops_kernel, and with nvdisasm the SASS
 * instructions per pair of its j loop and the throughput they project; for device 0's sm, or
 * sm_90 (+ptx80) under the emulator (H100-shaped devices) or without a device.
 *
 * No timing is asserted anywhere: the tool measures and prints. Exit status: 0 when every
 * case ran and its results agree, 1 when a case failed or disagreed (the message on stderr
 * names the formula, sizes and dtype), 2 on a bad command line. */
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <llvm/Config/llvm-config.h>

#include "bench_baseline.h"
#include "bench_cases.h"
#include "bench_sparse.h"
#include "bench_static.h"
#include "gpu.h"
#include "keops.h"
#include "runtime.h"

static const char usage_text[] =
    "usage: keops-bench [options]\n"
    "\n"
    "Runs named reductions on random data (fixed seed) and prints, per case and dtype: the\n"
    "median time of --reps runs after one warm-up, pairs/second, the compile time (IR to\n"
    "callable: rt_kernel_prepare on a fresh context), the same for a plain C loop nest of the\n"
    "same math (-O3 -march=native -ffast-math, same thread count), their ratio\n"
    "baseline/keops, and the largest relative difference to the baseline and to the\n"
    "reference interpreter (on the first 8 output rows).\n"
    "\n"
    "  --case=NAME[,NAME...]|all   gauss3 seed seed-grad lse knn nbody gauss64 tiny\n"
    "                     (default all);\n"
    "                     GPU only: gauss3-1e6 (M=N=10^6), small-m (M=1000, N=10^6)\n"
    "  --dtype=float32|float64|both   (default both)\n"
    "  --backend=cpu|reference|gpu    (default cpu; reference runs at reduced sizes; gpu: the\n"
    "                     baseline is the same kernel on the CPU backend, compile is PTX generation)\n"
    "  --device-pointers  (gpu) inputs staged on the device once, only kernel runs timed\n"
    "  --threads=N        threads of keops and of the baseline (default: all online cores,\n"
    "                     or KEOPS_NUM_THREADS)\n"
    "  -M M, -N N         sizes for every case (default: each case's own)\n"
    "  --reps=R           timed runs per measurement (default 3 to 5; tiny 2000)\n"
    "  --k=K              K of the knn case (default 10; above 16 the kernel keeps heaps)\n"
    "  --fast-math        kernels with fast_math = 1 (GPU float32 Exp as ex2.approx alone)\n"
    "  --density=F        block-sparse instead: each case dense and with ranges keeping a\n"
    "                     random F of its 100 x 100 blocks of pairs, same kernel, same run;\n"
    "                     sparse/dense should be about F\n"
    "  --target=T         CPU target: host (default, or KEOPS_TARGET), avx512, avx2, generic\n"
    "  --csv              machine-readable output (machine info as '#' lines)\n"
    "  --help             this text\n";

/* ---- options ------------------------------------------------------------------------------- */

typedef struct opts {
  int want_case[NCASES];
  int dtypes[2]; /* float32, float64 */
  keops_backend backend;
  int threads;  /* 0: the context's */
  int64_t M, N; /* 0: the case's */
  int reps;     /* 0: the case's */
  const char *target;
  int csv;
  int devp; /* --device-pointers */
  double density; /* --density: > 0 runs the block-sparse comparison instead */
} opts;

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("keops-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n", stderr);
  fputs(usage_text, stderr);
  return 2;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || errno || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_cases(const char *s, opts *o) {
  if (!strcmp(s, "all")) { /* 2: chosen by "all" (GPU-only cases are dropped on the CPU) */
    for (int c = 0; c < NCASES; c++) o->want_case[c] = o->want_case[c] ? o->want_case[c] : 2;
    return 0;
  }
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  char *save = NULL;
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int found = 0;
    for (int c = 0; c < NCASES; c++)
      if (!strcmp(t, bc_cases[c].name)) o->want_case[c] = found = 1;
    if (!found) return -1;
  }
  return 0;
}

/* Fills o from argv. Returns -1 to go on, else the exit status (0 after --help). */
static int parse_args(int argc, char **argv, opts *o) {
  static const struct option long_opts[] = {{"case", required_argument, NULL, 'c'},
                                            {"dtype", required_argument, NULL, 'd'},
                                            {"backend", required_argument, NULL, 'b'},
                                            {"threads", required_argument, NULL, 't'},
                                            {"reps", required_argument, NULL, 'r'},
                                            {"target", required_argument, NULL, 'T'},
                                            {"csv", no_argument, NULL, 'C'},
                                            {"k", required_argument, NULL, 'k'},
                                            {"device-pointers", no_argument, NULL, 'P'},
                                            {"fast-math", no_argument, NULL, 'F'},
                                            {"density", required_argument, NULL, 'D'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
  memset(o, 0, sizeof *o);
  o->dtypes[0] = o->dtypes[1] = 1;
  o->backend = KEOPS_BACKEND_CPU;
  int any_case = 0, c;
  int64_t v;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "hM:N:", long_opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      if (parse_cases(optarg, o)) return bad_usage("unknown --case '%s'", optarg);
      any_case = 1;
      break;
    case 'F': bc_fast_math = 1; break;
    case 'd':
      if (!strcmp(optarg, "float32") || !strcmp(optarg, "float64") || !strcmp(optarg, "both")) {
        o->dtypes[0] = strcmp(optarg, "float64") != 0;
        o->dtypes[1] = strcmp(optarg, "float32") != 0;
      } else {
        return bad_usage("unknown --dtype '%s'", optarg);
      }
      break;
    case 'b':
      if (!strcmp(optarg, "cpu"))
        o->backend = KEOPS_BACKEND_CPU;
      else if (!strcmp(optarg, "reference"))
        o->backend = KEOPS_BACKEND_REFERENCE;
      else if (!strcmp(optarg, "gpu"))
        o->backend = KEOPS_BACKEND_GPU;
      else
        return bad_usage("unknown --backend '%s'", optarg);
      break;
    case 't':
      if (parse_i64(optarg, 1, 1024, &v))
        return bad_usage("--threads '%s' is not in [1, 1024]", optarg);
      o->threads = (int)v;
      break;
    case 'M':
    case 'N':
      if (parse_i64(optarg, 1, (int64_t)1 << 40, &v))
        return bad_usage("-%c '%s' is not a size in [1, 2^40]", c, optarg);
      *(c == 'M' ? &o->M : &o->N) = v;
      break;
    case 'r':
      if (parse_i64(optarg, 1, 100000000, &v))
        return bad_usage("--reps '%s' is not in [1, 1e8]", optarg);
      o->reps = (int)v;
      break;
    case 'k':
      if (parse_i64(optarg, 1, 100000, &v)) return bad_usage("--k '%s' is not in [1, 100000]", optarg);
      bc_knn_k = (int)v;
      break;
    case 'D': {
      char *end;
      o->density = strtod(optarg, &end);
      if (*end || end == optarg || !(o->density > 0 && o->density <= 1))
        return bad_usage("--density '%s' is not in (0, 1]", optarg);
      break;
    }
    case 'T': o->target = optarg; break;
    case 'C': o->csv = 1; break;
    case 'P': o->devp = 1; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: return bad_usage("bad option '%s'", argv[optind - 1 < argc ? optind - 1 : argc - 1]);
    }
  }
  if (optind < argc) return bad_usage("unexpected argument '%s'", argv[optind]);
  if (!any_case) parse_cases("all", o);
  if (o->devp && o->backend != KEOPS_BACKEND_GPU)
    return bad_usage("--device-pointers needs --backend=gpu");
  if (o->density > 0 && (o->devp || o->csv))
    return bad_usage("--density runs host arrays and prints text only");
  for (int q = 0; q < NCASES; q++)
    if (bc_cases[q].gpu_only && o->backend != KEOPS_BACKEND_GPU) {
      if (o->want_case[q] == 1) return bad_usage("case %s runs only with --backend=gpu", bc_cases[q].name);
      o->want_case[q] = 0;
    }
  return -1;
}

/* ---- the baseline --------------------------------------------------------------------------- */

static void run_baseline(const bcase *c, keops_dtype dt, int64_t M, int64_t N, const data *d,
                         void *out, int threads) {
  void *const *a = d->arr;
  int f32 = dt == KEOPS_FLOAT32;
  switch (c->kind) {
  case K_GAUSS:
    if (f32)
      bl_gauss_f32(M, N, c->D, a[0], a[1], a[2], (float)d->val[3][0], out, threads);
    else
      bl_gauss_f64(M, N, c->D, a[0], a[1], a[2], d->val[3][0], out, threads);
    break;
  case K_SEED:
    if (f32)
      bl_seed_f32(M, N, a[0], a[1], a[2], (float)d->val[3][0], out, threads);
    else
      bl_seed_f64(M, N, a[0], a[1], a[2], d->val[3][0], out, threads);
    break;
  case K_SEEDGRAD:
    if (f32)
      bl_seedgrad_f32(M, N, a[0], a[1], a[2], (float)d->val[3][0], a[4], out, threads);
    else
      bl_seedgrad_f64(M, N, a[0], a[1], a[2], d->val[3][0], a[4], out, threads);
    break;
  case K_LSE:
    if (f32)
      bl_lse_f32(M, N, c->D, a[0], a[1], (float)d->val[2][0], out, threads);
    else
      bl_lse_f64(M, N, c->D, a[0], a[1], d->val[2][0], out, threads);
    break;
  case K_KNN:
    if (f32)
      bl_knn_f32(M, N, c->D, a[0], a[1], bc_knn_k, out, threads);
    else
      bl_knn_f64(M, N, c->D, a[0], a[1], bc_knn_k, out, threads);
    break;
  case K_NBODY:
    if (f32)
      bl_nbody_f32(M, N, a[0], a[1], a[2], (float)d->val[3][0], out, threads);
    else
      bl_nbody_f64(M, N, a[0], a[1], a[2], d->val[3][0], out, threads);
    break;
  }
}

/* ---- measurements ------------------------------------------------------------------------------
 */

typedef struct row {
  const char *name;
  int64_t M, N;
  keops_dtype dt;
  int reps;
  double t, t_base, compile; /* seconds; < 0: not measured */
  double err_base, err_ref;  /* < 0: not checked */
  int64_t rows, base_rows;   /* output rows; GPU: the rows the CPU baseline ran (scaled) */
  char static_line[400];     /* GPU: the static figure (bench_static.h); "" if none */
  const char *status;
} row;

static const char *backend_name(keops_backend b) {
  return b == KEOPS_BACKEND_CPU         ? "cpu"
         : b == KEOPS_BACKEND_GPU       ? "gpu"
         : b == KEOPS_BACKEND_REFERENCE ? "reference"
                                        : "auto";
}

static const char *dtype_name(keops_dtype dt) {
  return dt == KEOPS_FLOAT32 ? "float32" : "float64";
}

static void report_failure(const bcase *c, const request *r, keops_dtype dt, int64_t M, int64_t N,
                           const char *what, const char *msg) {
  char desc[512];
  bc_describe(r, desc, sizeof desc);
  size_t n = strlen(what); /* the library's messages mostly name the function already */
  int named = !strncmp(msg, what, n) && msg[n] == ':';
  fprintf(stderr, "keops-bench: case %s, %s, M=%lld N=%lld: %s%s%s\n  formula: %s\n", c->name,
          dtype_name(dt), (long long)M, (long long)N, named ? "" : what, named ? "" : ": ", msg,
          desc);
}

/* Tolerated relative difference to the baseline and to the reference: float32 sums of 20000
 * terms accumulated in float32 by the baseline drift by ~1e-5, exp/log of both sides differ by
 * a few ulp. Not a timing assertion: a case over it is reported as MISMATCH. */

/* ---- GPU ------------------------------------------------------------------------------------ */

/* The PTX target of device 0 (gdev->info + rt_ptx_target), else sm_90 / +ptx80. */
static kt_target bench_target;
/* The devices of the bench's context (set in main): staged buffers live where its runs look. */
static const rt_device *gdev;
static int bench_target_is_device;

static void pick_gpu_target(void) {
  rt_device_info d;
  char sm[16], ptx[16];
  kerr e;
  kerr_clear(&e);
  kt_set(&bench_target, &kt_nvptx, "sm_90", "+ptx80");
  kt_target host;
  if (gdev->image == RT_IMAGE_HOST_OBJECT && !kt_pick(&host, "host", &e)) { /* the emulator's code */
    kt_set(&bench_target, &kt_gpuemu, host.cpu, host.features), bench_target_is_device = 1;
    return;
  }
  if (gdev->info(0, &d, &e) == KEOPS_OK &&
      rt_ptx_target(&d, LLVM_VERSION_MAJOR, sm, sizeof sm, ptx, sizeof ptx, &e) == KEOPS_OK)
    kt_set(&bench_target, &kt_nvptx, sm, ptx), bench_target_is_device = 1;
}

/* PTX generation of k's program (kt_compile: IR, optimization, NVPTX code generation), the
 * median of 3; -1 on failure (reported). */
static double ptx_time(const keops_kernel *k) {
  double v[3];
  for (int r = 0; r < 3; r++) {
    kerr e;
    kerr_clear(&e);
    double s = bc_now();
    size_t len;
    char *ptx = kt_compile(rt_kernel_program(k), &bench_target, "keops_kernel", KC_ASM, &len, &e);
    v[r] = bc_now() - s;
    if (!ptx) {
      fprintf(stderr, "keops-bench: PTX generation (%s, %s): %s\n", bench_target.cpu, bench_target.features,
              e.msg);
      return -1;
    }
    free(ptx);
  }
  return bc_median(v, 3);
}

/* The PTX target of the static figure: device 0's, else sm_90 / +ptx80 (the emulator's
 * devices are H100-shaped). */
static void static_target(kt_target *t) {
  if (bench_target.isa == &kt_nvptx)
    *t = bench_target;
  else
    kt_set(t, &kt_nvptx, "sm_90", "+ptx80");
}

/* The static figure of k's kernel into buf (bench_static.c); never fails. */
static void static_figure(const keops_kernel *k, char *buf, size_t n) {
  kt_target t;
  static_target(&t);
  kerr e;
  kerr_clear(&e);
  size_t len;
  const fe_program *p = rt_kernel_program(k);
  char *ptx = kt_compile(p, &t, "keops_kernel", KC_ASM, &len, &e);
  if (ptx)
    bs_static_line(ptx, len, t.cpu, gpu_pairs_per_iteration(p), buf, n);
  else
    snprintf(buf, n, "static %s: PTX generation failed: %.200s", t.cpu, e.msg);
  free(ptx);
}

/* Inputs of one case copied to device 0 once, and its output buffer. */
typedef struct staged {
  unsigned long long in[MAXARGS], out;
  void *args[MAXARGS], *outs[1]; /* the same, as keops_kernel_run takes them */
} staged;

static keops_status stage(const data *d, keops_dtype dt, size_t out_bytes, staged *s, kerr *e) {
  memset(s, 0, sizeof *s);
  keops_status st = gdev->enter(0, e);
  if (st != KEOPS_OK) return st;
  size_t es = dt == KEOPS_FLOAT32 ? 4 : 8;
  for (int a = 0; a < d->nargs && st == KEOPS_OK; a++) {
    size_t bytes = (size_t)d->rows[a] * (size_t)d->dim[a] * es;
    st = gdev->alloc(bytes, &s->in[a], e);
    if (st == KEOPS_OK) st = gdev->htod(s->in[a], d->arr[a], bytes, NULL, e);
    s->args[a] = (void *)(uintptr_t)s->in[a];
  }
  if (st == KEOPS_OK) st = gdev->alloc(out_bytes, &s->out, e);
  s->outs[0] = (void *)(uintptr_t)s->out;
  if (st == KEOPS_OK) st = gdev->sync(NULL, e);
  gdev->leave();
  return st;
}

static void unstage(staged *s) {
  if (gdev->enter(0, NULL) != KEOPS_OK) return;
  gdev->sync(NULL, NULL);
  for (int a = 0; a < MAXARGS; a++) gdev->free(s->in[a], NULL);
  gdev->free(s->out, NULL);
  gdev->leave();
}

/* One timed GPU run: host arrays (copies in and out included), or device pointers followed
 * by a sync of the default stream (the run itself is asynchronous). */
static keops_status gpu_timed_run(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                                  void *const *outs, const staged *s, const keops_run_options *ro,
                                  kerr *e) {
  if (!s) return keops_kernel_run(k, M, N, args, outs, ro);
  keops_status st = gdev->enter(0, e);
  if (st != KEOPS_OK) return st;
  st = keops_kernel_run(k, M, N, (const void *const *)s->args, s->outs, ro);
  if (st == KEOPS_OK) st = gdev->sync(NULL, e);
  else kerr_set(e, st, "%s", keops_last_error());
  gdev->leave();
  return st;
}

/* The CPU baseline of a GPU case runs at most this many pairs (a prefix of the output rows;
 * its time is scaled to all rows: per-row cost does not depend on the row count). */
#define GPU_BASELINE_PAIRS 4e9

static void run_case(const bcase *c, keops_dtype dt, const opts *o, int threads, row *res) {
  int64_t M = o->M ? o->M : c->M, N = o->N ? o->N : c->N;
  if (o->backend == KEOPS_BACKEND_REFERENCE && !o->M && !o->N && c->M * c->N > 1000000) {
    M = c->M * c->N > 4000000 ? 200 : c->M / 5; /* the interpreter is slow: fewer rows */
    N = c->N / 5;
  }
  int reps = o->reps ? o->reps : c->reps;
  res->name = c->name;
  res->M = M;
  res->N = N;
  res->dt = dt;
  res->reps = reps;
  res->t = res->t_base = res->compile = res->err_base = res->err_ref = -1;
  res->rows = res->base_rows = 0;
  res->static_line[0] = 0;
  res->status = "ERROR";
  int gpu = o->backend == KEOPS_BACKEND_GPU;
  staged st_dev, *sd = NULL;

  request r;
  bc_make_request(c, dt, &r);
  keops_context *ctx = NULL;
  keops_kernel *k = NULL;
  keops_run_options ro = keops_run_options_init();
  ro.backend = o->backend;
  ro.num_threads = threads;
  data d = {0};
  void *out = NULL, *out_base = NULL, *out_ref = NULL;
  double *times = bc_xmalloc(sizeof(double) * (size_t)(reps > 0 ? reps : 1));

  if (keops_context_create(&ctx) != KEOPS_OK) {
    report_failure(c, &r, dt, M, N, "keops_context_create", keops_last_error());
    goto done;
  }
  if (keops_kernel_create(ctx, &r.desc, &k) != KEOPS_OK) {
    report_failure(c, &r, dt, M, N, "keops_kernel_create", keops_last_error());
    goto done;
  }
  int expect_args = c->kind == K_GAUSS      ? 4
                    : c->kind == K_SEED     ? 4
                    : c->kind == K_SEEDGRAD ? 5
                    : c->kind == K_LSE      ? 3
                    : c->kind == K_NBODY    ? 4
                                            : 2;
  if (keops_kernel_arg_count(k) != expect_args || keops_kernel_output_count(k) != 1) {
    report_failure(c, &r, dt, M, N, "kernel shape", "unexpected argument or output count");
    goto done;
  }

  /* compile: IR to callable on this fresh context */
  double t0 = bc_now();
  if (rt_kernel_prepare(k, &ro) != KEOPS_OK) {
    report_failure(c, &r, dt, M, N, "rt_kernel_prepare", keops_last_error());
    goto done;
  }
  if (o->backend == KEOPS_BACKEND_CPU) res->compile = bc_now() - t0;
  if (gpu && (res->compile = ptx_time(k)) < 0) goto done;
  if (gpu) static_figure(k, res->static_line, sizeof res->static_line);

  bc_make_data(c, k, dt, M, N, &d);
  int64_t rows = r.desc.axis == KEOPS_AXIS_J ? M : N;
  int odim = keops_kernel_output_dim(k, 0);
  keops_dtype odt = keops_kernel_output_dtype(k, 0);
  size_t nout = (size_t)rows * (size_t)odim, esz = odt == KEOPS_FLOAT32 ? 4 : 8;
  out = bc_xmalloc(nout * esz);
  out_base = bc_xmalloc(nout * esz);
  const void *const *args = (const void *const *)d.arr;
  void *outs[1] = {out};

  kerr ge;
  kerr_clear(&ge);
  if (gpu && o->devp) {
    ro.device_pointers = 1;
    if (stage(&d, dt, nout * esz, &st_dev, &ge) != KEOPS_OK) {
      sd = &st_dev; /* what was allocated is freed */
      report_failure(c, &r, dt, M, N, "staging the inputs on the device", ge.msg);
      goto done;
    }
    sd = &st_dev;
  }

  /* keops: one warm-up, then reps */
  for (int rep = -1; rep < reps; rep++) {
    double s = bc_now();
    if (gpu_timed_run(k, M, N, args, outs, sd, &ro, &ge) != KEOPS_OK) {
      report_failure(c, &r, dt, M, N, "keops_kernel_run", sd ? ge.msg : keops_last_error());
      goto done;
    }
    if (rep >= 0) times[rep] = bc_now() - s;
  }
  res->t = bc_median(times, reps);
  if (sd) { /* the results, for the checks */
    keops_status cs = gdev->enter(0, &ge);
    if (cs == KEOPS_OK) {
      cs = gdev->dtoh(out, sd->out, nout * esz, NULL, &ge);
      gdev->leave();
    }
    if (cs != KEOPS_OK) {
      report_failure(c, &r, dt, M, N, "copying the output back", ge.msg);
      goto done;
    }
  }

  /* the baseline, the same way: the C loops, or (GPU) the same kernel on the CPU backend */
  int64_t base_rows = rows;
  if (gpu) {
    double nred = (double)(r.desc.axis == KEOPS_AXIS_J ? N : M);
    if ((double)rows * nred > GPU_BASELINE_PAIRS)
      base_rows = (int64_t)fmax(1, floor(GPU_BASELINE_PAIRS / fmax(nred, 1)));
  }
  res->rows = rows, res->base_rows = base_rows;
  keops_run_options cpu = keops_run_options_init();
  cpu.backend = KEOPS_BACKEND_CPU;
  cpu.num_threads = threads;
  void *bouts[1] = {out_base};
  for (int rep = -1; rep < reps; rep++) {
    double s = bc_now();
    if (!gpu) {
      run_baseline(c, dt, M, N, &d, out_base, threads);
    } else if (keops_kernel_run(k, r.desc.axis == KEOPS_AXIS_J ? base_rows : M, r.desc.axis == KEOPS_AXIS_J ? N : base_rows,
                                args, bouts, &cpu) != KEOPS_OK) {
      report_failure(c, &r, dt, M, N, "keops_kernel_run (CPU baseline)", keops_last_error());
      goto done;
    }
    if (rep >= 0) times[rep] = bc_now() - s;
  }
  res->t_base = bc_median(times, reps) * ((double)rows / (double)base_rows);

  /* agreement with the baseline, and with the reference interpreter on the first rows */
  size_t nbase = (size_t)base_rows * (size_t)odim;
  if (c->kind == K_KNN)
    res->err_base = bc_knn_err(out, out_base, base_rows, bc_knn_k, N, &d, c->D);
  else if (c->kind == K_NBODY)
    res->err_base = bc_norm_err(out, out_base, odt, nbase);
  else
    res->err_base = bc_rel_err(out, out_base, odt, nbase);
  if (o->backend != KEOPS_BACKEND_REFERENCE) {
    int64_t rr = rows < REF_ROWS ? rows : REF_ROWS;
    keops_run_options ref = keops_run_options_init();
    ref.backend = KEOPS_BACKEND_REFERENCE;
    out_ref = bc_xmalloc((size_t)rr * (size_t)odim * esz);
    void *routs[1] = {out_ref};
    /* the first rr output rows: their inputs are the first rows of the arrays */
    if (keops_kernel_run(k, r.desc.axis == KEOPS_AXIS_J ? rr : M, r.desc.axis == KEOPS_AXIS_J ? N : rr, args, routs,
                         &ref) != KEOPS_OK) {
      report_failure(c, &r, dt, M, N, "keops_kernel_run (reference)", keops_last_error());
      goto done;
    }
    if (c->kind == K_KNN)
      res->err_ref = bc_knn_err(out, out_ref, rr, bc_knn_k, N, &d, c->D);
    else if (c->kind == K_NBODY)
      res->err_ref = bc_norm_err(out, out_ref, odt, (size_t)rr * (size_t)odim);
    else
      res->err_ref = bc_rel_err(out, out_ref, odt, (size_t)rr * (size_t)odim);
  }
  double tol = bc_tolerance(dt);
  int ok = res->err_base <= tol && (res->err_ref < 0 || res->err_ref <= tol);
  res->status = ok ? "ok" : "MISMATCH";
  if (!ok) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "max relative difference %.3g to the baseline, %.3g to the reference (tolerance %.0e)",
             res->err_base, res->err_ref, tol);
    report_failure(c, &r, dt, M, N, "results disagree", msg);
  }

done:
  if (sd) unstage(sd);
  free(times);
  free(out);
  free(out_base);
  free(out_ref);
  bc_free_data(&d);
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
}

/* ---- compile and cache costs --------------------------------------------------------------------
 */

typedef struct jit_costs {
  double first, next_same, next_fresh;    /* compile: first of the process, another formula in
                                             the same context, the first formula on a new context */
  double create_hit, create_only, lookup; /* per call */
  rt_cache_stats stats;
  int ok;
} jit_costs;

static double prepare_time(keops_context *ctx, const keops_kernel_desc *desc, keops_kernel **keep) {
  keops_kernel *k = NULL;
  if (keops_kernel_create(ctx, desc, &k) != KEOPS_OK) {
    fprintf(stderr, "keops-bench: keops_kernel_create(%s): %s\n", desc->formula,
            keops_last_error());
    return -1;
  }
  keops_run_options ro = keops_run_options_init();
  ro.backend = KEOPS_BACKEND_CPU;
  double t0 = bc_now();
  keops_status st = rt_kernel_prepare(k, &ro);
  double t = bc_now() - t0;
  if (st != KEOPS_OK) {
    fprintf(stderr, "keops-bench: rt_kernel_prepare(%s): %s\n", desc->formula, keops_last_error());
    keops_kernel_destroy(k);
    return -1;
  }
  if (keep)
    *keep = k;
  else
    keops_kernel_destroy(k);
  return t;
}

static void *must_not_build(void *ctx, kerr *e) {
  (void)ctx;
  kerr_set(e, KEOPS_ERROR_COMPILE, "keops-bench: the cache missed a key it holds");
  return NULL;
}

/* Median over 5 batches of the per-call time of `calls` calls of what(). */
#define PER_CALL(result, calls, body)                                                              \
  do {                                                                                             \
    double batch_[5];                                                                              \
    for (int b_ = 0; b_ < 5; b_++) {                                                               \
      double s_ = bc_now();                                                                           \
      for (int c_ = 0; c_ < (calls); c_++) {                                                       \
        body;                                                                                      \
      }                                                                                            \
      batch_[b_] = (bc_now() - s_) / (calls);                                                         \
    }                                                                                              \
    (result) = bc_median(batch_, 5);                                                                  \
  } while (0)

static void measure_jit(keops_context *ctx, jit_costs *j) {
  memset(j, 0, sizeof *j);
  j->first = j->next_same = j->next_fresh = j->create_hit = j->create_only = j->lookup = -1;
  request g, s;
  bc_make_request(&bc_cases[0], KEOPS_FLOAT32, &g); /* gauss3 */
  bc_make_request(&bc_cases[1], KEOPS_FLOAT32, &s); /* seed */
  keops_kernel *kg = NULL;
  if ((j->first = prepare_time(ctx, &g.desc, &kg)) < 0) return;
  j->next_same = prepare_time(ctx, &s.desc, NULL);
  keops_context *fresh = NULL;
  if (keops_context_create(&fresh) == KEOPS_OK) {
    j->next_fresh = prepare_time(fresh, &g.desc, NULL);
    keops_context_destroy(fresh);
  }

  rt_cache_stats before = rt_cache_get_stats(ctx->cache);
  int fail = 0, n_create = 2000, n_lookup = 200000;
  keops_run_options ro = keops_run_options_init();
  ro.backend = KEOPS_BACKEND_CPU;
  /* a kernel for an already-compiled request: parse, check, key, cache hit */
  PER_CALL(j->create_hit, n_create, {
    keops_kernel *k = NULL;
    fail |=
        keops_kernel_create(ctx, &g.desc, &k) != KEOPS_OK || rt_kernel_prepare(k, &ro) != KEOPS_OK;
    keops_kernel_destroy(k);
  });
  PER_CALL(j->create_only, n_create, {
    keops_kernel *k = NULL;
    fail |= keops_kernel_create(ctx, &g.desc, &k) != KEOPS_OK;
    keops_kernel_destroy(k);
  });
  /* the lookup alone: rt_cache_get of a key the cache holds */
  kerr e;
  kerr_clear(&e);
  PER_CALL(j->lookup, n_lookup,
           { fail |= rt_cache_get(ctx->cache, kg->cpu_key, must_not_build, NULL, &e) == NULL; });
  rt_cache_stats after = rt_cache_get_stats(ctx->cache);
  j->stats.hits = after.hits - before.hits;
  j->stats.builds = after.builds - before.builds;
  j->stats.waits = after.waits - before.waits;
  j->ok = !fail && j->stats.builds == 0 && j->stats.hits == 5L * n_create + 5L * n_lookup;
  if (fail)
    fprintf(stderr, "keops-bench: cache-hit measurement failed: %s\n",
            e.status ? e.msg : keops_last_error());
  keops_kernel_destroy(kg);
}

/* ---- output -------------------------------------------------------------------------------------
 */

static void cpu_model(char *buf, size_t n) {
  snprintf(buf, n, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10)) {
      char *v = strchr(line, ':');
      if (v) {
        v += 1 + (v[1] == ' ');
        v[strcspn(v, "\n")] = 0;
        snprintf(buf, n, "%s", v);
      }
      break;
    }
  fclose(f);
}

/* Launch overhead of a cached kernel: the tiny case (gauss3 float32, M = N = 100) on staged
 * device pointers, per keops_kernel_run + sync of the default stream, and per run alone
 * (asynchronous enqueue; one sync after each batch). Seconds; -1 on failure (reported). */
typedef struct launch_costs {
  double with_sync, enqueue;
} launch_costs;

static void measure_launch(keops_context *ctx, launch_costs *lc) {
  lc->with_sync = lc->enqueue = -1;
  const bcase *c = NULL;
  for (int q = 0; q < NCASES; q++)
    if (!strcmp(bc_cases[q].name, "tiny")) c = &bc_cases[q];
  request r;
  bc_make_request(c, KEOPS_FLOAT32, &r);
  keops_kernel *k = NULL;
  data d = {0};
  staged sd;
  kerr e;
  kerr_clear(&e);
  /* the emulator's launches take milliseconds and are no GPU's: a few suffice */
  int fail = 0, calls = gdev->image == RT_IMAGE_HOST_OBJECT ? 20 : 2000, staged_ok = 0;
  keops_run_options ro = keops_run_options_init();
  ro.backend = KEOPS_BACKEND_GPU;
  ro.device_pointers = 1;
  if (keops_kernel_create(ctx, &r.desc, &k) != KEOPS_OK) {
    fprintf(stderr, "keops-bench: launch overhead: %s\n", keops_last_error());
    return;
  }
  bc_make_data(c, k, KEOPS_FLOAT32, c->M, c->N, &d);
  if (stage(&d, KEOPS_FLOAT32, (size_t)c->M * 4, &sd, &e) == KEOPS_OK &&
      gdev->enter(0, &e) == KEOPS_OK) {
    staged_ok = 1;
    const void *const *a = (const void *const *)sd.args;
    fail = keops_kernel_run(k, c->M, c->N, a, sd.outs, &ro) != KEOPS_OK; /* compiles, loads */
    PER_CALL(lc->with_sync, calls, {
      fail |= keops_kernel_run(k, c->M, c->N, a, sd.outs, &ro) != KEOPS_OK;
      fail |= gdev->sync(NULL, &e) != KEOPS_OK;
    });
    PER_CALL(lc->enqueue, calls, { fail |= keops_kernel_run(k, c->M, c->N, a, sd.outs, &ro) != KEOPS_OK; });
    fail |= gdev->sync(NULL, &e) != KEOPS_OK;
    gdev->leave();
  }
  if (!staged_ok || fail) {
    fprintf(stderr, "keops-bench: launch overhead: %s\n", e.status ? e.msg : keops_last_error());
    lc->with_sync = lc->enqueue = -1;
  }
  if (staged_ok) unstage(&sd);
  bc_free_data(&d);
  keops_kernel_destroy(k);
}

/* Without a device: the PTX generation time of every selected case (for sm_90, +ptx80). */
static int ptx_only(const opts *o, keops_context *ctx) {
  int failed = 0;
  printf("%sgpu: none usable; PTX generation for %s %s (kt_compile, median of 3):\n",
         o->csv ? "# " : "", bench_target.cpu, bench_target.features);
  for (int c = 0; c < NCASES; c++)
    for (int dt = 0; dt < 2 && o->want_case[c]; dt++) {
      if (!o->dtypes[dt]) continue;
      request r;
      bc_make_request(&bc_cases[c], dt ? KEOPS_FLOAT64 : KEOPS_FLOAT32, &r);
      keops_kernel *k = NULL;
      double t = keops_kernel_create(ctx, &r.desc, &k) == KEOPS_OK ? ptx_time(k) : -1;
      char ts[32];
      bc_fmt_time(ts, sizeof ts, t);
      printf("%s  %-10s %-7s %s\n", o->csv ? "# " : "", bc_cases[c].name, dt ? "float64" : "float32", ts);
      if (k) {
        char sl[400];
        static_figure(k, sl, sizeof sl);
        printf("%s    %s\n", o->csv ? "# " : "", sl);
      }
      failed |= t < 0;
      keops_kernel_destroy(k);
    }
  return failed;
}

static void print_info(const opts *o, const keops_context *ctx, int threads, const jit_costs *j,
                       const launch_costs *lc) {
  const char *p = o->csv ? "# " : "";
  char model[256];
  cpu_model(model, sizeof model);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const kt_target *t = &ctx->target;
  printf("%scpu: %s, %ld online cores\n", p, model, cores);
  printf("%sthreads: %d (keops pool and baseline)\n", p, threads);
  printf("%starget: %s (LLVM cpu %s, %d float32 / %d float64 lanes, %d row blocks)\n", p, t->isa->name,
         t->cpu, t->isa->w32, t->isa->w64, t->isa->u);
#ifdef KEOPS_LLVM_VERSION
  printf("%sllvm: %s\n", p, KEOPS_LLVM_VERSION);
#endif
  if (o->backend == KEOPS_BACKEND_GPU) {
    printf("%sgpu: %s\n", p, keops_backend_describe(ctx, KEOPS_BACKEND_GPU));
    printf("%s%s target: %s %.40s%s; compile column: %s generation (kt_compile, median of 3)\n", p,
           bench_target.isa->name, bench_target.cpu, bench_target.features,
           bench_target_is_device ? " (device 0)" : "",
           bench_target.isa == &kt_nvptx ? "PTX" : "emulated code");
    kt_target st;
    static_target(&st);
    printf("%sstatic figure: ptxas -v and nvdisasm on keops_kernel's PTX for %s %s%s; SASS "
           "instructions of the j loop (its innermost barrier-free loop) per pair, projected at "
           "%.2g instructions/s\n", p, st.cpu, st.features,
           bench_target.isa == &kt_nvptx ? " (device 0)" : " (the emulator's devices are H100-shaped)",
           BS_ISSUE_RATE);
    printf("%sinputs: %s\n", p,
           o->devp ? "device pointers, staged once (cu_alloc + cu_htod); time = run + stream sync"
                   : "host arrays, copied in and out by every run");
    printf("%sbaseline: the same kernel on the CPU backend (%s), at most %.0e pairs, scaled to "
           "all rows\n", p, keops_backend_describe(ctx, KEOPS_BACKEND_CPU), GPU_BASELINE_PAIRS);
    if (lc) {
      char a[32], b[32];
      bc_fmt_time(a, sizeof a, lc->with_sync);
      bc_fmt_time(b, sizeof b, lc->enqueue);
      printf("%slaunch overhead (cached kernel, tiny M=N=100 float32, device pointers): run + "
             "sync %s, run alone (enqueue) %s\n", p, a, b);
    }
  } else {
    printf("%sbaseline: %s, %s, threads by %s\n", p, bl_compiler(), bl_flags(), bl_threading());
  }
  printf("%sbackend: %s\n", p, backend_name(o->backend));
  if (!j) return;
  char a[32], b[32], c[32];
  bc_fmt_time(a, sizeof a, j->first);
  bc_fmt_time(b, sizeof b, j->next_same);
  bc_fmt_time(c, sizeof c, j->next_fresh);
  printf("%scompile (IR to callable, gauss3 float32): first of process %s; next kernel (seed, same "
         "context) %s; gauss3 again on a fresh context %s\n",
         p, a, b, c);
  printf("%scache hit: keops_kernel_create + lookup %.3f us (create alone %.3f us); rt_cache_get "
         "%.3f us [%ld hits, %ld builds: %s]\n",
         p, j->create_hit * 1e6, j->create_only * 1e6, j->lookup * 1e6, j->stats.hits,
         j->stats.builds, j->ok ? "ok" : "WRONG");
}

static void print_header(const opts *o) {
  if (o->csv) {
    printf("case,M,N,dtype,backend,threads,reps,time_s,pairs_per_s,compile_s,baseline_s,"
           "baseline_pairs_per_s,ratio,err_baseline,err_reference,status\n");
    return;
  }
  printf("\n%-9s %6s %6s %-7s %-4s %10s %9s %9s %10s %9s %6s %8s %8s %s\n", "case", "M", "N",
         "dtype", "be", "time", "pairs/s", "compile", "baseline", "pairs/s", "ratio", "err_base",
         "err_ref", "status");
}

static void print_row(const opts *o, const row *r, int threads) {
  double pairs = (double)r->M * (double)r->N;
  double rate = r->t > 0 ? pairs / r->t : -1, brate = r->t_base > 0 ? pairs / r->t_base : -1;
  double ratio = r->t > 0 && r->t_base > 0 ? r->t_base / r->t : -1;
  if (o->csv) {
    printf("%s,%lld,%lld,%s,%s,%d,%d,%.9g,%.6g,%.6g,%.9g,%.6g,%.4g,%.3g,%.3g,%s\n", r->name,
           (long long)r->M, (long long)r->N, dtype_name(r->dt), backend_name(o->backend), threads,
           r->reps, r->t, rate, r->compile, r->t_base, brate, ratio, r->err_base, r->err_ref,
           r->status);
    if (r->static_line[0]) printf("# %s %s %s\n", r->name, dtype_name(r->dt), r->static_line);
    return;
  }
  char t[32], pr[32], cp[32], bt[32], bpr[32], rt[32], eb[32], er[32];
  bc_fmt_time(t, sizeof t, r->t);
  bc_fmt_rate(pr, sizeof pr, rate);
  bc_fmt_time(cp, sizeof cp, r->compile);
  bc_fmt_time(bt, sizeof bt, r->t_base);
  bc_fmt_rate(bpr, sizeof bpr, brate);
  if (ratio > 0)
    snprintf(rt, sizeof rt, "%.2fx", ratio);
  else
    snprintf(rt, sizeof rt, "-");
  bc_fmt_err(eb, sizeof eb, r->err_base);
  bc_fmt_err(er, sizeof er, r->err_ref);
  printf("%-9s %6lld %6lld %-7s %-4s %10s %9s %9s %10s %9s %6s %8s %8s %s\n", r->name,
         (long long)r->M, (long long)r->N, dtype_name(r->dt),
         o->backend == KEOPS_BACKEND_REFERENCE ? "ref" : backend_name(o->backend), t, pr, cp, bt,
         bpr, rt, eb, er, r->status);
  if (o->backend == KEOPS_BACKEND_GPU && r->base_rows > 0 && r->base_rows < r->rows)
    printf("  (baseline: the CPU backend on the first %lld of %lld rows, time scaled)\n",
           (long long)r->base_rows, (long long)r->rows);
  if (r->static_line[0]) printf("  %s\n", r->static_line);
  fflush(stdout);
}

int main(int argc, char **argv) {
  /* compile times must be compiles, not loads from the disk cache */
  setenv("KEOPS_CACHE_DIR", "off", 1);
  opts o;
  int rc = parse_args(argc, argv, &o);
  if (rc >= 0) return rc;
  /* the context reads its target and thread count from the environment */
  if (o.target && setenv("KEOPS_TARGET", o.target, 1)) return bad_usage("setenv failed");
  if (o.threads) {
    char n[16];
    snprintf(n, sizeof n, "%d", o.threads);
    if (setenv("KEOPS_NUM_THREADS", n, 1)) return bad_usage("setenv failed");
  }
  keops_context *ctx = NULL;
  if (keops_context_create(&ctx) != KEOPS_OK) {
    fprintf(stderr, "keops-bench: %s\n", keops_last_error());
    return 1;
  }
  int threads = o.threads ? o.threads : ctx->nthreads;
  gdev = ctx->dev;

  /* the first compile of the process comes before any case */
  jit_costs j, *jp = NULL;
  if (o.backend == KEOPS_BACKEND_CPU) {
    measure_jit(ctx, &j);
    jp = &j;
  }
  launch_costs lc, *lp = NULL;
  if (o.backend == KEOPS_BACKEND_GPU) {
    pick_gpu_target();
    if (!rt_gpu_usable(gdev)) { /* PTX generation needs no device; the runs do */
      ptx_only(&o, ctx);
      fprintf(stderr, "keops-bench: --backend=gpu: %s: %s\n",
              keops_status_string(KEOPS_ERROR_NO_DEVICE),
              keops_backend_describe(ctx, KEOPS_BACKEND_GPU));
      keops_context_destroy(ctx);
      return 1;
    }
    measure_launch(ctx, &lc);
    lp = &lc;
  }
  print_info(&o, ctx, threads, jp, lp);
  keops_context_destroy(ctx);
  int failed = (jp && !jp->ok) || (lp && lp->with_sync < 0);

  if (o.density > 0) {
    bs_print_header();
    for (int c = 0; c < NCASES; c++)
      for (int dt = 0; dt < 2 && o.want_case[c]; dt++)
        if (o.dtypes[dt])
          failed |= bs_run(&bc_cases[c], dt ? KEOPS_FLOAT64 : KEOPS_FLOAT32, o.M ? o.M : bc_cases[c].M,
                           o.N ? o.N : bc_cases[c].N, o.reps ? o.reps : bc_cases[c].reps, threads,
                           o.backend, o.density);
    return failed ? 1 : 0;
  }
  print_header(&o);
  for (int c = 0; c < NCASES; c++) {
    if (!o.want_case[c]) continue;
    for (int dt = 0; dt < 2; dt++) {
      if (!o.dtypes[dt]) continue;
      row r;
      run_case(&bc_cases[c], dt ? KEOPS_FLOAT64 : KEOPS_FLOAT32, &o, threads, &r);
      print_row(&o, &r, threads);
      failed |= strcmp(r.status, "ok") != 0;
    }
  }
  return failed ? 1 : 0;
}
