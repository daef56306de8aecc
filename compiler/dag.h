/* Expression DAG: an arena of hash-consed nodes addressed by uint32 ids, built only through
 * smart constructors that check dims and simplify (see ops.def for the op rows).
 *
 * Invariants: id 0 is "no node" (a failed build); children always have smaller ids than
 * their parents, so increasing id order is a topological order; structurally equal nodes
 * have the same id. A builder given a 0 child returns 0 without touching the error, so
 * nested builder calls need one check at the end. The first error is kept in the dag. */
#ifndef KEOPS_DAG_H
#define KEOPS_DAG_H

#include <stddef.h>
#include <stdint.h>

#include "kerr.h"
#include "keops.h"

enum dag_op {
#define X(name, kind, sig, vm, eval, t0, t1, t2) OP_##name,
#include "ops.def"
#undef X
  OP_COUNT
};

enum dag_kind { K_EW, K_ST, K_SG, K_LF, K_AD };

typedef struct dag_opinfo {
  const char *name;
  enum dag_kind kind;
  const char *sig;   /* argument signature, see ops.def; NULL: not writable */
  const char *t[3];  /* EW: partial derivatives; SG: t[0] = expansion */
} dag_opinfo;

extern const dag_opinfo dag_ops[OP_COUNT];

/* Each fact of a structural (ST) row - dim rule, rewrite rules, value, adjoint, tangent,
 * lowering, printing - is one function named <prefix><Name>, in the file that owns the fact,
 * found through a table generated from the rows:
 *
 *   static fact_fn *const fact[OP_COUNT] = {
 *   #define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, prefix_)
 *   #include "ops.def"
 *   #undef X
 *   };
 *
 * so an ST row without its function does not compile (an undeclared identifier), and a
 * function left after its row is gone is an unused static (-Werror). Rows that share a body
 * name it with a #define next to it. */
#define DAG_ST_ENTRY(kind, name, prefix) DAG_ST_ENTRY_##kind(name, prefix)
#define DAG_ST_ENTRY_ST(name, prefix) [OP_##name] = prefix##name,
#define DAG_ST_ENTRY_EW(name, prefix)
#define DAG_ST_ENTRY_SG(name, prefix)
#define DAG_ST_ENTRY_LF(name, prefix)
#define DAG_ST_ENTRY_AD(name, prefix)
int dag_op_lookup(const char *name, size_t len); /* op index, or -1 */

/* Variable categories as stored in Var nodes. */
enum { CAT_I = 0, CAT_J = 1, CAT_P = 2 };

#define DAG_MAX_KIDS 3
#define DAG_MAX_DIM 1000000 /* a formula dim above this is an error, so products cannot overflow */
#define DAG_MAX_DEPTH 2000  /* deeper formulas are an error; evaluators may recurse this deep */

typedef struct dag_node {
  uint16_t op;
  uint8_t nk;      /* children */
  uint8_t np;      /* integer parameters, in the dag's parameter pool */
  int32_t dim;     /* output dimension */
  uint32_t k[DAG_MAX_KIDS];
  uint32_t p;      /* offset of the parameters in the pool */
  uint32_t depth;  /* 1 for leaves */
  uint32_t hash;
} dag_node;
/* Parameters by op: Var (pos, cat); RatCst (num, den), den > 0, reduced; Cst (bits of the
 * double); Zero (none: dim is the node's); other ops their integer arguments in order, an
 * integer list stored as its length followed by its elements. */

typedef struct dag dag;

dag *dag_new(void);   /* NULL when out of memory */
void dag_free(dag *d);/* NULL is fine */
kerr *dag_err(dag *d);/* the dag's first error; status KEOPS_OK if none */
/* How the partial derivatives of this dag's elementwise nodes are built: the partial of EW
 * node id w.r.t. its argument k, 0 with the dag error set on failure. The ops.def rows write
 * them as formula text, which only the parser can instantiate: the front end sets it
 * (fe_partial, set by fe_parse and fe_call), so that autodiff.c needs no parser and the
 * parser's calls into autodiff form no cycle. */
typedef uint32_t (*dag_partial_fn)(dag *d, uint32_t id, int k);
void dag_set_partial(dag *d, dag_partial_fn fn);
dag_partial_fn dag_partial(const dag *d); /* NULL until set */

/* Pointers returned by dag_get and dag_params stay valid only until the next node is built. */
const dag_node *dag_get(const dag *d, uint32_t id);
const int64_t *dag_params(const dag *d, uint32_t id);
uint32_t dag_count(const dag *d); /* ids are 1 .. count-1 */

/* Smart constructors. op is an ST or EW row (or LF Zero/RatCst/Var via the helpers below);
 * kids and params as the op row says. Returns 0 and records the error on bad dims or
 * params, or when a child is 0. SG and AD rows are not accepted here (see fe_call). */
uint32_t dag_make(dag *d, int op, const uint32_t *kids, int nk, const int64_t *params, int np);
uint32_t dag_un(dag *d, int op, uint32_t a);
uint32_t dag_bin(dag *d, int op, uint32_t a, uint32_t b);
/* Rebuilds `id` through the smart constructors with every Var (pos, dim, cat) replaced by
 * fn(d, pos, dim, cat, ctx); 0 on error. */
typedef uint32_t (*dag_var_fn)(dag *d, int pos, int dim, int cat, const void *ctx);
uint32_t dag_map_vars(dag *d, uint32_t id, dag_var_fn fn, const void *ctx);
/* Rebuilds `id` with every Var's category c replaced by swap[c] (axis 0 uses {1, 0, 2}). */
uint32_t dag_swap_cats(dag *d, uint32_t id, const int swap[3]);
uint32_t dag_var(dag *d, int pos, int dim, int cat);
uint32_t dag_zero(dag *d, int dim);
uint32_t dag_rat(dag *d, int64_t num, int64_t den); /* den != 0 */
uint32_t dag_int(dag *d, int64_t n);
uint32_t dag_cst(dag *d, double v); /* a rational when v is an exact small ratio */
/* Interns a node as given: no checks beyond depth and dim range, no rewriting (for
 * simplify.c and the leaf helpers). */
uint32_t dag_intern(dag *d, int op, int dim, const uint32_t *k, int nk, const int64_t *p, int np);

/* Facts used by the simplifier and by the autodiff rules. */
int dag_is_zero(const dag *d, uint32_t id); /* a Zero node (the constant 0 is Zero(1)) */
/* Returns 1 and sets num and den when id is a RatCst or the scalar Zero (0/1). */
int dag_is_rat(const dag *d, uint32_t id, int64_t *num, int64_t *den);

/* TensorDot(a, b, dims_a, dims_b, cont_a, cont_b[, perm])'s integer lists, as a node stores
 * them (each list its length, then its elements). The one reader of that layout. */
#define DAG_TDOT_MAX_AXES 16 /* per list: axis sets are bit masks in the builder */
typedef struct dag_tdot {
  int nl;              /* lists read: 4, or 5 with a permutation */
  int n[5];            /* lengths of dims_a, dims_b, cont_a, cont_b, perm (0 when absent) */
  const int64_t *l[5]; /* their elements (NULL when absent) */
} dag_tdot;
/* Returns 0; -1 when list t->nl + 1 has a length below 0, above DAG_TDOT_MAX_AXES or past
 * np; -2 when there are not 4 or 5 lists (t->nl read) or they do not end at np. Only the
 * layout is checked: the builder checks the lists against the operands. */
int dag_tdot_unpack(const int64_t *p, int np, dag_tdot *t);

/* TensorDot(a, b, ...) index tables: out[q] = sum_c a[abase[q] + aoff[c]] * b[bbase[q] +
 * boff[c]]. *tab (malloc'ed, caller frees) holds abase[dim], bbase[dim], aoff[nco],
 * boff[nco]. p/np are the node's parameters, da/db the operand dims. Returns 0, -1 on
 * malformed parameters, -2 when out of memory. */
int dag_tdot_tables(const int64_t *p, int np, int da, int db, int dim, int64_t **tab, int64_t *nco);

/* Value of an elementwise op row in double precision (used by the interpreter and folding). */
double dag_ew_eval(int op, double x, double y, double z, const int64_t *p);


/* Printing. names: optional, names[pos] is the alias of position pos (NULL entries print
 * Var(pos,dim,cat)); npos entries. Returns a malloc'ed string (caller frees), NULL when out
 * of memory. The canonical text (names NULL) parses back to the same DAG. Text longer than
 * DAG_PRINT_MAX (shared subtrees are printed once per use) is cut with "...". */
#define DAG_PRINT_MAX (1 << 20)
char *dag_print(const dag *d, uint32_t id, const char *const *names, int npos);
/* Canonical serialization of the DAG below id, linear in its size (nodes numbered in
 * post-order, shared nodes written once): equal structures give equal strings whatever order
 * they were built in. The cache key's formula part. malloc'ed, caller frees. */
char *dag_serialize(const dag *d, uint32_t id);
/* The inverse of dag_serialize: the records of text[0, len) interned into d as they are
 * (dag_intern: no dim rules, no rewriting), into *root (the last record). Checks what a
 * node needs to be safe to read: a known op of a kind the DAG stores (elementwise,
 * structural, leaf), at most DAG_MAX_KIDS children numbering earlier records, at most 255
 * parameters, a dim in range, leaves' parameters (Var position and category, RatCst in
 * lowest terms with a positive denominator, Cst a non-rational double). Whether a node's dim
 * follows from its children is the dim rules' business: rebuild through dag_make to check it
 * (fe_from_key does). Returns 0, or -1 with the dag error set ("serialized formula, record
 * N: ..."); text may be anything. */
int dag_deserialize(dag *d, const char *text, size_t len, uint32_t *root);
/* Graphviz picture of the DAG below id; malloc'ed, caller frees. */
char *dag_dot(const dag *d, uint32_t id, const char *const *names, int npos);

#endif
