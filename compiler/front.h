/* The front end: formula text -> checked, differentiated, simplified DAG + reduction row
 * -> a program every backend runs (interp.c now; the JIT targets later). No LLVM here. */
#ifndef KEOPS_FRONT_H
#define KEOPS_FRONT_H

#include "dag.h"

/* ---- arguments (parse.c) ---------------------------------------------------------------- */

#define FE_MAX_ARGS 256 /* positions 0..255 */

typedef struct fe_args {
  int n;                   /* 1 + highest declared position */
  int dim[FE_MAX_ARGS];    /* 0: position not declared */
  int cat[FE_MAX_ARGS];    /* CAT_I, CAT_J or CAT_P */
  char *name[FE_MAX_ARGS]; /* alias name (malloc'ed) or NULL */
} fe_args;

/* Declares position pos with dim and cat (name may be NULL). A second declaration of the
 * same position must agree in dim and cat (and two names must not collide); else
 * KEOPS_ERROR_DIMENSION. Returns 0 on success, -1 with e set. */
int fe_args_declare(fe_args *a, int pos, int dim, int cat, const char *name, size_t name_len,
                    kerr *e);
void fe_args_free(fe_args *a); /* frees the names; the struct itself is the caller's */

/* Parses alias text number `index` ("x = Vi(3)", "x=Vi(0,3)", "Vj(1,2)", "x = Var(0,3,1)",
 * "p = Pm(1)") and declares it in a; an alias without position takes position `index`.
 * Errors carry the position: "alias[2]:1:5: error: ...". Returns 0 or -1. */
int fe_parse_alias(fe_args *a, const char *text, int index, kerr *e);

/* ---- formulas (parse.c) ----------------------------------------------------------------- */

/* Names bound while parsing, besides the aliases of `args`: used for templates (x, y, z, r)
 * and by tools. */
typedef struct fe_scope {
  const char *const *names;
  const uint32_t *ids;
  int n;
  const int64_t *params; /* $0, $1, ... in template text */
  int np;
} fe_scope;

/* Parses `text` into d. src_name names the text in messages ("formula", "formula2").
 * args (may be NULL for templates): aliases resolve to Var nodes, inline Var(pos,dim,cat)
 * are declared in it, Grad(f, v) takes its new variable at position args->n.
 * Returns the root id, or 0 with e set (status SYNTAX for text, DIMENSION for dims, ...,
 * message "src_name:line:col: error: ...\n<the line>\n<caret>"). */
uint32_t fe_parse(dag *d, const char *text, const char *src_name, fe_args *args,
                  const fe_scope *scope, kerr *e);

/* Builds Name(kids, params) for any op row (SG expands, AD differentiates, EW/ST/LF build),
 * as the parser does for a call. params flattened as in dag.h. 0 and dag error on failure. */
uint32_t fe_call(dag *d, int op, const uint32_t *kids, int nk, const int64_t *params, int np,
                 fe_args *args);

/* Instantiates formula text over x, y, z (kids), r and $k (params) - the ops.def templates.
 * 0 and dag error on failure. */
uint32_t fe_template(dag *d, const char *text, const uint32_t *kids, int nk, uint32_t r,
                     const int64_t *params, int np);
/* The partial derivative of EW node id w.r.t. argument k, from its ops.def template: the
 * dag_partial_fn the front end gives autodiff.c (fe_parse and fe_call set it on their dag). */
uint32_t fe_partial(dag *d, uint32_t id, int k);

/* ---- autodiff (autodiff.c) -------------------------------------------------------------- */

/* Each returns 0 and sets the dag error when the request is invalid (v not a variable,
 * e or u of the wrong dim, ...). */
uint32_t ad_grad(dag *d, uint32_t f, uint32_t v, uint32_t e); /* [d f/d v]^T e, dim of v */
uint32_t ad_diff(dag *d, uint32_t f, uint32_t v, uint32_t u); /* (d f/d v) u, dim of f */
uint32_t ad_grad_matrix(dag *d, uint32_t f, uint32_t v);      /* dim f * dim v */
uint32_t ad_divergence(dag *d, uint32_t f, uint32_t v);       /* dim f = dim v, out 1 */
/* Whether f is linear in the Var v: 1 yes, 0 no, -1 on error (dag error set). Exact where it
 * says yes; a linear f that the simplifier writes two different ways reads as non-linear. */
int ad_is_linear(dag *d, uint32_t f, uint32_t v);

/* ---- reductions (red.c, red_<family>.c, reductions.def) ------------------------------- */

/* The reduction families. Each is defined once, in compiler/red_<family>.c, as red_<NAME>
 * (red.h: its state layout, outputs, steps in C and, through kgen.h, in LLVM IR); every
 * consumer reads that definition. A new family: a name here, its file, its rows in
 * reductions.def, its tests. */
#define RED_FAMILIES(F) F(SUM) F(MINMAX) F(KMIN) F(LSE)
#define RED_FAMILY_ID(NAME) RF_##NAME,
enum red_family_id { RED_FAMILIES(RED_FAMILY_ID) RF_COUNT };
#undef RED_FAMILY_ID
enum red_fin { FIN_RAW, FIN_LOG, FIN_SOFTMAX };
enum { RO_VAL = 1, RO_IDX = 2 };  /* outputs */
enum { F2_NO, F2_OPT, F2_REQ };   /* formula2 */

struct red_family;

typedef struct red_row {
  const char *name;
  enum red_family_id family; /* RF_<NAME>: the id of fam, for code that only tells them apart */
  const struct red_family *fam; /* red_<NAME> */
  int dir;       /* MINMAX, KMIN: -1 minimum, +1 maximum */
  int outputs;   /* RO_VAL, RO_IDX or both (values in outs[0], indices in outs[1]) */
  int f2;        /* F2_* */
  int weight1;   /* LSE: prepend a constant 1 to the weight (softmax normaliser) */
  enum red_fin fin;
} red_row;

const red_row *red_find(const char *name); /* NULL if unknown */
/* Every reduction name, comma-separated, for messages: the first *len characters. */
const char *red_known_names(int *len);

/* ---- the program (fe.c) ----------------------------------------------------------------- */

/* An argument's role in the program's orientation: one row per output row, one row per
 * reduced index, or a parameter (FE_NONE: a position no alias declares). */
enum { FE_NONE, FE_ROW, FE_RED, FE_PARAM };

/* What every backend runs. The formula is expressed for "reduce over j for each i": for
 * axis 0 the categories of its Vi and Vj variables are swapped, so in `f` category 0
 * always means "the output row" and category 1 "the reduced index". */
typedef struct fe_program {
  dag *d;
  uint32_t f;        /* reduced formula; for LSE families Concat(F, weight) (1 + E wide) */
  int fdim;          /* dim of f */
  const red_row *red;
  int k;             /* K of the KMin family, else 0 */
  int axis;          /* KeOps's numbering: 1 (KEOPS_AXIS_J) reduces over j, 0 over i */
  keops_dtype dtype;
  keops_sum_scheme scheme; /* AUTO resolved to BLOCK for sum-type reductions, else DIRECT */
  int double_acc;
  int fast_math;     /* keops_kernel_desc.fast_math, for float32 (else 0) */
  int zero;          /* Sum of a formula that simplified to Zero: fill, evaluate nothing */
  fe_args args;      /* positions as the user passes them (user categories) */
  int nout;
  int out_dim[2];
  keops_dtype out_dtype[2];
  uint32_t user_f, user_f2; /* formulas after simplification, before the axis swap */
  /* Facts every backend reads, computed once by fe_build: */
  int role[FE_MAX_ARGS]; /* FE_* of each position */
  int red_width;     /* values of the FE_RED arguments per reduced index (the GPU's tile row) */
  int state;         /* doubles in one row's reduction state (red.c's layout) */
  int64_t size;      /* kg_size: the kernel's size, which the JIT's limit and the GPU's rows
                        per thread and unrolling read (computed once: they must agree) */
  int weights;       /* LSE family: the weights after F in f (fdim - 1); else 0 */
  char *key;         /* canonical text: formula(s), reduction, axis, k, dtype, options */
} fe_program;

/* Output rows and reduced indices of a run over M i's and N j's. */
static inline int64_t fe_rows(const fe_program *p, int64_t M, int64_t N) { return p->axis == 1 ? M : N; }
static inline int64_t fe_nred(const fe_program *p, int64_t M, int64_t N) { return p->axis == 1 ? N : M; }

/* Builds the program for desc. On failure returns NULL with e set. The caller frees with
 * fe_free. */
fe_program *fe_build(const keops_kernel_desc *desc, kerr *e);
void fe_free(fe_program *p);
/* The program whose key is `key` (fe_program.key), rebuilt without the formula's text: the
 * same f, reduction, options, arguments and derived facts, so the same code (what a fake
 * driver given the key in a PTX comment needs). Alias names and user_f / user_f2 are not in
 * the key (NULL, 0). Any text that is not exactly a program's key is refused with
 * KEOPS_ERROR_ARGUMENT ("program key: ..."); NULL with e set, else the caller frees with
 * fe_free. */
fe_program *fe_from_key(const char *key, kerr *e);

/* A block-sparse reduction (keops_ranges) in the program's orientation, as the runtime checked
 * it: block b's output rows [rows[2b], rows[2b+1]) (blocks ascending and disjoint) reduce over
 * the index ranges [red[2s], red[2s+1]) for s in [fe_slice_begin(r, b), slices[b]) (ascending
 * and disjoint). Rows in no block reduce over nothing. A NULL fe_ranges means every pair. */
typedef struct fe_ranges {
  int64_t nblocks;
  const int64_t *rows, *slices, *red;
} fe_ranges;

static inline int64_t fe_slice_begin(const fe_ranges *r, int64_t b) { return b ? r->slices[b - 1] : 0; }

/* ---- reference interpreter (interp.c) --------------------------------------------------- */

/* Evaluates node `id` for one pair: vars[pos] points at the values of argument pos (row i
 * of a Vi input, row j of a Vj input, the Pm vector), in double. out gets dim values. */
void interp_eval(const dag *d, uint32_t id, const double *const *vars, double *out);

/* Runs the program over all pairs (or those of rg, when not NULL), in double precision,
 * writing the user's outputs (rows M for axis 1, N for axis 0). Returns KEOPS_OK or an error
 * with e set. */
keops_status interp_run(const fe_program *p, int64_t M, int64_t N, const void *const *args,
                        void *const *outs, const fe_ranges *rg, kerr *e);

#endif
