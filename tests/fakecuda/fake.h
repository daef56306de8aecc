/* The fake driver's shared state (fakecuda.h says what it models). One lock (fk.lock)
 * guards every table; one more (fk.exec) orders the execution of queued work, which runs
 * without fk.lock so that kernels, which check their accesses against a snapshot of the
 * allocation table, never wait for it. Lock order: exec, then lock. */
#ifndef KEOPS_FAKE_H
#define KEOPS_FAKE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "emulator.h"
#include "fakecuda.h"

#define FK_EXPORT __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st fk_ctx;
typedef struct CUstream_st fk_stream;
typedef struct CUmod_st fk_module;
typedef struct CUfunc_st fk_func;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
  CUDA_ERROR_INVALID_PTX = 218,
  CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
  CUDA_ERROR_LAUNCH_FAILED = 719,
};

#define FK_MAX_DEV 16
#define FK_MAX_STACK 64
#define FK_DEFAULT_SHARED (48 * 1024)

typedef struct fk_dev {
  fakecuda_device d;
  fk_ctx *primary; /* while retained */
} fk_dev;

/* One queued operation. */
enum { OP_HTOD, OP_DTOH, OP_MEMSET, OP_LAUNCH };
typedef struct fk_op {
  int kind;
  uint64_t seq; /* enqueue order across the context's queues */
  CUdeviceptr dptr;
  void *host; /* OP_HTOD: the staged copy (owned); OP_DTOH: the destination */
  size_t n;
  unsigned char byte;
  fk_func *fn;
  unsigned grid[3], block[3], shared, shared_limit;
  uint64_t vals[64 + 256]; /* OP_LAUNCH: the argument values, read at cuLaunchKernel */
  struct fk_op *next;
} fk_op;

typedef struct fk_queue {
  fk_op *head, *tail;
} fk_queue;

struct CUctx_st {
  int dev;
  int primary, retains; /* primary: the device's primary context, retained `retains` times */
  int sticky;           /* a fault that ends every later call on this context */
  fk_queue q;           /* the default stream */
  struct CUctx_st *next;
};

struct CUstream_st {
  fk_ctx *ctx;
  fk_queue q;
  struct CUstream_st *next;
};

struct CUfunc_st {
  fk_module *mod;
  const rt_emu_function *ef;
  int max_dyn_shared; /* cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) */
  struct CUfunc_st *next;
};

struct CUmod_st {
  fk_ctx *ctx;
  rt_emu_module *em;
  fk_func *funcs;
  struct CUmod_st *next;
};

typedef struct fk_alloc {
  uintptr_t base;
  size_t size;
  fk_ctx *ctx;
} fk_alloc;

typedef struct fk_state {
  pthread_mutex_t lock, exec;
  int configured, inited;
  int ndev, driver;
  fk_dev dev[FK_MAX_DEV];
  fk_ctx *ctxs;
  fk_stream *streams;
  fk_module *modules;
  fk_alloc *allocs;
  int nalloc, capalloc;
  uint64_t seq;
  int queued;
  int kernel_regs;
  char last_fault[4096];
} fk_state;

extern fk_state fk;

/* The driver entry points the fake exports (cuda.h's signatures, its types here). */
CUresult cuGetErrorName(CUresult r, const char **s);
CUresult cuGetErrorString(CUresult r, const char **s);
CUresult cuInit(unsigned flags);
CUresult cuDriverGetVersion(int *v);
CUresult cuDeviceGetCount(int *n);
CUresult cuDeviceGet(CUdevice *d, int ordinal);
CUresult cuDeviceGetName(char *name, int len, CUdevice d);
CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d);
CUresult cuDevicePrimaryCtxRetain(fk_ctx **out, CUdevice d);
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d);
CUresult cuDevicePrimaryCtxReset_v2(CUdevice d);
CUresult cuCtxCreate_v2(fk_ctx **out, unsigned flags, CUdevice d);
CUresult cuCtxDestroy_v2(fk_ctx *c);
CUresult cuCtxPushCurrent_v2(fk_ctx *c);
CUresult cuCtxPopCurrent_v2(fk_ctx **out);
CUresult cuCtxGetCurrent(fk_ctx **out);
CUresult cuCtxSetCurrent(fk_ctx *c);
CUresult cuCtxGetDevice(CUdevice *d);
CUresult cuCtxSynchronize(void);
CUresult cuMemAlloc_v2(CUdeviceptr *out, size_t bytes);
CUresult cuMemFree_v2(CUdeviceptr p);
CUresult cuPointerGetAttribute(void *out, int attr, CUdeviceptr p);
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *src, size_t n, fk_stream *s);
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr d, size_t n, fk_stream *s);
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, fk_stream *s);
CUresult cuStreamCreate(fk_stream **out, unsigned flags);
CUresult cuStreamDestroy_v2(fk_stream *s);
CUresult cuStreamSynchronize(fk_stream *s);
CUresult cuModuleLoadDataEx(fk_module **out, const void *image, unsigned nopts, int *opts,
                            void **vals);
CUresult cuModuleGetFunction(fk_func **out, fk_module *m, const char *name);
CUresult cuModuleUnload(fk_module *m);
CUresult cuFuncSetAttribute(fk_func *f, int attr, int value);
CUresult cuFuncGetAttribute(int *v, int attr, fk_func *f);
CUresult cuLaunchKernel(fk_func *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, fk_stream *s, void **params,
                        void **extra);

/* Every entry point starts with fk_begin(name) under fk.lock: counts the call, applies
 * injected failures, and (need_init) refuses calls before cuInit. */
CUresult fk_begin(const char *name, int need_init);
/* The calling thread's current context (NULL: none). fk.lock held. */
fk_ctx *fk_current(void);
/* The current context, checked: INVALID_CONTEXT without one, its sticky error. fk.lock held. */
CUresult fk_need_ctx(fk_ctx **out);
int fk_ctx_live(const fk_ctx *c);          /* fk.lock held */
void fk_ctx_free_resources(fk_ctx *c);     /* fk.lock and fk.exec held: its memory, streams, modules */

/* fake_mem.c */
fk_alloc *fk_find(CUdeviceptr p, size_t n); /* the allocation holding [p, p+n), fk.lock held */
/* Runs queued work of ctx (q NULL: every queue of ctx, in enqueue order; else q only) up to
 * and including the op `until` (NULL: all). fk.lock NOT held; returns ctx's sticky error. */
CUresult fk_drain(fk_ctx *c, fk_queue *q, const fk_op *until);
void fk_enqueue(fk_queue *q, fk_op *op); /* fk.lock held */
CUresult fk_queue_of(fk_ctx *c, fk_stream *s, fk_queue **q); /* fk.lock held */
void fk_drop_queue(fk_queue *q);                               /* fk.lock held */

/* fake_module.c */
void fk_module_free(fk_module *m); /* unlinked already; fk.lock held */

/* Every entry point: BEGIN takes the lock and counts the call (fk_begin: injected failures,
 * cuInit first when need_init); END releases it and returns. */
#define BEGIN(name, need_init)                                                                     \
  pthread_mutex_lock(&fk.lock);                                                                    \
  CUresult r_ = fk_begin(name, need_init);                                                         \
  if (r_) {                                                                                        \
    pthread_mutex_unlock(&fk.lock);                                                                \
    return r_;                                                                                     \
  }
#define END(r)                                                                                     \
  do {                                                                                             \
    CUresult e_ = (r);                                                                             \
    pthread_mutex_unlock(&fk.lock);                                                                \
    return e_;                                                                                     \
  } while (0)

#endif
