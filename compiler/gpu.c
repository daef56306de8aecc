/* The thread-per-row kernel (see gpu.h for the ABI): one thread per output row; the
 * j-variables of blockDim.x consecutive j's are staged in shared memory by the block's
 * threads, then every thread runs the formula over the tile. The formula body and the
 * reduction steps are the CPU's (lower.c, kgen.c) with W = 1 lane. Index registers,
 * barriers, shared memory and entry points come from the target's kt_grid hooks (nvptx.c
 * for NVIDIA GPUs). */
#include "gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kgen.h"
#include "red.h"
#include "target.h"
#include "vmath.h"

#define B (K->L.bld)

enum { P_NROWS, P_J0, P_J1, P_NSLICE, P_PARTIAL, P_ARGS };
/* the ranges kernel's own parameters, before the arguments */
enum { PR_NROWS, PR_LOOKUP, PR_JR, PR_ARGS };

typedef struct gk {
  kb K;
  const kt_grid *grid;
  LLVMValueRef row[GPU_MAX_U], valid[GPU_MAX_U], by, nrows;
  LLVMValueRef out[2];
  LLVMValueRef partial;
  LLVMValueRef pbase; /* where put_partial writes the row's state (doubles) */
} gk;

static LLVMValueRef sreg(gk *G, kt_sreg r) {
  kb *K = &G->K;
  return LLVMBuildZExt(B, G->grid->sreg(K, r), K->i64, "");
}

/* Rows read global memory once (row-level nodes keep them in registers), j-variables the
 * shared tile, parameters global memory once. */
static LLVMValueRef load_var(lw *L, int pos, int cat, int c, int u) {
  gk *G = L->user;
  kb *K = &G->K;
  if (cat == CAT_J) {
    return kg_load(K, L->T, kg_gep(K, L->T, K->trow, kg_i64(K, K->tile_off[pos] + c)), kg_tsize(K));
  }
  LLVMValueRef at = kg_i64(K, c);
  if (cat == CAT_I) at = LLVMBuildAdd(B, LLVMBuildMul(B, G->row[u], kg_i64(K, K->p->args.dim[pos]), ""), at, "");
  return kg_load(K, L->T, kg_gep(K, L->T, K->arg[pos], at), kg_tsize(K));
}

/* The kernel's sinks: a row's outputs (kg_row_sink), or in partial mode its state, red.c's
 * layout of p->state doubles at G->pbase: in global memory for the combine kernel, in shared
 * memory for the block's first slice. */
static void put_partial(kb *K, const kg_sink *o, int kind, LLVMValueRef c, int u, LLVMValueRef lane,
                        LLVMValueRef v) {
  gk *G = (gk *)K;
  (void)o, (void)kind, (void)u, (void)lane; /* one row a thread; indices stored as doubles */
  kg_store(K, v, kg_gep(K, LLVMDoubleTypeInContext(K->L.C), G->pbase, c), 8);
}

/* The state of slot q (>= 0) of the slices of row block u of thread r, in shared memory. */
static LLVMValueRef slice_state(gk *G, LLVMValueRef q, LLVMValueRef R, LLVMValueRef r, int u) {
  kb *K = &G->K;
  LLVMValueRef at = LLVMBuildAdd(B, LLVMBuildMul(B, LLVMBuildAdd(B, LLVMBuildMul(B, q, R, ""), r, ""), kg_i64(K, K->U), ""),
                                 kg_i64(K, u), "");
  at = LLVMBuildMul(B, at, kg_i64(K, K->p->state), "");
  return kg_gep(K, LLVMDoubleTypeInContext(K->L.C), K->tile, at);
}

/* Stages the j-variables of j = t + r (when below jend) into tile row tid. */
static void stage_tile(gk *G, LLVMValueRef t, LLVMValueRef r, LLVMValueRef jend, LLVMValueRef tid) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  LLVMValueRef jj = LLVMBuildAdd(B, t, r, "");
  LLVMBasicBlockRef load_bb = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "stage");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "staged");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, jj, jend, ""), load_bb, done);
  LLVMPositionBuilderAtEnd(B, load_bb);
  for (int pos = 0; pos < p->args.n; pos++) {
    int dim = p->args.dim[pos];
    if (p->role[pos] != FE_RED) continue;
    LLVMValueRef src = kg_gep(K, K->L.T, K->arg[pos], LLVMBuildMul(B, jj, kg_i64(K, dim), ""));
    LLVMValueRef dst = kg_gep(K, K->L.T, K->tile,
                              LLVMBuildMul(B, tid, kg_i64(K, K->tile_width), ""));
    for (int c = 0; c < dim; c++) {
      LLVMValueRef v = kg_load(K, K->L.T, kg_gep(K, K->L.T, src, kg_i64(K, c)), kg_tsize(K));
      kg_store(K, v, kg_gep(K, K->L.T, dst, kg_i64(K, K->tile_off[pos] + c)), kg_tsize(K));
    }
  }
  LLVMBuildBr(B, done);
  LLVMPositionBuilderAtEnd(B, done);
}

/* Block = R threads x S slices (S = nslice, a power of two dividing blockDim): thread
 * tid = s * R + r reduces the U rows blockIdx.x * R U + r + u R over slice s of the block's
 * j-range, the slices' tiles side by side in shared memory; then the slices' states merge
 * in order through shared memory, so few rows still fill the block.
 * With lookup (the ranges kernel: params[P_LOOKUP], params[P_JR], S = 1, no j-split, so
 * params[P_J0 .. P_PARTIAL] are constants), the block's rows and its list of j-ranges come
 * from its lookup entry and a loop over the ranges wraps the tile loop. Without it, the code
 * is the dense kernel's alone: its registers and loops do not pay for ranges. */
static void build_body(gk *G, LLVMValueRef *params, LLVMValueRef lookup, LLVMValueRef jr) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  G->nrows = params[P_NROWS];
  G->partial = params[P_PARTIAL];
  for (int pos = 0; pos < p->args.n; pos++) K->arg[pos] = params[P_ARGS + pos];
  for (int o = 0; o < p->nout; o++) G->out[o] = params[P_ARGS + p->args.n + o];
  LLVMValueRef tid = sreg(G, KT_TID_X), bdim = sreg(G, KT_NTID_X), S = params[P_NSLICE];
  LLVMValueRef R = LLVMBuildUDiv(B, bdim, S, "rows"), r = LLVMBuildURem(B, tid, R, ""), s = LLVMBuildUDiv(B, tid, R, "");
  LLVMValueRef i, rend = G->nrows, ent[4];
  if (lookup) { /* entry (row start, row end, first range, end range) of the block */
    LLVMValueRef at = LLVMBuildMul(B, sreg(G, KT_CTAID_X), kg_i64(K, 4), "");
    for (int q = 0; q < 4; q++)
      ent[q] = kg_load(K, K->i64, kg_gep(K, K->i64, lookup, LLVMBuildAdd(B, at, kg_i64(K, q), "")), 8);
    i = LLVMBuildAdd(B, ent[0], r, "");
    rend = ent[1];
  } else {
    i = LLVMBuildAdd(B, LLVMBuildMul(B, sreg(G, KT_CTAID_X), LLVMBuildMul(B, R, kg_i64(K, K->U), ""), ""), r, "");
  }
  G->by = sreg(G, KT_CTAID_Y);
  LLVMValueRef gy = sreg(G, KT_NCTAID_Y);
  /* threads past the block's last row still stage tiles and meet the barriers; they compute
   * on the last row and write nothing */
  for (int u = 0; u < K->U; u++) {
    LLVMValueRef iu = LLVMBuildAdd(B, i, LLVMBuildMul(B, R, kg_i64(K, u), ""), "");
    G->valid[u] = LLVMBuildICmp(B, LLVMIntSLT, iu, rend, "");
    G->row[u] = LLVMBuildSelect(B, G->valid[u], iu, LLVMBuildSub(B, G->nrows, kg_i64(K, 1), ""), "");
  }
  LLVMValueRef one = kg_i64(K, 1);
  /* the block's chunk of [j0, j1) (blockIdx.y of gridDim.y), then this slice's */
  LLVMValueRef j0 = params[P_J0], j1 = params[P_J1];
  LLVMValueRef chunk = LLVMBuildSDiv(B, LLVMBuildAdd(B, LLVMBuildSub(B, j1, j0, ""), LLVMBuildSub(B, gy, one, ""), ""), gy, "");
  LLVMValueRef jb0 = kg_smin(K, LLVMBuildAdd(B, j0, LLVMBuildMul(B, G->by, chunk, ""), ""), j1);
  LLVMValueRef jb1 = kg_smin(K, LLVMBuildAdd(B, jb0, chunk, ""), j1);
  LLVMValueRef c = LLVMBuildSDiv(B, LLVMBuildAdd(B, LLVMBuildSub(B, jb1, jb0, ""), LLVMBuildSub(B, S, one, ""), ""), S, "");
  LLVMValueRef js0 = kg_smin(K, LLVMBuildAdd(B, jb0, LLVMBuildMul(B, s, c, ""), ""), jb1);
  LLVMValueRef js1 = kg_smin(K, LLVMBuildAdd(B, js0, c, ""), jb1);

  kg_state_alloc(K);
  kg_kheap_alloca(K);
  lw_level_prepare(&K->L, LV_P, 0);
  for (int u = 0; u < K->U; u++) {
    lw_level_prepare(&K->L, LV_I, u);
    kg_init(K, u);
  }
  kg_loop lr, lt, lk;
  if (lookup) { /* the block's ranges, one after the other: [js0, js1) is one, all rounds */
    LLVMValueRef q = kg_loop_begin(K, &lr, ent[2], ent[3]);
    LLVMValueRef at = LLVMBuildMul(B, q, kg_i64(K, 2), "");
    js0 = kg_load(K, K->i64, kg_gep(K, K->i64, jr, at), 8);
    js1 = kg_load(K, K->i64, kg_gep(K, K->i64, jr, LLVMBuildAdd(B, at, one, "")), 8);
    c = LLVMBuildSub(B, js1, js0, "");
  }
  /* every slice runs the same number of rounds (c / R), so all meet every barrier */
  LLVMValueRef t = kg_loop_begin(K, &lt, kg_i64(K, 0), c);
  LLVMValueRef jt0 = LLVMBuildAdd(B, js0, t, "");
  stage_tile(G, jt0, r, js1, tid);
  G->grid->barrier(K);
  /* the pair loop counts in 32 bits (n <= R) and walks the tile by pointer: less index
   * arithmetic per pair than 64-bit j's */
  LLVMValueRef n = LLVMBuildTrunc(B, kg_smin(K, R, LLVMBuildSub(B, js1, jt0, "")), K->i32, "");
  LLVMValueRef row0 = kg_gep(K, K->L.T, K->tile, LLVMBuildMul(B, LLVMBuildMul(B, s, R, ""), kg_i64(K, K->tile_width), ""));
  LLVMValueRef q = kg_loop_begin(K, &lk, LLVMConstInt(K->i32, 0, 0), n);
  lk.unroll = gpu_unroll(p);
  K->trow = kg_loop_ptr(K, &lk, K->L.T, row0, K->tile_width);
  K->j = K->jv = LLVMBuildAdd(B, jt0, LLVMBuildZExt(B, q, K->i64, ""), "");
  lw_level_prepare(&K->L, LV_J, 0);
  for (int u = 0; u < K->U; u++) {
    lw_level_prepare(&K->L, LV_IJ, u);
    LLVMValueRef *f = lw_vec(&K->L, p->f, u);
    if (f) kg_accumulate(K, u, f);
  }
  kg_loop_end(K, &lk, LLVMConstInt(K->i32, 1, 0));
  for (int u = 0; u < K->U && kg_needs_flush(p); u++) kg_flush_block(K, u);
  G->grid->barrier(K); /* the tile is overwritten next */
  kg_loop_end(K, &lt, R);
  if (lookup) kg_loop_end(K, &lr, one);

  kg_sink sp = {.put = put_partial, .partial = 1};
  /* The slices' states merge in log2(S) steps: at step h, slice s = (2k + 1) h leaves its
   * state in shared memory (slot s - 1, written once) and, after the barrier, slice 2k h
   * merges it into its own (later indices into earlier ones). */
  kg_loop lm;
  LLVMValueRef h = kg_loop_begin(K, &lm, one, S);
  LLVMValueRef rem = LLVMBuildURem(B, s, LLVMBuildShl(B, h, one, ""), "");
  LLVMBasicBlockRef put = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "put");
  LLVMBasicBlockRef wait = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "wait");
  LLVMBasicBlockRef take = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "take");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "next");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, rem, h, ""), put, wait);
  LLVMPositionBuilderAtEnd(B, put);
  for (int u = 0; u < K->U; u++) {
    G->pbase = slice_state(G, LLVMBuildSub(B, s, one, ""), R, r, u);
    kg_finalize(K, u, &sp);
  }
  LLVMBuildBr(B, wait);
  LLVMPositionBuilderAtEnd(B, wait);
  G->grid->barrier(K); /* every thread, every step: S is the launch's */
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, rem, kg_i64(K, 0), ""), take, next);
  LLVMPositionBuilderAtEnd(B, take);
  for (int u = 0; u < K->U; u++)
    kg_state_merge(K, u, slice_state(G, LLVMBuildSub(B, LLVMBuildAdd(B, s, h, ""), one, ""), R, r, u));
  LLVMBuildBr(B, next);
  LLVMPositionBuilderAtEnd(B, next);
  kg_loop_end(K, &lm, h); /* h doubles */
  LLVMBasicBlockRef out = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "out");
  LLVMBasicBlockRef other = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "other");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, s, kg_i64(K, 0), ""), out, other);
  LLVMPositionBuilderAtEnd(B, other);
  LLVMBuildRetVoid(B); /* slices 1.. are merged */

  LLVMPositionBuilderAtEnd(B, out);
  for (int u = 0; u < K->U; u++) {
    LLVMBasicBlockRef fin = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "finalize");
    LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "partial");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "done");
    LLVMBasicBlockRef write = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "write");
    LLVMBuildCondBr(B, G->valid[u], write, done);
    LLVMPositionBuilderAtEnd(B, write);
    LLVMBuildCondBr(B, LLVMBuildIsNull(B, G->partial, ""), fin, part);
    LLVMPositionBuilderAtEnd(B, fin);
    kg_sink sf = kg_row_sink(G->out, G->row[u]);
    kg_finalize(K, u, &sf);
    LLVMBuildBr(B, done);
    LLVMPositionBuilderAtEnd(B, part);
    LLVMValueRef at = LLVMBuildMul(B, LLVMBuildAdd(B, LLVMBuildMul(B, G->by, G->nrows, ""), G->row[u], ""),
                                   kg_i64(K, p->state), "");
    G->pbase = kg_gep(K, LLVMDoubleTypeInContext(K->L.C), G->partial, at);
    kg_finalize(K, u, &sp);
    LLVMBuildBr(B, done);
    LLVMPositionBuilderAtEnd(B, done);
  }
  LLVMBuildRetVoid(B);
  kg_state_free(K);
}

/* The ranges kernel (gpu.h): fname GPU_RANGES_SUFFIX (i64 nrows, i64 *lookup, i64 *jr, args,
 * outs), the dense kernel's body with one slice, no j-split and the ranges' rows and j's. */
static void build_ranges(gk *G, const char *fname, kerr *e) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  /* lowering keeps each node's values, which belong to the dense kernel's function: start
   * afresh */
  lw_free(&K->L);
  if (lw_init(&K->L, p->d, p->f, e)) return;
  LLVMTypeRef g = LLVMPointerTypeInContext(K->L.C, G->grid->global_as);
  int np = PR_ARGS + p->args.n + p->nout, ns = np + (G->grid->thread_state != 0);
  LLVMTypeRef ps[PR_ARGS + FE_MAX_ARGS + 3];
  for (int q = 0; q < ns; q++) ps[q] = q == PR_NROWS ? K->i64 : q < np ? g : K->ptr;
  char name[256];
  snprintf(name, sizeof name, "%s%s", fname, GPU_RANGES_SUFFIX);
  K->fn = LLVMAddFunction(K->L.M, name, LLVMFunctionType(LLVMVoidTypeInContext(K->L.C), ps, (unsigned)ns, 0));
  LLVMValueRef params[PR_ARGS + FE_MAX_ARGS + 3], full[P_ARGS + FE_MAX_ARGS + 2];
  LLVMGetParams(K->fn, params);
  if (G->grid->thread_state) K->gstate = params[np];
  LLVMPositionBuilderAtEnd(B, LLVMAppendBasicBlockInContext(K->L.C, K->fn, "entry"));
  K->tile = G->grid->shared(K, K->L.T);
  full[P_NROWS] = params[PR_NROWS];
  full[P_J0] = full[P_J1] = kg_i64(K, 0);
  full[P_NSLICE] = kg_i64(K, 1);
  full[P_PARTIAL] = LLVMConstPointerNull(g);
  for (int q = PR_ARGS; q < np; q++) full[P_ARGS + q - PR_ARGS] = params[q];
  build_body(G, full, params[PR_LOOKUP], params[PR_JR]);
  G->grid->entry(K, K->fn);
}

/* The second kernel of a j-split: keops_combine(i64 nrows, i64 nsplit, double *partial,
 * out_0 [, out_1]) merges each row's nsplit states in order and writes its outputs. */
static LLVMValueRef build_combine(gk *G) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  kg_combine_types(K);
  LLVMTypeRef g = LLVMPointerTypeInContext(K->L.C, G->grid->global_as);
  LLVMTypeRef ps[3 + 2 + 1] = {K->i64, K->i64, g, g, g, g};
  unsigned np = (unsigned)(3 + p->nout);
  if (G->grid->thread_state) ps[np++] = K->ptr;
  K->fn = LLVMAddFunction(K->L.M, "keops_combine", LLVMFunctionType(LLVMVoidTypeInContext(K->L.C), ps, np, 0));
  if (G->grid->thread_state) K->gstate = LLVMGetParam(K->fn, np - 1);
  LLVMPositionBuilderAtEnd(B, LLVMAppendBasicBlockInContext(K->L.C, K->fn, "entry"));
  LLVMValueRef nrows = LLVMGetParam(K->fn, 0), outs[2] = {NULL, NULL};
  for (int o = 0; o < p->nout; o++) outs[o] = LLVMGetParam(K->fn, (unsigned)(3 + o));
  LLVMValueRef i = LLVMBuildAdd(B, LLVMBuildMul(B, sreg(G, KT_CTAID_X), sreg(G, KT_NTID_X), ""),
                                sreg(G, KT_TID_X), "");
  LLVMBasicBlockRef work = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "row");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "done");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, i, nrows, ""), work, done);
  LLVMPositionBuilderAtEnd(B, work);
  kg_state_alloc(K);
  kg_kheap_alloca(K);
  kg_sink out = kg_row_sink(outs, i);
  kg_combine_row(K, i, nrows, LLVMGetParam(K->fn, 1), LLVMGetParam(K->fn, 2), &out);
  LLVMBuildBr(B, done);
  LLVMPositionBuilderAtEnd(B, done);
  LLVMBuildRetVoid(B);
  kg_state_free(K);
  return K->fn;
}

LLVMModuleRef gpu_build(LLVMContextRef C, const fe_program *p, const kt_target *t,
                        const char *fname, kerr *e) {
  gk G;
  memset(&G, 0, sizeof G);
  G.grid = t->isa->grid;
  kb *K = &G.K;
  K->p = p;
  K->L.C = C;
  K->L.M = LLVMModuleCreateWithNameInContext(fname, C);
  K->L.bld = LLVMCreateBuilderInContext(C);
  K->L.user = &G;
  K->L.load_var = load_var;
  kg_types(K, 1, 1, gpu_rows_per_thread(p));
  /* fast_math only where the target has the shortcut it selects */
  vm_set_math(K->L.M, t->isa->math | (p->fast_math && (t->isa->math & VM_MATH_EX2_APPROX) ? VM_MATH_FAST : 0));
  /* K-min heaps live in each thread's local memory, which the driver reserves for every
   * resident thread of the device: keep it small */
  int64_t heap = kg_kheap_entries(p, 1, K->U) * (kg_tsize(K) + 8);
  if (heap > GPU_MAX_HEAP)
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED,
             "%s with K = %d over %d components needs %lld bytes of heap per row, more than the "
             "GPU kernel's %d: use the CPU backend, or a smaller K", p->red->name, p->k, p->fdim,
             (long long)heap, GPU_MAX_HEAP);
  if (e->status != KEOPS_OK || lw_init(&K->L, p->d, p->f, e)) {
    LLVMDisposeBuilder(K->L.bld);
    LLVMDisposeModule(K->L.M);
    return NULL;
  }
  for (int pos = 0, off = 0; pos < p->args.n; pos++)
    if (p->role[pos] == FE_RED) K->tile_off[pos] = off, off += p->args.dim[pos];
  K->tile_width = p->red_width;
  LLVMTypeRef g = LLVMPointerTypeInContext(C, G.grid->global_as);
  int np = P_ARGS + p->args.n + p->nout, ns = np + (G.grid->thread_state != 0);
  LLVMTypeRef *ps = malloc(sizeof *ps * (size_t)ns);
  for (int q = 0; q < ns; q++) ps[q] = q < P_PARTIAL ? K->i64 : q < np ? g : K->ptr;
  K->fn = LLVMAddFunction(K->L.M, fname, LLVMFunctionType(LLVMVoidTypeInContext(C), ps, (unsigned)ns, 0));
  free(ps);
  LLVMValueRef *params = malloc(sizeof *params * (size_t)ns);
  LLVMGetParams(K->fn, params);
  if (G.grid->thread_state) K->gstate = params[np];
  LLVMPositionBuilderAtEnd(K->L.bld, LLVMAppendBasicBlockInContext(C, K->fn, "entry"));
  K->tile = G.grid->shared(K, K->L.T);
  build_body(&G, params, NULL, NULL);
  free(params);
  G.grid->entry(K, K->fn);
  build_ranges(&G, fname, e);
  LLVMValueRef comb = build_combine(&G);
  G.grid->entry(K, comb);
  LLVMModuleRef m = K->L.M;
  LLVMDisposeBuilder(K->L.bld);
  lw_free(&K->L);
  if (e->status != KEOPS_OK) {
    LLVMDisposeModule(m);
    return NULL;
  }
  return m;
}

int gpu_unroll(const fe_program *p) {
  int64_t n = GPU_UNROLL_SIZE / (p->size * gpu_rows_per_thread(p)), u = 1;
  while (u * 2 <= n && u < 8) u *= 2;
  return (int)u;
}

int gpu_rows_per_thread(const fe_program *p) {
  return !kg_kheap(p) && p->state <= GPU_U2_STATE && p->size <= GPU_U2_SIZE ? 2 : 1;
}

int gpu_pairs_per_iteration(const fe_program *p) { return gpu_unroll(p) * gpu_rows_per_thread(p); }
