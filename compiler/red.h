/* Reduction families: what a family is (red_family), the steps every backend runs (init,
 * accumulate one index, combine two states, finalize into the user's output row) in double
 * precision as the reference interpreter runs them, and the generic calls through a row's
 * family. Each family's definition, with its state's contract (neutral elements, tie and
 * NaN rules), is in compiler/red_<family>.c; the JIT's steps (kgen.h) sit next to the C ones
 * there, so one file says everything about a family. */
#ifndef KEOPS_RED_H
#define KEOPS_RED_H

#include <stddef.h>
#include <stdint.h>

#include "front.h"

/* Everything the steps need about one reduction, fixed for a run. */
typedef struct red_spec {
  const red_row *row;
  int fdim;                /* values of the formula per pair */
  int dim;                 /* components D: fdim, or E' = fdim - 1 for the LSE family */
  int k;                   /* KMIN: K >= 1 */
  keops_sum_scheme scheme; /* SUM: DIRECT, BLOCK or KAHAN (AUTO taken as BLOCK) */
  int64_t period;          /* SUM/BLOCK: partial sums flushed every `period` terms */
  size_t state;            /* doubles in one state */
  int nout;                /* user outputs: 1 or 2 */
  int out_dim[2];          /* values per output row */
  int out_idx[2];          /* 1: output is int64 indices, 0: values in the dtype */
} red_spec;

/* A state is an array of doubles (indices are stored as doubles: exact below 2^53), in this
 * order: [value slots][one auxiliary or one index per slot][extra]. The JIT keeps the same
 * slots in registers and writes/reads this layout when states cross kernels. */
typedef struct red_layout {
  int slots; /* value slots */
  int aux;   /* 1: a second accumulator per slot (block sum's partial, Kahan's compensation) */
  int idx;   /* 1: the index of each slot's value (-1: none yet) */
  int extra; /* doubles after the slots (block sum's count of terms in the partial) */
} red_layout;

struct kg_family; /* the family's IR steps (kgen.h): LLVM stays out of the front end */

/* A reduction family. Rows of reductions.def point at one; generic code (red.c, fe.c,
 * kgen.c) reads it and never switches on the family. Define the steps with RED_STEPS so
 * a family that lacks one does not compile. */
typedef struct red_family {
  const char *name;
  int takes_k;  /* the request's K applies (K-min) */
  int sum_type; /* sum_scheme and double_accumulator apply */
  int weighted; /* the program formula is Concat(F, weight), F scalar (fe.c) */
  /* The state for a program formula of dim fdim, K (0 unless takes_k), scheme (resolved). */
  red_layout (*layout)(int fdim, int k, keops_sum_scheme scheme);
  /* Values per row of each user output. */
  int (*width)(const red_row *r, int fdim, int k);
  /* Sets the family's fields of s (k, scheme, period, dim) for a run over nred indices, s's
   * row and fdim set; -1 with e set when they do not fit. */
  int (*spec)(red_spec *s, int k, keops_sum_scheme scheme, int64_t nred, kerr *e);
  void (*init)(const red_spec *s, double *st);
  void (*accumulate)(const red_spec *s, double *st, const double *f, int64_t j);
  void (*combine)(const red_spec *s, double *st, const double *other);
  void (*finalize)(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                   int64_t row);
  const struct kg_family *ir;
} red_family;

/* The required steps, by name: a missing one (or NULL) is a compile error. */
#define RED_STEPS(lay, wid, spc, ini, acc, cmb, fin)                                               \
  .layout = &(lay), .width = &(wid), .spec = &(spc), .init = &(ini), .accumulate = &(acc),         \
  .combine = &(cmb), .finalize = &(fin)

#define RED_FAMILY_DECL(NAME) extern const red_family red_##NAME;
RED_FAMILIES(RED_FAMILY_DECL)
#undef RED_FAMILY_DECL

static inline size_t red_layout_doubles(red_layout l) {
  return (size_t)l.slots * (size_t)(1 + l.aux + l.idx) + (size_t)l.extra;
}

/* The user's outputs of row r for a program formula of dim fdim: their count (1 or 2),
 * values per row and whether each holds int64 indices (fe.c and red_spec_init). */
int red_outputs(const red_row *r, int fdim, int k, int out_dim[2], int out_idx[2]);

/* Fills s for a run reducing over `nred` indices. Returns 0, or -1 with e set
 * (KEOPS_ERROR_ARGUMENT/DIMENSION) when fdim or k do not fit the row. */
int red_spec_init(red_spec *s, const red_row *row, int fdim, int k, keops_sum_scheme scheme,
                  int64_t nred, kerr *e);

/* st: s->state doubles. */
void red_init(const red_spec *s, double *st);
/* Adds the formula value f (s->fdim doubles) of reduced index j. Within one state the calls
 * come in increasing j: the tie rules rely on it. */
void red_accumulate(const red_spec *s, double *st, const double *f, int64_t j);
/* st := st (+) other, for states over disjoint index sets, in either order. */
void red_combine(const red_spec *s, double *st, const double *other);
/* Writes row `row` of the user's outputs: values in dtype dt (float32/float64), indices as
 * int64, per s->out_dim / s->out_idx. */
void red_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                  int64_t row);

/* ---- for the family definitions (red_shared.c) ------------------------------------------ */

/* Stores v at out[at] in dtype dt. */
void red_put(void *out, keops_dtype dt, int64_t at, double v);
/* The spec step of a family with nothing to set. */
int red_spec_none(red_spec *s, int k, keops_sum_scheme scheme, int64_t nred, kerr *e);
/* Slots of (value, index) (MINMAX, KMIN): the empty value of direction dir; whether x with
 * index xi goes before the slot (v, vi): the slot is empty, or x is strictly better, or
 * equal with a smaller index (non-empty slots never hold NaN); init; finalize (values
 * st[0..n), indices st[n..2n), as the row's outputs say). */
double red_worst(int dir);
int red_goes_before(int dir, double x, double xi, double v, double vi);
void red_slots_init(const red_spec *s, double *st);
void red_slots_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                        int64_t row);

#endif
