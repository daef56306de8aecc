/* The CPU kernel: explicit vector IR with lanes across output rows (see cpu.h for the ABI).
 *
 *   entry:    argument pointers, parameter-level nodes, state and row buffers (allocas)
 *   for each block of W*U rows:
 *     gather the block's row variables into SoA buffers (rows past i1 repeat the last row,
 *     so every lane computes on real data), row-level nodes, init the states
 *     for j (in tiles for block summation): j-level nodes as scalars, broadcast; pair-level
 *       nodes as vectors for each of the U row blocks; accumulate
 *     finalize (or convert to red.c's double state) into SoA buffers, scatter the valid rows
 *
 * States live in allocas that SROA turns into registers. The reduction steps follow red.c's
 * definitions (state layouts, neutral elements, ties, NaN rules) exactly, with one
 * difference of schedule: block summation flushes every 256 terms (a fixed tile) where the
 * interpreter flushes every ceil(sqrt(n)); both bound the error by O(block + n/block). */
#include "cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kgen.h"
#include "red.h"
#include "vmath.h"

#define B (K->L.bld)

/* Component c of variable pos: rows read their SoA buffer, j-variables one scalar per j,
 * parameters one scalar per call. */
static LLVMValueRef load_var(lw *L, int pos, int cat, int c, int u) {
  kb *K = L->user;
  int dim = K->p->args.dim[pos];
  if (cat == CAT_I) {
    LLVMValueRef at = kg_i64(K, (int64_t)c * K->WU + (int64_t)u * K->W);
    return kg_load(K, L->VT, kg_gep(K, L->T, K->rowbuf[pos], at), kg_tsize(K));
  }
  LLVMValueRef at = kg_i64(K, c);
  if (cat == CAT_J) at = LLVMBuildAdd(B, LLVMBuildMul(B, K->j, kg_i64(K, dim), ""), at, "");
  return kg_load(K, L->T, kg_gep(K, L->T, K->arg[pos], at), kg_tsize(K));
}

/* Wider copies than this loop over their columns: unrolled, they make basic blocks whose
 * instruction scheduling costs grow quadratically (a 1000-column output took 45 s). */
#define COPY_UNROLL 32

/* Copies the block's rows [ib, ib + n) of every row variable into its SoA buffer. */
static void gather_rows(kb *K, LLVMValueRef ib, LLVMValueRef n) {
  kg_loop lp, lc;
  LLVMValueRef r = kg_loop_begin(K, &lp, kg_i64(K, 0), kg_i64(K, K->WU));
  LLVMValueRef last = LLVMBuildSub(B, n, kg_i64(K, 1), "");
  LLVMValueRef row = LLVMBuildAdd(B, ib, kg_smin(K, r, last), "");
  for (int pos = 0; pos < K->p->args.n; pos++) {
    if (!K->rowbuf[pos]) continue;
    int dim = K->p->args.dim[pos], unroll = dim <= COPY_UNROLL;
    LLVMValueRef src = kg_gep(K, K->L.T, K->arg[pos], LLVMBuildMul(B, row, kg_i64(K, dim), ""));
    LLVMValueRef cl = unroll ? NULL : kg_loop_begin(K, &lc, kg_i64(K, 0), kg_i64(K, dim));
    for (int c = 0; c < (unroll ? dim : 1); c++) {
      LLVMValueRef cc = unroll ? kg_i64(K, c) : cl;
      LLVMValueRef v = kg_load(K, K->L.T, kg_gep(K, K->L.T, src, cc), kg_tsize(K));
      LLVMValueRef at = LLVMBuildAdd(B, r, LLVMBuildMul(B, cc, kg_i64(K, K->WU), ""), "");
      kg_store(K, v, kg_gep(K, K->L.T, K->rowbuf[pos], at), kg_tsize(K));
    }
    if (!unroll) kg_loop_end(K, &lc, kg_i64(K, 1));
  }
  kg_loop_end(K, &lp, kg_i64(K, 1));
}

/* Writes rows [0, n) of an SoA buffer (width columns of type t) to dst rows ib0 + r. */
static void scatter_rows(kb *K, LLVMValueRef soa, LLVMTypeRef t, unsigned align, int width,
                         LLVMValueRef dst, LLVMValueRef row0, LLVMValueRef n) {
  kg_loop lp, lc;
  int unroll = width <= COPY_UNROLL;
  LLVMValueRef r = kg_loop_begin(K, &lp, kg_i64(K, 0), n);
  LLVMValueRef out = kg_gep(K, t, dst, LLVMBuildMul(B, LLVMBuildAdd(B, row0, r, ""), kg_i64(K, width), ""));
  LLVMValueRef cl = unroll ? NULL : kg_loop_begin(K, &lc, kg_i64(K, 0), kg_i64(K, width));
  for (int c = 0; c < (unroll ? width : 1); c++) {
    LLVMValueRef cc = unroll ? kg_i64(K, c) : cl;
    LLVMValueRef at = LLVMBuildAdd(B, r, LLVMBuildMul(B, cc, kg_i64(K, K->WU), ""), "");
    kg_store(K, kg_load(K, t, kg_gep(K, t, soa, at), align), kg_gep(K, t, out, cc), align);
  }
  if (!unroll) kg_loop_end(K, &lc, kg_i64(K, 1));
  kg_loop_end(K, &lp, kg_i64(K, 1));
}

/* Finalize writes row block u's column c into the SoA buffer of its kind. */
static void soa_put(kb *K, const kg_sink *o, int kind, LLVMValueRef c, int u, LLVMValueRef lane,
                    LLVMValueRef v) {
  LLVMTypeRef et = kind == KG_IDX ? K->i64 : o->partial ? LLVMDoubleTypeInContext(K->L.C) : K->L.T;
  LLVMValueRef at = LLVMBuildAdd(B, LLVMBuildMul(B, c, kg_i64(K, K->WU), ""), kg_i64(K, (int64_t)u * K->W), "");
  if (lane) at = LLVMBuildAdd(B, at, lane, "");
  kg_store(K, v, kg_gep(K, et, kind == KG_IDX ? o->idx : o->val, at),
           LLVMGetTypeKind(et) == LLVMFloatTypeKind ? 4 : 8);
}

/* ---- scratch memory ------------------------------------------------------------------------ */

enum { SC_HV, SC_HI, SC_FVAL, SC_FIDX, SC_PART, SC_N }; /* heaps, finalize and partial buffers */

/* The scratch areas of the kernel (combine = 0) or its combine step, 64-byte aligned. */
static size_t scratch_layout(const fe_program *p, const kt_target *t, int combine, size_t off[SC_N]) {
  memset(off, 0, sizeof(size_t) * SC_N);
  if (!kg_kheap(p)) return 0;
  int f64 = p->dtype == KEOPS_FLOAT64, w = combine ? 1 : kt_lanes(t, p->dtype), u = combine ? 1 : t->isa->u;
  size_t ts = f64 ? 8 : 4, e = (size_t)kg_kheap_entries(p, w, u), rows = (size_t)w * (size_t)u;
  size_t width = combine ? 0 : (size_t)p->out_dim[0];
  size_t nstate = combine ? 0 : (size_t)p->state;
  size_t sz[SC_N] = {e * ts, e * 8, width * rows * ts, width * rows * 8, nstate * rows * 8};
  size_t at = 0;
  for (int a = 0; a < SC_N; a++) {
    off[a] = at;
    at += (sz[a] + 63) & ~(size_t)63;
  }
  return at;
}

size_t cpu_scratch_bytes(const fe_program *p, const kt_target *t, int combine) {
  size_t off[SC_N];
  return scratch_layout(p, t, combine, off);
}

static LLVMValueRef scratch_at(kb *K, LLVMValueRef scratch, size_t off) {
  LLVMTypeRef i8 = LLVMInt8TypeInContext(K->L.C);
  return kg_gep(K, i8, scratch, kg_i64(K, (int64_t)off));
}

/* ---- the kernel -------------------------------------------------------------------------- */

static void j_body(kb *K, LLVMValueRef j) {
  K->j = j;
  K->jv = kg_splat(K, K->IVT, j);
  lw_level_prepare(&K->L, LV_J, 0);
  for (int u = 0; u < K->U; u++) {
    lw_level_prepare(&K->L, LV_IJ, u);
    LLVMValueRef *f = lw_vec(&K->L, K->p->f, u);
    if (f) kg_accumulate(K, u, f);
  }
}

/* The reduced-index kg_loop, tiled for block summation. */
static void j_loops(kb *K, LLVMValueRef j0, LLVMValueRef j1) {
  if (!kg_needs_flush(K->p)) {
    kg_loop lj;
    j_body(K, kg_loop_begin(K, &lj, j0, j1));
    kg_loop_end(K, &lj, kg_i64(K, 1));
    return;
  }
  /* tiles of 256 terms: the partial sums stay small relative to their terms */
  const int64_t tile = 256;
  kg_loop lt, lj;
  LLVMValueRef t = kg_loop_begin(K, &lt, j0, j1);
  LLVMValueRef tend = kg_smin(K, LLVMBuildAdd(B, t, kg_i64(K, tile), ""), j1);
  j_body(K, kg_loop_begin(K, &lj, t, tend));
  kg_loop_end(K, &lj, kg_i64(K, 1));
  for (int u = 0; u < K->U; u++) kg_flush_block(K, u);
  kg_loop_end(K, &lt, kg_i64(K, tile));
}


static void build_body(kb *K, LLVMValueRef *params, const kt_target *t) {
  const fe_program *p = K->p;
  LLVMValueRef i0 = params[0], i1 = params[1], jr = params[2], njr = params[3];
  LLVMValueRef args = params[4], outs = params[5], partial = params[6], scratch = params[7];
  for (int pos = 0; pos < p->args.n; pos++) {
    K->arg[pos] = kg_load(K, K->ptr, kg_gep(K, K->ptr, args, kg_i64(K, pos)), 8);
    if (p->role[pos] == FE_ROW) K->rowbuf[pos] = kg_alloca(K, K->L.T, (int64_t)p->args.dim[pos] * K->WU);
  }
  kg_state_alloc(K);
  int nstate = p->state, width = p->out_dim[0];
  kg_sink fin = {.put = soa_put}, part = {.put = soa_put, .partial = 1};
  size_t off[SC_N];
  if (scratch_layout(p, t, 0, off)) { /* K-min heaps: sizes grow with K, off the stack */
    K->hv = scratch_at(K, scratch, off[SC_HV]);
    K->hi = scratch_at(K, scratch, off[SC_HI]);
    fin.val = scratch_at(K, scratch, off[SC_FVAL]);
    fin.idx = scratch_at(K, scratch, off[SC_FIDX]);
    part.val = scratch_at(K, scratch, off[SC_PART]);
  } else {
    fin.val = kg_alloca(K, K->L.T, (int64_t)width * K->WU);
    fin.idx = kg_alloca(K, K->i64, (int64_t)width * K->WU);
    part.val = kg_alloca(K, LLVMDoubleTypeInContext(K->L.C), (int64_t)nstate * K->WU);
  }
  lw_level_prepare(&K->L, LV_P, 0);

  kg_loop li;
  LLVMValueRef ib = kg_loop_begin(K, &li, i0, i1);
  LLVMValueRef n = kg_smin(K, LLVMBuildSub(B, i1, ib, ""), kg_i64(K, K->WU));
  gather_rows(K, ib, n);
  for (int u = 0; u < K->U; u++) {
    lw_level_prepare(&K->L, LV_I, u);
    kg_init(K, u);
  }
  kg_loop lr; /* the row block's index ranges, in order */
  LLVMValueRef at = kg_gep(K, K->i64, jr, LLVMBuildShl(B, kg_loop_begin(K, &lr, kg_i64(K, 0), njr), kg_i64(K, 1), ""));
  j_loops(K, kg_load(K, K->i64, at, 8), kg_load(K, K->i64, kg_gep(K, K->i64, at, kg_i64(K, 1)), 8));
  kg_loop_end(K, &lr, kg_i64(K, 1));
  LLVMBasicBlockRef tofin = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "finalize");
  LLVMBasicBlockRef topart = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "partial");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "nextblock");
  LLVMBuildCondBr(B, LLVMBuildIsNull(B, partial, ""), tofin, topart);
  LLVMPositionBuilderAtEnd(B, tofin);
  for (int u = 0; u < K->U; u++) kg_finalize(K, u, &fin);
  for (int o = 0; o < p->nout; o++) {
    LLVMValueRef dst = kg_load(K, K->ptr, kg_gep(K, K->ptr, outs, kg_i64(K, o)), 8);
    int isidx = p->out_dtype[o] == KEOPS_INT64;
    scatter_rows(K, isidx ? fin.idx : fin.val, isidx ? K->i64 : K->L.T, isidx ? 8 : kg_tsize(K),
                 p->out_dim[o], dst, ib, n);
  }
  LLVMBuildBr(B, next);
  LLVMPositionBuilderAtEnd(B, topart);
  for (int u = 0; u < K->U; u++) kg_finalize(K, u, &part);
  scatter_rows(K, part.val, LLVMDoubleTypeInContext(K->L.C), 8, nstate, partial,
               LLVMBuildSub(B, ib, i0, ""), n);
  LLVMBuildBr(B, next);
  LLVMPositionBuilderAtEnd(B, next);
  kg_loop_end(K, &li, kg_i64(K, K->WU));
  LLVMBuildRetVoid(B);
  kg_state_free(K);
}

/* fname_combine (cpu.h), one row at a time (W = 1): the code that merges the GPU's j-split
 * states, also run here so that it is tested on every machine. */
static void build_combine(const fe_program *p, const kt_target *t, LLVMModuleRef m, LLVMBuilderRef bld,
                          const char *fname, kerr *e) {
  kb K;
  memset(&K, 0, sizeof K);
  K.p = p;
  K.L.C = LLVMGetModuleContext(m);
  K.L.M = m;
  K.L.bld = bld;
  K.L.err = e;
  kg_combine_types(&K);
  LLVMTypeRef ps[7] = {K.i64, K.i64, K.i64, K.i64, K.ptr, K.ptr, K.ptr};
  char name[128];
  snprintf(name, sizeof name, "%s_combine", fname);
  K.fn = LLVMAddFunction(m, name, LLVMFunctionType(LLVMVoidTypeInContext(K.L.C), ps, 7, 0));
  LLVMValueRef prm[7];
  LLVMGetParams(K.fn, prm);
  LLVMPositionBuilderAtEnd(bld, LLVMAppendBasicBlockInContext(K.L.C, K.fn, "entry"));
  LLVMValueRef outs[2] = {NULL, NULL};
  for (int o = 0; o < p->nout; o++) outs[o] = kg_load(&K, K.ptr, kg_gep(&K, K.ptr, prm[5], kg_i64(&K, o)), 8);
  kg_state_alloc(&K);
  size_t off[SC_N];
  if (scratch_layout(p, t, 1, off)) {
    K.hv = scratch_at(&K, prm[6], off[SC_HV]);
    K.hi = scratch_at(&K, prm[6], off[SC_HI]);
  }
  kg_loop lr;
  LLVMValueRef row = kg_loop_begin(&K, &lr, prm[0], prm[1]);
  kg_sink out = kg_row_sink(outs, row);
  kg_combine_row(&K, row, prm[2], prm[3], prm[4], &out);
  kg_loop_end(&K, &lr, kg_i64(&K, 1));
  LLVMBuildRetVoid(bld);
  kg_state_free(&K);
}

LLVMModuleRef cpu_build(LLVMContextRef C, const fe_program *p, const kt_target *t,
                        const char *fname, kerr *e) {
  kb K;
  memset(&K, 0, sizeof K);
  K.p = p;
  K.L.C = C;
  K.L.M = LLVMModuleCreateWithNameInContext(fname, C);
  K.L.bld = LLVMCreateBuilderInContext(C);
  K.L.user = &K;
  K.L.load_var = load_var;
  K.L.reload_rows = 1;
  kg_types(&K, t->isa->w32, t->isa->w64, t->isa->u);
  if (lw_init(&K.L, p->d, p->f, e)) {
    LLVMDisposeBuilder(K.L.bld);
    LLVMDisposeModule(K.L.M);
    return NULL;
  }
  vm_set_math(K.L.M, t->isa->math);
  LLVMTypeRef i64 = K.i64, ptr = K.ptr;
  LLVMTypeRef ps[8] = {i64, i64, ptr, i64, ptr, ptr, ptr, ptr};
  K.fn = LLVMAddFunction(K.L.M, fname, LLVMFunctionType(LLVMVoidTypeInContext(C), ps, 8, 0));
  LLVMPositionBuilderAtEnd(K.L.bld, LLVMAppendBasicBlockInContext(C, K.fn, "entry"));
  LLVMValueRef params[8];
  LLVMGetParams(K.fn, params);
  build_body(&K, params, t);
  LLVMModuleRef m = K.L.M;
  if (e->status == KEOPS_OK) build_combine(p, t, m, K.L.bld, fname, e);
  LLVMDisposeBuilder(K.L.bld);
  lw_free(&K.L);
  if (e->status != KEOPS_OK) {
    LLVMDisposeModule(m);
    return NULL;
  }
  return m;
}
