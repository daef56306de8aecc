/* keops-bench --density=F (bench_sparse.c): block-sparse runs against dense ones. */
#ifndef KEOPS_BENCH_SPARSE_H
#define KEOPS_BENCH_SPARSE_H

#include "bench_cases.h"

/* Runs case c at dtype dt on M x N, dense and with ranges keeping a random `density` of the
 * blocks of BS_CLUSTER x BS_CLUSTER pairs, reps times each after a warm-up, on `backend`; checks
 * the sparse result of the first row block against the reference backend with the same ranges;
 * prints one line. Returns 0 when both ran and agree. */
int bs_run(const bcase *c, keops_dtype dt, int64_t M, int64_t N, int reps, int threads,
           keops_backend backend, double density);
void bs_print_header(void);

#endif
