/* A generator of well-typed random formula reductions for the differential test
 * (tests/test_diff.c).
 *
 * Formulas are generated from the op table, not from a list kept by hand: at start, every
 * writable row of ops.def (a row with a signature) is searched for call shapes - argument
 * dims, integer and list parameters drawn at random for its signature and validated by the
 * parser on placeholder variables - and an argument that only validates as a bare variable
 * (the v of Grad(f, v, e)) is marked so. Elementwise rows take arguments of dim D or 1. A new
 * op row is therefore generated without any change here; gn_init reports a row for which no
 * shape was found (then add a hint below). Reductions come from reductions.def in the same
 * way.
 *
 * Every case draws: a reduction row, axis, dtype, target (avx512/avx2/generic), sum scheme
 * and float64 accumulator (sum-type rows), K (KMin family, 1..KD_MAX_K), formula2 where the
 * row takes one, sizes (M, N up to 24, sometimes 0; one case in eight a j-split: 1-3 output
 * rows, 2048 * threads + up to 2000 reduced indices on 2-4 threads), the input domain and the
 * data seed - all from one 64-bit seed, so a case is reproduced by its seed alone.
 *
 * Not generated: float literals that are not exact small ratios (Cst nodes; the fuzzer's
 * inputs reach them), K above KD_MAX_K and inputs past KD_VALUE_MAX. Ill-conditioned formulas
 * are not excluded here: the oracle measures each term's condition (diffcore.h). */
#ifndef KEOPS_TESTS_GEN_H
#define KEOPS_TESTS_GEN_H

#include <stdint.h>
#include <stdio.h>

#include "diffcore.h"

#define GN_MAXV 12
#define GN_MAXF 1400

typedef struct gn_case {
  char formula[GN_MAXF], formula2[GN_MAXF];
  char alias[GN_MAXV][40];
  const char *aliasp[GN_MAXV];
  int nalias, adim[GN_MAXV], acat[GN_MAXV];
  keops_kernel_desc desc;
  int target, threads, domain, jsplit;
  int64_t M, N;
  uint64_t seed, data_seed;
} gn_case;

/* Builds the shape table (once; not thread-safe). Returns the number of writable op rows
 * without any shape (0 when every row can be generated). */
int gn_init(void);
/* Name of the i-th writable row without a shape (after gn_init), or NULL. */
const char *gn_unshaped(int i);
/* The writable op rows, in table order: what a caller can force. */
int gn_nrows(void);
int gn_row(int i);
int gn_nreductions(void);
const char *gn_reduction(int i);

/* Draws case `seed`. force_op >= 0 puts that op row in the case (as the root of formula, or of
 * formula2); force_red >= 0 picks the reduction row (index into gn_reduction); variant >= 0
 * picks the sum scheme (variant % 4) and, for float32, the float64 accumulator (variant % 3 ==
 * 1) of sum-type rows, so that a short run still covers them all. The case points into
 * itself: do not copy it. */
void gn_make(gn_case *c, uint64_t seed, int force_op, int force_red, int variant);

/* Prints the shape table (KEOPS_DIFF_VERBOSE=2). */
void gn_dump_shapes(FILE *f);

/* Marks the op rows written as calls in text (seen[op] = 1). */
void gn_mark_ops(const char *text, int *seen);

#endif
