/* Shared helpers of the test suites: deterministic random data, dtype conversion, error
 * measures. */
#ifndef KEOPS_TESTUTIL_H
#define KEOPS_TESTUTIL_H

#include <check.h>
#include <stdint.h>

#include "keops.h"
#include "kerr.h"

/* KeOps's axis numbers (1: over j, 0: over i) as a keops_axis; other values pass through,
 * for the tests of bad axes. */
static inline keops_axis tu_axis(int keops_number) {
  return keops_number == 1 ? KEOPS_AXIS_J : keops_number == 0 ? KEOPS_AXIS_I : (keops_axis)keops_number;
}

/* A new context whose GPU backend is the host emulator (KEOPS_GPU=emulator when it is
 * created), so that GPU runs execute on every machine; the test fails if it cannot be made. */
keops_context *tu_emulator_context(void);

/* A kernel that must build (the test fails with the library's message otherwise); reduction
 * NULL means Sum. */
keops_kernel *tu_kernel(keops_context *ctx, const char *formula, const char *formula2,
                        const char *reduction, int k, const char *const *aliases, int n_aliases,
                        keops_axis axis, keops_dtype dt);

/* TU_OK(f(..., &e_)): asserts that a call taking a kerr succeeds, naming the call and the
 * kerr's message; the macro's kerr is named e_. */
#define TU_OK(call)                                                                                \
  do {                                                                                             \
    kerr e_;                                                                                       \
    kerr_clear(&e_);                                                                               \
    keops_status st_ = (call);                                                                     \
    ck_assert_msg(st_ == KEOPS_OK, "%s: %s (%s)", #call, keops_status_string(st_), e_.msg);        \
  } while (0)

/* Deterministic generator (xorshift64*), so failures reproduce. */
typedef struct tu_rng { uint64_t s; } tu_rng;
tu_rng tu_seed(uint64_t seed);
double tu_uniform(tu_rng *r, double lo, double hi);
double tu_normal(tu_rng *r);
/* n values, caller frees. */
double *tu_randn(tu_rng *r, int64_t n);
/* Copies n doubles into a new array of dtype (float32 or float64); caller frees. */
void *tu_to_dtype(const double *src, int64_t n, keops_dtype dt);
/* Element k of an array of dtype, as double. */
double tu_get(const void *a, keops_dtype dt, int64_t k);
/* max_k |a_k - b_k| / (atol + rtol-weighted scale): returns the largest |a-b| - (atol +
 * rtol*|b|); <= 0 means all within tolerance. NaN where exactly one is NaN. */
double tu_excess(const double *a, const double *b, int64_t n, double rtol, double atol);
/* Largest relative error max|a-b| / max|b| (0 if b is all zero and a equals it). */
double tu_max_rel_err(const double *a, const double *b, int64_t n);

/* Runs the shell command cmd and returns its standard output (caller frees); *status: its
 * exit status, -1 if it did not exit. */
char *tu_command_output(const char *cmd, int *status);

/* Runs suite s (check's runner; fork = 0 keeps every test in this process) and returns the
 * number of failed tests. */
int tu_run(Suite *s, int fork);

#endif
