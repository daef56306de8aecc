/* Shared by the CPU (cpu.c) and GPU (gpu.c) kernel builders: the builder state, IR helpers
 * and the reduction steps (kgen.c, calling the row's family: kg_family, red_<family>.c). */
#ifndef KEOPS_KGEN_H
#define KEOPS_KGEN_H

#include "front.h"
#include "lower.h"
#include "red.h"

typedef struct kg_loop {
  LLVMBasicBlockRef pre, head, exit;
  LLVMValueRef iv;
  LLVMValueRef ptr;  /* kg_loop_ptr's pointer, or NULL */
  LLVMTypeRef ptr_elem;
  int64_t ptr_step;
  int unroll; /* set after kg_loop_begin (which clears it): > 0, kg_loop_end asks LLVM to
                 unroll the loop this many times and no more (NVPTX then marks the unrolled
                 loop nounroll for ptxas) */
} kg_loop;

typedef struct kb {
  lw L;
  const fe_program *p;
  LLVMValueRef fn;
  LLVMTypeRef i1, i32, i64, ptr, AT, AVT, IVT, BVT; /* acc elem, acc vec, index vec, bool vec */
  int W, U, WU, D, E;    /* lanes, blocks, rows per block, formula components, LSE weights */
  LLVMValueRef arg[FE_MAX_ARGS]; /* argument pointers */
  LLVMValueRef rowbuf[FE_MAX_ARGS]; /* CPU: the row block's SoA buffers */
  LLVMValueRef tile;     /* GPU: the shared-memory tile of j-variables */
  LLVMValueRef gstate;   /* GPU: the thread-state argument (kt_grid.thread_state) */
  int tile_off[FE_MAX_ARGS], tile_width; /* GPU: offsets of the j-variables in a tile row */
  LLVMValueRef j, jv;    /* current reduced index, as i64 and broadcast */
  LLVMValueRef trow;     /* GPU: the current j's row of the tile */
  int nslot;             /* state vectors per row block */
  LLVMValueRef *jidx;    /* merging states: the index of each component (else jv) */
  int f_acc;             /* merging states: values already in the accumulator type */
  LLVMValueRef *a[LW_MAX_U], *x[LW_MAX_U], *ix[LW_MAX_U]; /* main, auxiliary, index slots */
  LLVMValueRef hv, hi;   /* K-min heaps (kg_kheap): values and indices, set by the builder */
} kb;

/* Above this many K-min slots per row (K * dim), the K best of each row and component are
 * kept in a binary heap in memory (red_kmin.c) instead of an unrolled sorted network. */
#define KG_KMIN_UNROLL 16
/* The size of a program's unrolled kernel: scalar operations per pair (each node's dim plus
 * its operands') plus 32 per state entry updated for each pair. Compile time grows with it,
 * faster than linearly (LLVM's instruction scheduling of large blocks), so the JIT refuses
 * programs above KG_MAX_SIZE: a 784-dim Gaussian (6343) compiles in ~1 s on a 2-core
 * Sapphire Rapids VM, a Sum 128 outputs wide (8320) is refused. */
#define KG_MAX_SIZE 8192
/* What the size misses, e.g. a long chain of Sin (each ~60 instructions), is caught after
 * optimisation: kernels of more LLVM instructions are refused (150 nested Sin: 9071, 1.4 s;
 * the 784-dim Gaussian 11939, 1.3 s; the seed's gradient 439). */
#define KG_MAX_INSTS 24000
int64_t kg_size(const fe_program *p); /* INT64_MAX when out of memory; fe_build keeps it in p->size */
/* 0, or -1 with e set (KEOPS_ERROR_UNSUPPORTED) when p is too large for the JIT; kc_compile
 * checks it for every target. */
int kg_check_size(const fe_program *p, kerr *e);
int kg_kheap(const fe_program *p);
/* Heap entries of a program (per value and index array): one heap of K per component and
 * lane of each of u row blocks of w lanes. */
int64_t kg_kheap_entries(const fe_program *p, int w, int u);

/* Where finalize writes: column c (an i64 value) of row block u, values (KG_VAL: in the
 * dtype, or doubles in partial mode) or indices (KG_IDX, i64); v holds every lane of the
 * block, or, with lane set (an i64 value), the scalar of that lane only. */
enum { KG_VAL, KG_IDX };
typedef struct kg_sink {
  void (*put)(kb *K, const struct kg_sink *s, int kind, LLVMValueRef c, int u, LLVMValueRef lane,
              LLVMValueRef v);
  LLVMValueRef val, idx; /* for the builder's put */
  LLVMValueRef row, out[2]; /* idem */
  int partial;           /* write red.c's state as doubles instead of the outputs */
} kg_sink;

/* The IR steps of a reduction family, defined with its C steps (red_<family>.c) and called
 * by the kg_* steps below. Per row block u, over the slots K->a (values), K->x (auxiliary)
 * and K->ix (indices) that kg_state_alloc made from the family's layout. */
typedef struct kg_family {
  int (*slots)(kb *K);                  /* state vectors per row block */
  int64_t (*cost)(const fe_program *p); /* state entries updated per pair (kg_size) */
  void (*init)(kb *K, int u);
  void (*accumulate)(kb *K, int u, LLVMValueRef *f); /* see kg_accumulate */
  void (*finalize)(kb *K, int u, const kg_sink *o);  /* the user's outputs */
  void (*write)(kb *K, int u, const kg_sink *o);     /* o->partial: red.c's double state */
  void (*load)(kb *K, int u, LLVMValueRef base);     /* see kg_state_load */
  /* kg_state_merge: f has room for `slots` values, ix for D indices; a value that reaches
   * accumulate through f is taken as already in the accumulator type, with index ix[d]. */
  void (*merge)(kb *K, int u, LLVMValueRef base, LLVMValueRef *f, LLVMValueRef *ix);
  /* Optional, both or neither: the builders cut the j loop in tiles and flush at the end of
   * each where tiled(p). */
  int (*tiled)(const fe_program *p);
  void (*flush)(kb *K, int u);
} kg_family;

/* The required IR steps, by name: a missing one (or NULL) is a compile error. */
#define KG_STEPS(sl, co, in, ac, fi, wr, lo, me)                                                   \
  .slots = &(sl), .cost = &(co), .init = &(in), .accumulate = &(ac), .finalize = &(fi),           \
  .write = &(wr), .load = &(lo), .merge = &(me)

LLVMValueRef kg_i64(kb *K, int64_t v);
LLVMValueRef kg_alloca(kb *K, LLVMTypeRef t, int64_t n); /* in the entry block */
LLVMValueRef kg_loop_begin(kb *K, kg_loop *lp, LLVMValueRef start, LLVMValueRef end);
void kg_loop_end(kb *K, kg_loop *lp, LLVMValueRef step);
/* A second induction variable of the loop lp (called inside it, at most once): a pointer
 * that starts at `start` and advances `step` elements of `elem` per iteration. */
LLVMValueRef kg_loop_ptr(kb *K, kg_loop *lp, LLVMTypeRef elem, LLVMValueRef start, int64_t step);
LLVMValueRef kg_smin(kb *K, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kg_gep(kb *K, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef kg_load(kb *K, LLVMTypeRef t, LLVMValueRef ptr, unsigned align);
void kg_store(kb *K, LLVMValueRef v, LLVMValueRef ptr, unsigned align);
unsigned kg_tsize(kb *K);
LLVMValueRef kg_splat(kb *K, LLVMTypeRef vt, LLVMValueRef s);

/* Types for the program's dtype with w32 / w64 lanes and u row blocks. */
void kg_types(kb *K, int w32, int w64, int u); /* and D, E from the program */
int kg_slots(kb *K);
void kg_state_alloc(kb *K); /* the state slots, as allocas */
void kg_state_free(kb *K);
void kg_kheap_alloca(kb *K); /* K-min heaps as allocas (GPU: local memory), when kg_kheap */
void kg_init(kb *K, int u);
void kg_accumulate(kb *K, int u, LLVMValueRef *f); /* K->jv must hold the current index */
/* Whether the builders must cut the j loop in tiles and call kg_flush_block after each. */
int kg_needs_flush(const fe_program *p);
void kg_flush_block(kb *K, int u);
void kg_finalize(kb *K, int u, const kg_sink *o);
/* Sets "target-cpu" / "target-features" (and key = val when key is not NULL) and nounwind on
 * every function defined in m, so every function is compiled for the same ISA. */
void kg_target_attrs(LLVMModuleRef m, const char *cpu, const char *features, const char *key,
                     const char *val);
/* red.c's double state at base (W = 1): load into the slots / merge a state of later
 * indices into them. */
void kg_state_load(kb *K, int u, LLVMValueRef base);
void kg_state_merge(kb *K, int u, LLVMValueRef base);

/* ---- for the families' IR steps (red_<family>.c) ------------------------------------ */

LLVMValueRef kg_ld(kb *K, LLVMValueRef slot);
void kg_st(kb *K, LLVMValueRef slot, LLVMValueRef v);
LLVMValueRef kg_aconst(kb *K, double v); /* of the accumulator vector type */
LLVMValueRef kg_iconst(kb *K, int64_t v); /* of the index vector type */
LLVMValueRef kg_to_acc(kb *K, LLVMValueRef v);   /* a formula value, in the accumulator type */
LLVMValueRef kg_from_acc(kb *K, LLVMValueRef v); /* an accumulator, in the dtype */
LLVMValueRef kg_to_double(kb *K, LLVMValueRef v);
/* The index a value enters with: the current j, or (merging states) the state's own. */
LLVMValueRef kg_index_of(kb *K, int d);
/* Entry c (int, or an i64 value for _at) of the double state at base, converted to t. */
LLVMValueRef kg_state_entry(kb *K, LLVMValueRef base, int c, LLVMTypeRef t);
LLVMValueRef kg_state_entry_at(kb *K, LLVMValueRef base, LLVMValueRef c, LLVMTypeRef t);
red_layout kg_layout(const fe_program *p);
/* The layout's slots in registers <-> red.c's double state, for families whose slots are
 * their whole state. */
void kg_slots_load(kb *K, int u, LLVMValueRef base);
void kg_slots_write(kb *K, int u, const kg_sink *o);
/* Slots of (value, index) (MINMAX, KMIN): init to empty; x enters the slot (v, i) when it is
 * better, or the slot is empty and x is a number; the row's outputs from the slots. */
void kg_pair_init(kb *K, int u);
LLVMValueRef kg_takes(kb *K, LLVMValueRef x, LLVMValueRef v, LLVMValueRef i);
void kg_pair_finalize(kb *K, int u, const kg_sink *o);
LLVMValueRef kg_any_lane(kb *K, LLVMValueRef c); /* an i1 vector has a set lane */

/* The j-split's second step, one skeleton for every target (combine.c). A split's kernel
 * leaves each row's state, in red.c's double layout of p->state doubles, at
 * partial + (s * nrows + row) * state for split s; kg_combine_row merges splits 0 .. nsplit-1
 * of `row` in order and finalizes into row `row` of the outputs (kg_row_sink). */
void kg_combine_row(kb *K, LLVMValueRef row, LLVMValueRef nrows, LLVMValueRef nsplit,
                    LLVMValueRef partial, const kg_sink *out);
/* The combine step's types (before kg_state_alloc): one row, one lane, and accumulators in
 * double whatever the dtype, since the partial states are doubles (float32 partial sums
 * rounded to float before they add would lose what the split kept). */
void kg_combine_types(kb *K);
/* A sink writing finalized values to row `row` of the user's outputs outs[0] (and outs[1]
 * when the reduction has two; outs has two entries). */
kg_sink kg_row_sink(const LLVMValueRef *outs, LLVMValueRef row);

#endif
