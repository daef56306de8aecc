/* libFuzzer harness: valid formulas must never kill the process, and what compiles must agree
 * with the reference interpreter.
 *
 * An input is text, one field per line (missing lines take defaults):
 *     formula
 *     aliases, separated by ';'                  x = Vi(3); y = Vj(3)
 *     reduction and K                            KMin 3      (empty: Sum)
 *     formula2                                   (empty: none)
 *     options, key=value separated by spaces     a=0 d=64 s=3 acc=1 t=avx2 M=5 N=7 th=2
 *                                                dom=grid seed=42
 * (a axis, d 32/64 dtype, s sum scheme 0-3, acc double accumulator, t target host / avx512 /
 * avx2 / generic, M and N sizes (at most MAX_SIZE), th threads, dom input domain unit / pos /
 * wide / grid, seed of the input values: by default a hash of the input).
 *
 * Per input: keops_kernel_create; a failure must come with a status other than
 * KEOPS_ERROR_COMPILE and a message. What is created runs on the CPU backend and on the
 * reference on small arrays, compared under tests/fuzz/diffcore.h's model; a CPU failure must
 * not be KEOPS_ERROR_COMPILE (always a library bug). Any violation prints a reproducer and
 * traps.
 *
 * Compile time: keops_kernel_create plus the first run (the JIT compile) must stay under
 * KEOPS_FUZZ_COMPILE_BOUND seconds (default 1) of an uninstrumented build. This build is
 * slower - ASan intercepts every allocation of LLVM too, and our code carries coverage and
 * sanitizer checks: 6-9 times on the seed corpus (0.10-0.15 s in Release, 0.6-1.3 s here) -
 * so the wall-clock limit is the bound times KEOPS_FUZZ_SLOWDOWN (default 10).
 * KEOPS_FUZZ_COMPILE_REPORT=1 reports slow compiles on stderr instead of trapping (what
 * tools/test.sh does, so that a slow or loaded machine cannot fail CI for time alone), and the
 * slowest one at exit.
 *
 * Memory stays flat: kernels are destroyed after each input, the disk cache is off, and each
 * context (which keeps every compiled kernel) is recreated every CONTEXT_INPUTS kernels. K is
 * capped at KD_MAX_K (the reference is O(K) a pair), numeric literals at LIT_MAX in magnitude
 * (inside float32's range, so a literal means the same in both dtypes), and the oracle does
 * not judge terms with trig arguments past KD_TRIG_MAX_*. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffcore.h"
#include "fnv.h"

#define MAX_SIZE 8
#define MAX_ALIASES 16
#define CONTEXT_INPUTS 256
#define LIT_MAX 1e30

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static double bound = 1.0, slowdown = 10.0;
static int report_only;
static struct {
  long inputs, created, ran, judged, slow;
  double slowest;
  uint8_t slowest_input[512];
  size_t slowest_len;
  long cpu_failed[16];   /* CPU runs of created kernels that failed, by status */
  char cpu_failure[16][200];
} st_;

/* The input as a C string literal (what to save as a corpus file to rerun it). */
static void print_raw(const uint8_t *raw, size_t n) {
  fputc('"', stderr);
  for (size_t q = 0; q < n; q++) {
    unsigned char c = raw[q];
    if (c == '\n') fprintf(stderr, "\\n");
    else if (c == '"' || c == '\\') fprintf(stderr, "\\%c", c);
    else if (c >= 32 && c < 127) fputc(c, stderr);
    else fprintf(stderr, "\\x%02x", c);
  }
  fputc('"', stderr);
}
static const char *const targets[] = {"host", "avx512", "avx2", "generic"};
enum { NT = 4 };
static keops_context *ctxs[NT];
static int ctx_kernels[NT], ctx_failed[NT];

static void report(void);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  setenv("KEOPS_CACHE_DIR", "off", 1);
  const char *b = getenv("KEOPS_FUZZ_COMPILE_BOUND"), *f = getenv("KEOPS_FUZZ_SLOWDOWN"),
             *r = getenv("KEOPS_FUZZ_COMPILE_REPORT");
  if (b && *b) bound = atof(b);
  if (f && *f) slowdown = atof(f);
  report_only = r && *r && strcmp(r, "0");
  atexit(report);
  return 0;
}

static void report(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  fprintf(stderr, "keops_fuzz: %ld inputs, %ld kernels created, %ld run on both backends, %ld "
                  "with outputs compared; %ld compiles over the bound of %.2f s x %.0f; rss %ld "
                  "MB; slowest create + first run %.2f s (/ %.0f = %.2f s uninstrumented): ",
          st_.inputs, st_.created, st_.ran, st_.judged, st_.slow, bound, slowdown, rss * 4096 >> 20,
          st_.slowest, slowdown, st_.slowest / slowdown);
  print_raw(st_.slowest_input, st_.slowest_len);
  fputc('\n', stderr);
  for (int q = 0; q < 16; q++)
    if (st_.cpu_failed[q])
      fprintf(stderr, "keops_fuzz: %ld CPU runs failed with %s, e.g. %s\n", st_.cpu_failed[q],
              keops_status_string((keops_status)q), st_.cpu_failure[q]);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static keops_context *context(int t) {
  if (ctxs[t] && ctx_kernels[t] >= CONTEXT_INPUTS) {
    keops_context_destroy(ctxs[t]);
    ctxs[t] = NULL;
  }
  if (!ctxs[t] && !ctx_failed[t]) {
    const char *old = getenv("KEOPS_TARGET");
    char *saved = old ? strdup(old) : NULL;
    if (t) setenv("KEOPS_TARGET", targets[t], 1);
    else unsetenv("KEOPS_TARGET");
    if (keops_context_create(&ctxs[t]) != KEOPS_OK) ctx_failed[t] = 1; /* the host lacks it */
    if (saved) setenv("KEOPS_TARGET", saved, 1);
    else unsetenv("KEOPS_TARGET");
    free(saved);
    ctx_kernels[t] = 0;
  }
  return ctxs[t] ? ctxs[t] : ctxs[0];
}

/* ---- the input ------------------------------------------------------------------------------- */

typedef struct input {
  char *text; /* owned copy, cut into the fields below */
  const char *formula, *formula2, *aliases[MAX_ALIASES];
  keops_kernel_desc desc;
  int target, threads, domain;
  int64_t M, N;
  uint64_t seed;
  const uint8_t *raw;
  size_t rawn;
} input;

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t' || *s == '\r') s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
  return s;
}

static void parse_options(input *in, char *s) {
  for (char *tok = strtok(s, " \t"); tok; tok = strtok(NULL, " \t")) {
    char *eq = strchr(tok, '=');
    if (!eq) continue;
    *eq = 0;
    const char *k = tok, *v = eq + 1;
    long n = strtol(v, NULL, 10);
    if (!strcmp(k, "a")) in->desc.axis = n == 1 ? KEOPS_AXIS_J : n == 0 ? KEOPS_AXIS_I : (keops_axis)n; /* KeOps numbers; any other int: bad axes must be refused */
    else if (!strcmp(k, "d")) in->desc.dtype = n == 64 ? KEOPS_FLOAT64 : n == 32 ? KEOPS_FLOAT32 : (keops_dtype)n;
    else if (!strcmp(k, "s")) in->desc.sum_scheme = (keops_sum_scheme)n;
    else if (!strcmp(k, "acc")) in->desc.double_accumulator = (int)n;
    else if (!strcmp(k, "M")) in->M = n < 0 ? 0 : n > MAX_SIZE ? MAX_SIZE : n;
    else if (!strcmp(k, "N")) in->N = n < 0 ? 0 : n > MAX_SIZE ? MAX_SIZE : n;
    else if (!strcmp(k, "th")) in->threads = n < 1 ? 1 : n > 4 ? 4 : (int)n;
    else if (!strcmp(k, "seed")) in->seed = strtoull(v, NULL, 10);
    else if (!strcmp(k, "t"))
      for (int t = 0; t < NT; t++) {
        if (!strcmp(v, targets[t])) in->target = t;
      }
    else if (!strcmp(k, "dom"))
      for (int d = 0; d < KD_NDOM; d++) {
        if (!strcmp(v, kd_domain_names[d])) in->domain = d;
      }
  }
}

/* Returns 0 when the input is to be run. */
static int parse_input(input *in, const uint8_t *data, size_t size) {
  memset(in, 0, sizeof *in);
  in->desc = keops_kernel_desc_init();
  in->raw = data, in->rawn = size;
  in->text = malloc(size + 1);
  memcpy(in->text, data, size);
  in->text[size] = 0;
  char *line[5] = {in->text, "", "", "", ""};
  for (int l = 1; l < 5; l++) {
    char *nl = strchr(line[l - 1], '\n');
    if (!nl) break;
    *nl = 0;
    line[l] = nl + 1;
  }
  in->M = 3, in->N = 4, in->threads = 1;
  in->seed = kfnv64(data, size, KFNV64_SEED);
  in->formula = trim(line[0]);
  int na = 0;
  for (char *a = strtok(line[1], ";"); a && na < MAX_ALIASES; a = strtok(NULL, ";")) {
    a = trim(a);
    if (*a) in->aliases[na++] = a;
  }
  char *red = trim(line[2]), *sp = strpbrk(red, " \t");
  if (sp) {
    *sp = 0;
    long k = strtol(sp + 1, NULL, 10);
    in->desc.k = k > KD_MAX_K ? KD_MAX_K : (int)k; /* large K: test_robust */
  }
  char *f2 = trim(line[3]);
  parse_options(in, line[4]);
  in->desc.formula = in->formula;
  in->desc.formula2 = *f2 ? f2 : NULL;
  in->desc.aliases = in->aliases;
  in->desc.n_aliases = na;
  in->desc.reduction = *red ? red : NULL;
  in->formula2 = in->desc.formula2;
  return 0;
}

/* A literal past float32's range is inf in a float32 kernel and finite in the reference: a
 * difference of meaning, not a defect. Numbers beyond LIT_MAX (or below 1/LIT_MAX) are kept
 * out; constant subexpressions of the rest fold in double (issue 7). */
static int huge_literal(const char *s) {
  for (const char *p = s; p && *p; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_') {
      while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (*p >= '0' && *p <= '9')) p++;
      p--;
      continue; /* digits inside a name are not numbers */
    }
    if (!(*p >= '0' && *p <= '9') && !(*p == '.' && p[1] >= '0' && p[1] <= '9')) continue;
    char *end;
    double v = strtod(p, &end);
    if (end == p) continue;
    if (fabs(v) > LIT_MAX || (v != 0 && fabs(v) < 1 / LIT_MAX)) return 1;
    p = end - 1;
  }
  return 0;
}

/* ---- reports ----------------------------------------------------------------------------------- */

static void print_input(const input *in) {
  fprintf(stderr, "  fuzzer input (%zu bytes): ", in->rawn);
  print_raw(in->raw, in->rawn);
  fputc('\n', stderr);
}

__attribute__((noreturn)) static void die(const input *in, const kd_prob *P, const kd_verdict *v,
                                          const char *why) {
  fprintf(stderr, "\n==== keops fuzz: %s\n", why);
  kd_repro r = {&in->desc, targets[in->target], in->threads, in->domain, in->seed, NULL};
  if (P && P->p) {
    kd_verdict dflt = {.row = -1};
    if (!v) snprintf(dflt.msg, sizeof dflt.msg, "%s", why);
    kd_print_repro(stderr, &r, P, v ? v : &dflt);
  } else {
    fprintf(stderr, "  formula: %s\n  formula2: %s\n  reduction: %s k=%d axis=%d dtype=%d scheme=%d "
                    "acc=%d target=%s M=%lld N=%lld\n",
            in->desc.formula, in->desc.formula2 ? in->desc.formula2 : "(none)",
            in->desc.reduction ? in->desc.reduction : "(Sum)", in->desc.k, (int)in->desc.axis,
            (int)in->desc.dtype, (int)in->desc.sum_scheme, in->desc.double_accumulator,
            targets[in->target], (long long)in->M, (long long)in->N);
    for (int a = 0; a < in->desc.n_aliases; a++) fprintf(stderr, "  alias: %s\n", in->aliases[a]);
  }
  print_input(in);
  fflush(stderr);
  __builtin_trap();
}

static void expect_message(const input *in, keops_status st, const char *where) {
  const char *m = keops_last_error();
  char why[200];
  if (!m || !*m) {
    snprintf(why, sizeof why, "%s failed with %s and an empty message", where, keops_status_string(st));
    die(in, NULL, NULL, why);
  }
  if (st == KEOPS_ERROR_COMPILE) {
    snprintf(why, sizeof why, "%s: KEOPS_ERROR_COMPILE (a library bug): %.150s", where, m);
    die(in, NULL, NULL, why);
  }
}

/* ---- one input ------------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  input in;
  st_.inputs++;
  parse_input(&in, data, size);
  if (huge_literal(in.desc.formula) || huge_literal(in.desc.formula2)) {
    free(in.text);
    return 0;
  }
  keops_context *ctx = context(in.target);
  if (!ctxs[in.target]) in.target = 0;
  keops_kernel *k = (keops_kernel *)&in; /* must be reset to NULL on failure */
  double t0 = now();
  keops_status st = keops_kernel_create(ctx, &in.desc, &k);
  if (st != KEOPS_OK) {
    if (k) die(&in, NULL, NULL, "keops_kernel_create failed but left *out set");
    expect_message(&in, st, "keops_kernel_create");
    free(in.text);
    return 0;
  }
  ctx_kernels[in.target]++;
  st_.created++;
  kd_prob P;
  if (kd_prob_init(&P, k, in.M, in.N, in.domain, in.seed, NULL)) {
    keops_kernel_destroy(k);
    free(in.text);
    return 0;
  }
  /* a bad size must be refused with a message, before anything runs */
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
  st = keops_kernel_run(k, -1, in.N, (const void *const *)P.arr, P.out[0], &o);
  if (st == KEOPS_OK) die(&in, &P, NULL, "keops_kernel_run accepted M = -1");
  expect_message(&in, st, "keops_kernel_run(M = -1)");
  st = kd_run(&P, 0, in.threads);
  double dt = now() - t0;
  if (dt > st_.slowest) {
    st_.slowest = dt;
    st_.slowest_len = size < sizeof st_.slowest_input ? size : sizeof st_.slowest_input;
    memcpy(st_.slowest_input, data, st_.slowest_len);
  }
  if (bound > 0 && dt > bound * slowdown) {
    char why[300];
    snprintf(why, sizeof why, "keops_kernel_create + first CPU run took %.2f s, more than the bound "
             "of %.2f s x %.0f (KEOPS_FUZZ_COMPILE_BOUND x KEOPS_FUZZ_SLOWDOWN)", dt, bound, slowdown);
    st_.slow++;
    if (!report_only) die(&in, &P, NULL, why);
    fprintf(stderr, "keops_fuzz: slow compile: %s\n", why);
    print_input(&in);
  }
  if (st != KEOPS_OK) {
    expect_message(&in, st, "keops_kernel_run (CPU)");
    if (!st_.cpu_failed[st & 15]++)
      snprintf(st_.cpu_failure[st & 15], sizeof st_.cpu_failure[0], "%.120s: %.70s",
               in.desc.formula, keops_last_error());
  } else {
    keops_status rs = kd_run(&P, 1, 1);
    if (rs != KEOPS_OK) {
      expect_message(&in, rs, "keops_kernel_run (REFERENCE)");
      if (rs != KEOPS_ERROR_OUT_OF_MEMORY) die(&in, &P, NULL, "the reference failed where the CPU ran");
    } else {
      kd_verdict v;
      st_.ran++;
      kd_judge(&P, in.seed, &v);
      st_.judged += v.compared > 0;
      if (v.mismatch) {
        kd_prob S;
        kd_verdict vs;
        if (kd_shrink(&P, v.row, in.threads, in.seed, &S, &vs)) {
          kd_repro r = {&in.desc, targets[in.target], in.threads, in.domain, in.seed, NULL};
          fprintf(stderr, "shrunk reproducer:\n");
          kd_print_repro(stderr, &r, &S, &vs);
        }
        die(&in, &P, &v, "CPU and REFERENCE differ beyond tolerance");
      }
    }
  }
  kd_prob_free(&P);
  keops_kernel_destroy(k);
  free(in.text);
  return 0;
}
