/* DAG nodes -> LLVM IR values, backend-neutral. A node of dim D is D values, each either a
 * scalar of the element type T or a vector <W x T> whose lanes are W output rows.
 *
 * Every node has a level, the loop it varies in: LV_P (parameters and constants: computed
 * once per kernel call), LV_I (output row only: once per row block), LV_J (reduced index
 * only: once per j, as scalars, then broadcast), LV_IJ (per pair, as vectors). The kernel
 * builders (cpu.c, gpu.c) call lw_level_prepare at the top of each loop body, which emits
 * that level's nodes in dependency order, so each value is computed in the block that
 * dominates all its uses. */
#ifndef KEOPS_LOWER_H
#define KEOPS_LOWER_H

#include <llvm-c/Core.h>

#include "dag.h"

enum { LV_P = 0, LV_I = 1, LV_J = 2, LV_IJ = 3 };

#define LW_MAX_U 8 /* row blocks held in registers */

typedef struct lw {
  LLVMContextRef C;
  LLVMModuleRef M;
  LLVMBuilderRef bld;
  LLVMTypeRef T;  /* float or double */
  int reload_rows; /* row variables are read where used (CPU: from an L1 buffer), not
                      preloaded with the row-level nodes (GPU: into registers) */
  LLVMTypeRef VT; /* <W x T>, or T when W == 1 */
  int W;
  const dag *d;
  uint32_t root;
  uint8_t *level;   /* per node id, LV_*; 0xff for nodes not below root */
  uint8_t *needvec; /* per node id: read as vectors (by a vector node or the reduction) */
  /* values per node id: scalars of levels P and J, their broadcasts, vectors of levels I and
   * IJ for each row block u */
  LLVMValueRef **ps, **pv, **js, **jv, **iv[LW_MAX_U], **ijv[LW_MAX_U];
  /* how variables are read: the kernel builder provides, per level, a callback giving
   * component c of variable `pos` (a scalar for P/J, a vector of row block u for I) */
  LLVMValueRef (*load_var)(struct lw *L, int pos, int cat, int c, int u);
  void *user;
  kerr *err;
} lw;

/* Prepares L for the formula below root. Returns 0, or -1 with err set (out of memory). */
int lw_init(lw *L, const dag *d, uint32_t root, kerr *err);
/* Frees the per-node tables lw_init made (a second function of the module starts afresh with
 * lw_init); the module, builder, types and callbacks stay. */
void lw_free(lw *L);

/* Emits the nodes of `level` (for vectors: of row block u) at the builder's position; for
 * LV_J it also drops the broadcasts of the previous j. */
void lw_level_prepare(lw *L, int level, int u);

/* The dim values of node id as vectors of row block u (broadcasting scalar levels). */
LLVMValueRef *lw_vec(lw *L, uint32_t id, int u);

/* Helpers shared with the kernel builders. */
LLVMValueRef lw_const(lw *L, double v, int vec); /* T or VT constant */
LLVMValueRef lw_splat(lw *L, LLVMValueRef s);    /* scalar T -> VT */
LLVMValueRef lw_contract(LLVMValueRef v); /* marks an fadd/fmul contractible into an FMA */
LLVMValueRef lw_intrinsic(lw *L, const char *name, LLVMValueRef *args, int n);
LLVMValueRef lw_select_cmp(lw *L, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b,
                           LLVMValueRef t, LLVMValueRef f); /* (a p b) ? t : f */

#endif
