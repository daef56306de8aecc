/* The CPU backend behind the API: compile a program into the context's JIT, and run the
 * kernel on the worker pool, over row chunks or, when rows are too few to feed the threads,
 * over j-splits whose partial states the kernel's combine step merges. */
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu_run.h"
#include "fnv.h"
#include "red.h"

/* Links an object holding NAME and NAME_combine; NULL with e set. */
static cpu_code *link_object(rt_jit *jit, LLVMMemoryBufferRef obj, const char *name,
                             const fe_program *p, const kt_target *t, kerr *e) {
  cpu_code *code = malloc(sizeof *code);
  char cname[80];
  snprintf(cname, sizeof cname, "%s_combine", name);
  void *k = NULL, *c = NULL;
  if (!code) {
    LLVMDisposeMemoryBuffer(obj);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  if (!(k = rt_jit_add_object(jit, obj, name, e)) || !(c = rt_jit_lookup(jit, cname, e))) {
    free(code);
    return NULL;
  }
  code->kernel = (cpu_kernel_fn)k;
  code->combine = (cpu_combine_fn)c;
  code->scratch = cpu_scratch_bytes(p, t, 0);
  code->combine_scratch = cpu_scratch_bytes(p, t, 1);
  return code;
}

cpu_code *rt_cpu_compile(rt_jit *jit, const fe_program *p, const kt_target *t, const char *key,
                         const rt_disk *disk, int *from_disk, kerr *e) {
  /* symbols named after the key, so an object from the disk cache has the names we ask for */
  char name[64];
  snprintf(name, sizeof name, "keops_%016llx",
           (unsigned long long)kfnv64_str(key));
  size_t n;
  void *bytes = rt_disk_load(disk, key, &n);
  *from_disk = 0;
  if (bytes) {
    kerr ignored; /* a stored object that does not link only costs a compile */
    kerr_clear(&ignored);
    LLVMMemoryBufferRef obj = LLVMCreateMemoryBufferWithMemoryRangeCopy(bytes, n, name);
    free(bytes);
    cpu_code *code = link_object(jit, obj, name, p, t, &ignored);
    if (code) {
      *from_disk = 1;
      return code;
    }
    strcat(name, "_c"); /* the failed link may have claimed the names */
  }
  char *code = kt_compile(p, t, name, KC_OBJ, &n, e);
  if (!code) return NULL;
  if (!bytes) rt_disk_store(disk, key, code, n);
  LLVMMemoryBufferRef obj = LLVMCreateMemoryBufferWithMemoryRangeCopy(code, n, name);
  free(code);
  return link_object(jit, obj, name, p, t, e);
}

/* ---- running ------------------------------------------------------------------------------ */

/* A block-sparse run's unit of work: rows [i0, i1) over njr ranges at jr. */
typedef struct piece {
  int64_t i0, i1;
  const int64_t *jr;
  int64_t njr;
} piece;

typedef struct job {
  cpu_kernel_fn fn;
  const void *const *args;
  void *const *outs;
  int64_t rows, nred, chunk; /* row chunks, or j-splits of `chunk` indices */
  double *partial;           /* j-split mode: nsplit * rows * state doubles */
  size_t state;
  size_t scratch;            /* bytes of scratch memory a call needs (cpu.h) */
  const piece *pieces;       /* block-sparse mode */
  atomic_int oom;            /* a task found no memory for its scratch */
} job;

/* Runs the kernel over rows [i0, i1) and njr ranges jr with its scratch memory. */
static void call(job *J, int64_t i0, int64_t i1, const int64_t *jr, int64_t njr, double *partial) {
  void *scratch = NULL;
  if (J->scratch && !(scratch = aligned_alloc(64, J->scratch))) {
    atomic_store(&J->oom, 1);
    return;
  }
  J->fn(i0, i1, jr, njr, J->args, J->outs, partial, scratch);
  free(scratch);
}

static void row_task(void *ctx, int t) {
  job *J = ctx;
  int64_t i0 = (int64_t)t * J->chunk, i1 = i0 + J->chunk < J->rows ? i0 + J->chunk : J->rows;
  call(J, i0, i1, (const int64_t[]){0, J->nred}, 1, NULL);
}

static void split_task(void *ctx, int t) {
  job *J = ctx;
  int64_t j0 = (int64_t)t * J->chunk, j1 = j0 + J->chunk < J->nred ? j0 + J->chunk : J->nred;
  call(J, 0, J->rows, (const int64_t[]){j0, j1}, 1,
       J->partial + (size_t)t * (size_t)J->rows * J->state);
}

static void piece_task(void *ctx, int t) {
  job *J = ctx;
  const piece *q = &J->pieces[t];
  call(J, q->i0, q->i1, q->jr, q->njr, NULL);
}

/* Cuts the rows into pieces: each block's rows in chunks of at most `chunk` (a multiple of the
 * kernel's row block), and each gap between blocks whole, with no range (its rows finalise the
 * empty reduction). Returns the count, or -1 without memory; *out is the caller's. */
static int64_t cut_pieces(const fe_ranges *rg, int64_t rows, int64_t chunk, piece **out) {
  int64_t n = 0;
  for (int pass = 0; pass < 2; pass++) {
    int64_t at = 0;
    n = 0;
    for (int64_t b = 0; b <= rg->nblocks; b++) {
      int64_t s = b < rg->nblocks ? rg->rows[2 * b] : rows, e = b < rg->nblocks ? rg->rows[2 * b + 1] : rows;
      if (s > at) {
        if (pass) (*out)[n] = (piece){at, s, NULL, 0};
        n++;
      }
      for (int64_t i = s; i < e; i += chunk, n++)
        if (pass)
          (*out)[n] = (piece){i, e - i > chunk ? i + chunk : e, rg->red + 2 * fe_slice_begin(rg, b),
                              rg->slices[b] - fe_slice_begin(rg, b)};
      at = e > at ? e : at;
    }
    if (!pass && !(*out = malloc(sizeof(piece) * (size_t)(n ? n : 1)))) return -1;
  }
  return n;
}

static keops_status no_scratch(size_t bytes, kerr *e) {
  kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory for the kernel's %zu bytes of K-min heaps",
           bytes);
  return e->status;
}

keops_status rt_cpu_run(rt_pool *pool, const cpu_code *code, const fe_program *p, int64_t M,
                        int64_t N, const void *const *args, void *const *outs,
                        const fe_ranges *rg, int threads, int lanes, kerr *e) {
  int64_t rows = fe_rows(p, M, N), nred = fe_nred(p, M, N);
  job J = {code->kernel, args, outs, rows, nred, 0, NULL, 0, code->scratch, NULL, 0};
  if (rows == 0) return KEOPS_OK;
  int64_t blocks = (rows + lanes - 1) / lanes;
  if (rg) { /* over the blocks' rows only; pieces go to threads as they free up */
    int64_t per = (blocks + 4 * (int64_t)threads - 1) / (4 * (int64_t)threads);
    piece *pieces;
    int64_t n = cut_pieces(rg, rows, (per > 0 ? per : 1) * lanes, &pieces);
    if (n < 0 || n > INT32_MAX) {
      if (n >= 0) free(pieces);
      kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory for the row pieces of %lld blocks",
               (long long)rg->nblocks);
      return e->status;
    }
    J.pieces = pieces;
    rt_pool_run(pool, threads, (int)n, piece_task, &J);
    free(pieces);
    return atomic_load(&J.oom) ? no_scratch(J.scratch, e) : KEOPS_OK;
  }
  /* Enough row blocks for every thread (4 chunks each, for balance), or too little work to
   * split: run over rows. Otherwise split j and combine the partial states. */
  if (threads <= 1 || blocks >= 4 * (int64_t)threads || nred < 2048 * (int64_t)threads) {
    int64_t per = (blocks + 4 * (int64_t)threads - 1) / (4 * (int64_t)threads);
    J.chunk = (per > 0 ? per : 1) * lanes;
    rt_pool_run(pool, threads, (int)((rows + J.chunk - 1) / J.chunk), row_task, &J);
    return atomic_load(&J.oom) ? no_scratch(J.scratch, e) : KEOPS_OK;
  }
  int nsplit = threads;
  J.chunk = (nred + nsplit - 1) / nsplit;
  J.state = (size_t)p->state;
  J.partial = malloc(sizeof(double) * (size_t)nsplit * (size_t)rows * J.state);
  void *scratch = code->combine_scratch ? aligned_alloc(64, code->combine_scratch) : NULL;
  if (!J.partial || (code->combine_scratch && !scratch)) {
    free(J.partial);
    free(scratch);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory for %d partial results", nsplit);
    return e->status;
  }
  rt_pool_run(pool, threads, nsplit, split_task, &J);
  if (!atomic_load(&J.oom)) code->combine(0, rows, rows, nsplit, J.partial, outs, scratch); /* rows are few here */
  free(J.partial);
  free(scratch);
  return atomic_load(&J.oom) ? no_scratch(J.scratch, e) : KEOPS_OK;
}
