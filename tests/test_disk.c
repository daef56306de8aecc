/* The disk cache of compiled CPU kernels: a second context loads what the first compiled;
 * damaged, truncated and foreign files are ignored and replaced; "off" writes nothing. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "testutil.h"

static char dir[256];

static const char *const ALIASES[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"};
#define M 37
#define N 53

/* The one .kobj file of the cache directory (its path into out); the count of them. */
static int kobj_files(char *out, size_t n) {
  DIR *d = opendir(dir);
  int count = 0;
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d));)
    if (strstr(e->d_name, ".kobj") && !strstr(e->d_name, ".kobj.")) {
      count++;
      if (out) snprintf(out, n, "%s/%s", dir, e->d_name);
    }
  closedir(d);
  return count;
}

/* Runs Exp(-g*SqDist(x,y))*b on fixed data in a fresh context; returns how many kernels that
 * context took from the disk, and the result into c. */
static long run_once(float *c) {
  static float x[M * 3], y[N * 3], b[N], g[1] = {0.5f};
  for (int k = 0; k < M * 3; k++) x[k] = (float)(k % 7) / 7;
  for (int k = 0; k < N * 3; k++) y[k] = (float)(k % 5) / 5;
  for (int k = 0; k < N; k++) b[k] = (float)(k % 3);
  keops_context *ctx;
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = "Exp(-g*SqDist(x,y))*b";
  d.aliases = ALIASES;
  d.n_aliases = 4;
  d.axis = KEOPS_AXIS_J;
  keops_kernel *k;
  ck_assert_int_eq(keops_kernel_create(ctx, &d, &k), KEOPS_OK);
  const void *args[] = {x, y, b, g};
  void *outs[] = {c};
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
  ck_assert_msg(keops_kernel_run(k, M, N, args, outs, &o) == KEOPS_OK, "%s", keops_last_error());
  long loads = atomic_load(&ctx->disk_loads);
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
  return loads;
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/keops_disk_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("KEOPS_CACHE_DIR", dir, 1);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

START_TEST(second_context_loads) {
  float c1[M], c2[M];
  ck_assert_int_eq(run_once(c1), 0);
  ck_assert_int_eq(kobj_files(NULL, 0), 1);
  ck_assert_int_eq(run_once(c2), 1);
  ck_assert_mem_eq(c1, c2, sizeof c1); /* the same code */
}
END_TEST

/* Flips one byte at offset `at` from the end (or truncates when at < 0). */
static void damage(long at) {
  char path[512];
  ck_assert_int_eq(kobj_files(path, sizeof path), 1);
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  if (at < 0) {
    fclose(f);
    ck_assert_int_eq(truncate(path, size / 2), 0);
    return;
  }
  fseek(f, size - at, SEEK_SET);
  int ch = fgetc(f);
  fseek(f, size - at, SEEK_SET);
  fputc(ch ^ 0x5a, f);
  fclose(f);
}

START_TEST(damaged_files_are_rebuilt) {
  static const long where[] = {100, -1, 0};
  float ref[M], c[M];
  run_once(ref);
  for (int k = 0; where[k]; k++) {
    damage(where[k]);
    ck_assert_int_eq(run_once(c), 0); /* ignored: compiled again ... */
    ck_assert_mem_eq(ref, c, sizeof c);
    ck_assert_int_eq(run_once(c), 1); /* ... and stored again, intact */
  }
}
END_TEST

/* A file of another key under this key's name is foreign: its key check fails. */
START_TEST(foreign_file_is_ignored) {
  float ref[M], c[M];
  run_once(ref);
  char path[512];
  kobj_files(path, sizeof path);
  FILE *f = fopen(path, "r+b");
  fseek(f, 8 + 4 + 4 + 8 + 8 + 3, SEEK_SET); /* a byte of the stored key */
  fputc('#', f);
  fclose(f);
  ck_assert_int_eq(run_once(c), 0);
  ck_assert_mem_eq(ref, c, sizeof c);
}
END_TEST

START_TEST(off_writes_nothing) {
  float c[M];
  setenv("KEOPS_CACHE_DIR", "off", 1);
  ck_assert_int_eq(run_once(c), 0);
  ck_assert_int_eq(run_once(c), 0);
  ck_assert_int_eq(kobj_files(NULL, 0), 0);
  /* a directory that cannot be made disables the cache and nothing else */
  setenv("KEOPS_CACHE_DIR", "/proc/keops-cannot-exist/x", 1);
  ck_assert_int_eq(run_once(c), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("disk");
  TCase *t = tcase_create("cache");
  tcase_add_checked_fixture(t, setup, teardown);
  tcase_add_test(t, second_context_loads);
  tcase_add_test(t, damaged_files_are_rebuilt);
  tcase_add_test(t, foreign_file_is_ignored);
  tcase_add_test(t, off_writes_nothing);
  suite_add_tcase(s, t);
  int failed = tu_run(s, 1);
  return failed ? 1 : 0;
}
