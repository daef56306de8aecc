/* The fake driver's memory, streams and the execution of queued work (fakecuda.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"


/* ---- the allocation table ------------------------------------------------------------------- */

fk_alloc *fk_find(CUdeviceptr p, size_t n) {
  for (int i = 0; i < fk.nalloc; i++) {
    fk_alloc *a = &fk.allocs[i];
    if (p >= a->base && p - a->base <= a->size && n <= a->size - (p - a->base)) return a;
  }
  return NULL;
}

static size_t used_on(int dev) {
  size_t n = 0;
  for (int i = 0; i < fk.nalloc; i++)
    if (fk.allocs[i].ctx->dev == dev) n += fk.allocs[i].size;
  return n;
}

FK_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *out, size_t bytes) {
  BEGIN("cuMemAlloc_v2", 1);
  fk_ctx *c;
  CUresult r = fk_need_ctx(&c);
  if (r) END(r);
  if (!out || !bytes) END(CUDA_ERROR_INVALID_VALUE);
  if (bytes > fk.dev[c->dev].d.memory || used_on(c->dev) > fk.dev[c->dev].d.memory - bytes)
    END(CUDA_ERROR_OUT_OF_MEMORY);
  if (fk.nalloc == fk.capalloc) {
    int cap = fk.capalloc ? 2 * fk.capalloc : 64;
    fk_alloc *n = realloc(fk.allocs, sizeof *n * (size_t)cap);
    if (!n) END(CUDA_ERROR_OUT_OF_MEMORY);
    fk.allocs = n, fk.capalloc = cap;
  }
  /* 256-byte aligned, as cuMemAlloc's; 0xff bytes: NaN in float32 and float64, so a kernel
   * that reads what nobody wrote shows */
  size_t size = (bytes + 255) / 256 * 256;
  void *p = NULL;
  if (posix_memalign(&p, 256, size)) END(CUDA_ERROR_OUT_OF_MEMORY);
  memset(p, 0xff, size);
  fk.allocs[fk.nalloc++] = (fk_alloc){(uintptr_t)p, bytes, c};
  *out = (CUdeviceptr)(uintptr_t)p;
  END(CUDA_SUCCESS);
}

static void free_at(int i) {
  free((void *)fk.allocs[i].base);
  fk.allocs[i] = fk.allocs[--fk.nalloc];
}

/* cuMemFree synchronises the context first, as CUDA's does. */
FK_EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
  BEGIN("cuMemFree_v2", 1);
  fk_ctx *c;
  CUresult r = fk_need_ctx(&c);
  if (r) END(r);
  pthread_mutex_unlock(&fk.lock);
  fk_drain(c, NULL, NULL);
  pthread_mutex_lock(&fk.exec);
  pthread_mutex_lock(&fk.lock);
  r = CUDA_ERROR_INVALID_VALUE;
  for (int i = 0; i < fk.nalloc; i++)
    if (fk.allocs[i].base == p) {
      free_at(i);
      r = CUDA_SUCCESS;
      break;
    }
  pthread_mutex_unlock(&fk.exec);
  END(r);
}

FK_EXPORT CUresult cuPointerGetAttribute(void *out, int attr, CUdeviceptr p) {
  BEGIN("cuPointerGetAttribute", 1);
  if (!out) END(CUDA_ERROR_INVALID_VALUE);
  fk_alloc *a = fk_find(p, 0);
  if (!a) END(CUDA_ERROR_INVALID_VALUE);
  switch (attr) {
  case 1: *(fk_ctx **)out = a->ctx; break;      /* CONTEXT */
  case 2: *(unsigned *)out = 2; break;          /* MEMORY_TYPE: DEVICE */
  case 3: *(CUdeviceptr *)out = p; break;       /* DEVICE_POINTER */
  case 9: *(int *)out = a->ctx->dev; break;     /* DEVICE_ORDINAL */
  default: END(CUDA_ERROR_INVALID_VALUE);
  }
  END(CUDA_SUCCESS);
}

/* ---- queues ---------------------------------------------------------------------------------- */

void fk_enqueue(fk_queue *q, fk_op *op) {
  op->seq = ++fk.seq;
  op->next = NULL;
  if (q->tail) q->tail->next = op;
  else q->head = op;
  q->tail = op;
  fk.queued++;
}

static void free_op(fk_op *op) {
  if (op->kind == OP_HTOD) free(op->host);
  free(op);
}

void fk_drop_queue(fk_queue *q) {
  for (fk_op *op = q->head, *n; op; op = n) {
    n = op->next;
    free_op(op);
    fk.queued--;
  }
  q->head = q->tail = NULL;
}

static fk_stream *stream_live(const fk_stream *s) {
  for (fk_stream *x = fk.streams; x; x = x->next)
    if (x == s) return x;
  return NULL;
}

CUresult fk_queue_of(fk_ctx *c, fk_stream *s, fk_queue **q) {
  if (!s) {
    *q = &c->q;
    return CUDA_SUCCESS;
  }
  if (!stream_live(s) || s->ctx != c) return CUDA_ERROR_INVALID_HANDLE;
  *q = &s->q;
  return CUDA_SUCCESS;
}

/* The next op to run: q's head, or the oldest of ctx's queues. fk.lock held. */
static fk_op *pop(fk_ctx *c, fk_queue *q) {
  if (!q) {
    q = &c->q;
    for (fk_stream *s = fk.streams; s; s = s->next)
      if (s->ctx == c && s->q.head && (!q->head || s->q.head->seq < q->head->seq)) q = &s->q;
  }
  fk_op *op = q->head;
  if (!op) return NULL;
  q->head = op->next;
  if (!q->head) q->tail = NULL;
  fk.queued--;
  return op;
}

/* global_ok of a launch: a sorted snapshot of the context's allocations, taken when the
 * launch starts (memory cannot be freed while it runs: cuMemFree waits for fk.exec). */
typedef struct snap {
  uintptr_t *lo, *hi;
  int n;
} snap;

static int cmp_alloc(const void *a, const void *b) {
  const fk_alloc *x = a, *y = b;
  return x->base < y->base ? -1 : x->base > y->base;
}

static int take_snapshot(fk_ctx *c, snap *s) {
  fk_alloc *tmp = malloc(sizeof *tmp * (size_t)(fk.nalloc + 1));
  s->lo = malloc(sizeof *s->lo * (size_t)(fk.nalloc + 1));
  s->hi = malloc(sizeof *s->hi * (size_t)(fk.nalloc + 1));
  s->n = 0;
  if (!tmp || !s->lo || !s->hi) {
    free(tmp), free(s->lo), free(s->hi);
    return -1;
  }
  int n = 0;
  for (int i = 0; i < fk.nalloc; i++)
    if (fk.allocs[i].ctx == c) tmp[n++] = fk.allocs[i];
  qsort(tmp, (size_t)n, sizeof *tmp, cmp_alloc);
  for (int i = 0; i < n; i++) s->lo[i] = tmp[i].base, s->hi[i] = tmp[i].base + tmp[i].size;
  s->n = n;
  free(tmp);
  return 0;
}

static int global_ok(void *ctx, const void *addr, uint64_t bytes) {
  const snap *s = ctx;
  uintptr_t a = (uintptr_t)addr;
  int lo = 0, hi = s->n - 1;
  while (lo <= hi) { /* the last allocation starting at or below a */
    int mid = (lo + hi) / 2;
    if (s->lo[mid] <= a) lo = mid + 1;
    else hi = mid - 1;
  }
  return hi >= 0 && a - s->lo[hi] <= s->hi[hi] - s->lo[hi] && bytes <= s->hi[hi] - a;
}

/* One op; fk.exec held, fk.lock not. Returns 0 or the sticky error it causes. */
static CUresult run_op(fk_ctx *c, fk_op *op) {
  if (op->kind != OP_LAUNCH) {
    /* memory may have been freed since the op was queued: then the device faults */
    pthread_mutex_lock(&fk.lock);
    CUresult r = fk_find(op->dptr, op->n) ? CUDA_SUCCESS : CUDA_ERROR_ILLEGAL_ADDRESS;
    if (!r) {
      void *d = (void *)(uintptr_t)op->dptr;
      if (op->kind == OP_HTOD) memcpy(d, op->host, op->n);
      else if (op->kind == OP_DTOH) memcpy(op->host, d, op->n);
      else memset(d, op->byte, op->n);
    }
    pthread_mutex_unlock(&fk.lock);
    return r;
  }
  snap s;
  pthread_mutex_lock(&fk.lock);
  int ok = take_snapshot(c, &s) == 0;
  unsigned maxt = (unsigned)fk.dev[c->dev].d.max_threads_per_block;
  pthread_mutex_unlock(&fk.lock);
  if (!ok) return CUDA_ERROR_LAUNCH_FAILED;
  void *params[sizeof op->vals / sizeof *op->vals];
  for (size_t q = 0; q < op->fn->ef->info.nparams && q < sizeof op->vals / sizeof *op->vals; q++)
    params[q] = &op->vals[q];
  rt_emu_launch l = {.fn = op->fn->ef, .shared_bytes = op->shared, .shared_limit = op->shared_limit,
                     .max_threads = maxt, .params = params, .global_ok = global_ok, .global_ctx = &s};
  memcpy(l.grid, op->grid, sizeof l.grid);
  memcpy(l.block, op->block, sizeof l.block);
  kerr e;
  kerr_clear(&e);
  keops_status st = rt_emu_run(&l, &e);
  free(s.lo), free(s.hi);
  if (st == KEOPS_OK) return CUDA_SUCCESS;
  pthread_mutex_lock(&fk.lock);
  snprintf(fk.last_fault, sizeof fk.last_fault, "%s", e.msg);
  pthread_mutex_unlock(&fk.lock);
  /* what the kernel did wrong faults the context; a launch the emulator refuses is a bug of
   * the fake's own checks at cuLaunchKernel, reported the same way */
  return st == KEOPS_ERROR_DEVICE ? CUDA_ERROR_ILLEGAL_ADDRESS : CUDA_ERROR_LAUNCH_FAILED;
}

CUresult fk_drain(fk_ctx *c, fk_queue *q, const fk_op *until) {
  pthread_mutex_lock(&fk.exec);
  pthread_mutex_lock(&fk.lock);
  for (;;) {
    if (!fk_ctx_live(c)) break;
    fk_op *op = pop(c, q);
    if (!op) break;
    int last = op == until;
    if (c->sticky) { /* a faulted context runs nothing more */
      free_op(op);
    } else {
      pthread_mutex_unlock(&fk.lock);
      CUresult r = run_op(c, op);
      free_op(op);
      pthread_mutex_lock(&fk.lock);
      if (r && fk_ctx_live(c) && !c->sticky) c->sticky = r;
    }
    if (last) break;
  }
  CUresult r = fk_ctx_live(c) ? c->sticky : CUDA_ERROR_INVALID_CONTEXT;
  pthread_mutex_unlock(&fk.lock);
  pthread_mutex_unlock(&fk.exec);
  return r;
}

/* ---- copies ------------------------------------------------------------------------------------ */

static CUresult queue_copy(int kind, CUdeviceptr d, void *h, const void *src, size_t n,
                           unsigned char byte, fk_stream *s, fk_queue **qout, fk_op **opout) {
  fk_ctx *c;
  CUresult r = fk_need_ctx(&c);
  fk_queue *q;
  if (r || (r = fk_queue_of(c, s, &q))) return r;
  if ((kind != OP_MEMSET && !h && !src) || !fk_find(d, n)) return CUDA_ERROR_INVALID_VALUE;
  fk_op *op = calloc(1, sizeof *op);
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  op->kind = kind;
  op->dptr = d;
  op->n = n;
  op->byte = byte;
  op->host = h;
  if (kind == OP_HTOD) { /* pageable memory is staged: the caller may reuse it at once */
    if (!(op->host = malloc(n ? n : 1))) {
      free(op);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy(op->host, src, n);
  }
  fk_enqueue(q, op);
  if (qout) *qout = q;
  if (opout) *opout = op;
  return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *src, size_t n, fk_stream *s) {
  BEGIN("cuMemcpyHtoDAsync_v2", 1);
  END(queue_copy(OP_HTOD, d, NULL, src, n, 0, s, NULL, NULL));
}

/* Into pageable host memory (all of it, here): complete when the call returns, so the stream's
 * work up to this copy runs now. */
FK_EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr d, size_t n, fk_stream *s) {
  BEGIN("cuMemcpyDtoHAsync_v2", 1);
  fk_queue *q;
  fk_op *op;
  CUresult r = queue_copy(OP_DTOH, d, dst, NULL, n, 0, s, &q, &op);
  fk_ctx *c = fk_current();
  pthread_mutex_unlock(&fk.lock);
  if (r) return r;
  return fk_drain(c, q, op);
}

FK_EXPORT CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, fk_stream *s) {
  BEGIN("cuMemsetD8Async", 1);
  END(queue_copy(OP_MEMSET, d, NULL, NULL, n, v, s, NULL, NULL));
}

/* ---- streams ----------------------------------------------------------------------------------- */

FK_EXPORT CUresult cuStreamCreate(fk_stream **out, unsigned flags) {
  BEGIN("cuStreamCreate", 1);
  fk_ctx *c;
  CUresult r = fk_need_ctx(&c);
  if (r) END(r);
  if (!out || flags > 1) END(CUDA_ERROR_INVALID_VALUE);
  fk_stream *s = calloc(1, sizeof *s);
  if (!s) END(CUDA_ERROR_OUT_OF_MEMORY);
  s->ctx = c;
  s->next = fk.streams;
  fk.streams = s;
  *out = s;
  END(CUDA_SUCCESS);
}

static void unlink_stream(fk_stream *s) {
  for (fk_stream **p = &fk.streams; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  fk_drop_queue(&s->q);
  free(s);
}

/* Work still queued completes first (CUDA lets it finish after the call returns). */
FK_EXPORT CUresult cuStreamDestroy_v2(fk_stream *s) {
  BEGIN("cuStreamDestroy_v2", 1);
  fk_ctx *c = fk_current();
  if (!c) END(CUDA_ERROR_INVALID_CONTEXT);
  if (!stream_live(s) || s->ctx != c) END(CUDA_ERROR_INVALID_HANDLE);
  pthread_mutex_unlock(&fk.lock);
  fk_drain(c, &s->q, NULL);
  pthread_mutex_lock(&fk.exec);
  pthread_mutex_lock(&fk.lock);
  CUresult r = CUDA_ERROR_INVALID_HANDLE;
  if (stream_live(s)) {
    unlink_stream(s);
    r = CUDA_SUCCESS;
  }
  pthread_mutex_unlock(&fk.exec);
  END(r);
}

FK_EXPORT CUresult cuStreamSynchronize(fk_stream *s) {
  BEGIN("cuStreamSynchronize", 1);
  fk_ctx *c;
  fk_queue *q;
  CUresult r = fk_need_ctx(&c);
  if (!r) r = fk_queue_of(c, s, &q);
  pthread_mutex_unlock(&fk.lock);
  if (r) return r;
  return fk_drain(c, q, NULL);
}

/* Everything c owns (fk.lock and fk.exec held). */
void fk_ctx_free_resources(fk_ctx *c) {
  fk_drop_queue(&c->q);
  for (fk_stream **p = &fk.streams; *p;) {
    fk_stream *s = *p;
    if (s->ctx == c) {
      *p = s->next;
      fk_drop_queue(&s->q);
      free(s);
    } else {
      p = &s->next;
    }
  }
  for (int i = 0; i < fk.nalloc;)
    if (fk.allocs[i].ctx == c) free_at(i);
    else i++;
  for (fk_module **p = &fk.modules; *p;) {
    fk_module *m = *p;
    if (m->ctx == c) {
      *p = m->next;
      fk_module_free(m);
    } else {
      p = &m->next;
    }
  }
}
