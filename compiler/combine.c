/* The j-split's second step (kgen.h), shared by every target: cpu.c loops it over a range of
 * rows, gpu.c runs it in one thread per row. */
#include "kgen.h"

#define B (K->L.bld)

static void row_put(kb *K, const kg_sink *s, int kind, LLVMValueRef c, int u, LLVMValueRef lane,
                    LLVMValueRef v) {
  const fe_program *p = K->p;
  int o = kind == KG_IDX && (p->red->outputs & RO_VAL) ? 1 : 0;
  LLVMTypeRef et = kind == KG_IDX ? K->i64 : K->L.T;
  LLVMValueRef at = LLVMBuildAdd(B, LLVMBuildMul(B, s->row, kg_i64(K, p->out_dim[o]), ""), c, "");
  (void)u, (void)lane; /* one row, one lane */
  kg_store(K, v, kg_gep(K, et, s->out[o], at), kind == KG_IDX ? 8 : kg_tsize(K));
}

void kg_combine_types(kb *K) {
  kg_types(K, 1, 1, 1);
  K->AT = K->AVT = LLVMDoubleTypeInContext(K->L.C);
}

kg_sink kg_row_sink(const LLVMValueRef *outs, LLVMValueRef row) {
  kg_sink s = {.put = row_put, .row = row, .out = {outs[0], outs[1]}};
  return s;
}

void kg_combine_row(kb *K, LLVMValueRef row, LLVMValueRef nrows, LLVMValueRef nsplit,
                    LLVMValueRef partial, const kg_sink *out) {
  LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
  LLVMValueRef st = kg_i64(K, K->p->state);
  kg_state_load(K, 0, kg_gep(K, dt, partial, LLVMBuildMul(B, row, st, "")));
  kg_loop lt;
  LLVMValueRef s = kg_loop_begin(K, &lt, kg_i64(K, 1), nsplit);
  LLVMValueRef at = LLVMBuildMul(B, LLVMBuildAdd(B, LLVMBuildMul(B, s, nrows, ""), row, ""), st, "");
  kg_state_merge(K, 0, kg_gep(K, dt, partial, at));
  kg_loop_end(K, &lt, kg_i64(K, 1));
  kg_finalize(K, 0, out);
}
