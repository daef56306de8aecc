/* Internal runtime interface: what the tools and later runtime files (cache, CPU pool, CUDA)
 * need from the public handles of api.c. Not installed; users see only keops.h. */
#ifndef KEOPS_RUNTIME_H
#define KEOPS_RUNTIME_H

#include <stdarg.h>

#include <pthread.h>
#include <stdatomic.h>

#include "cpu_run.h"
#include "device.h"
#include "front.h"
#include "keops.h"

/* Everything the kernels of one context share. The JIT, cache and pool are created on first
 * use (a context that only parses or runs the reference backend never starts LLVM). */
#define RT_MAX_DEVICES 64 /* GPU ordinals a context runs on */
typedef struct rt_gpu_dev rt_gpu_dev;

struct keops_context {
  keops_run_options defaults; /* what NULL run options mean */
  kt_target target;          /* chosen at creation: host, or KEOPS_TARGET */
  int nthreads;               /* KEOPS_NUM_THREADS, else the online cores */
  pthread_mutex_t lock;       /* guards the lazy members */
  rt_jit *jit;
  rt_pool *pool;
  rt_cache *cache;            /* created with the context: compiles are single-flight per key */
  char describe[4][160];      /* keops_backend_describe, per keops_backend */
  const rt_device *dev;       /* the GPU backend's devices (rt_device_pick()); static */
  struct rt_gpu_code *gpu_code; /* modules loaded on devices, unloaded with the context */
  struct rt_gpu_dev *gpu_devs[RT_MAX_DEVICES]; /* gpu_run.c: each device's facts, once */
  rt_disk disk;               /* compiled CPU kernels on disk (KEOPS_CACHE_DIR) */
  /* Whether AUTO takes the GPU, and the GPU and AUTO descriptions: found on first need
   * (rt_gpu_probe) and kept, so that a process that never asks for the GPU never opens the
   * driver (cuInit), and AUTO does not ask the driver on every run. Under probe_lock. */
  pthread_mutex_t probe_lock;
  int probed, gpu_usable;
  atomic_long disk_loads;     /* kernels taken from the disk cache (tests, keops-bench) */
  atomic_int refs;            /* the user's handle + one per kernel: freed at zero */
};

/* Immutable after keops_kernel_create apart from the compiled code pointers, each set once
 * (atomically) on the first run that needs it, so keops_kernel_run may run it concurrently. */
struct keops_kernel {
  keops_context *ctx;
  fe_program *prog;
  char *cpu_key; /* cache key: program key + target + versions */
  _Atomic(const cpu_code *) cpu; /* owned by the context's cache */
  /* gpu_run.c: the code loaded for each device, set on the first run there (the context's,
   * unloaded with it), so that later runs skip the key and the cache lookup */
  _Atomic(struct rt_gpu_code *) gpu[RT_MAX_DEVICES];
  int sum_rows; /* the gradient of a parameter (grad.c): the output rows are summed into one */
  /* the gradient of a Min/Max/K-min reduction (grad.c): the caller's input index_in holds the
   * forward's int64 indices, converted to the dtype at each run, and the last position,
   * index_pos, the reduced index 0, 1, ..., which each run makes (-1: neither) */
  int index_in, index_pos;
};

/* context.c */
/* The device implementation new contexts use, named by KEOPS_GPU: "cuda" (the default,
 * cuda.c) or "emulator" (emu_device.c). Static storage; NULL with e set for another name. */
const rt_device *rt_device_pick(kerr *e);
keops_status rt_context_init(keops_context *ctx, kerr *e);
void rt_context_fini(keops_context *ctx);
/* The key under which k's CPU code is cached (malloc'ed into k->cpu_key). */
keops_status rt_kernel_init(keops_kernel *k, kerr *e);
/* The backend a run with options o uses (AUTO resolved). */
keops_backend rt_backend(const keops_context *ctx, const keops_run_options *o);
/* Fills ctx's GPU facts on the first call (see probe_lock); thread-safe. A const context's
 * facts are filled too: they are what it would have said from its creation. */
void rt_gpu_probe(const keops_context *ctx);
/* k's CPU code, compiled on first use through the context's cache. */
const cpu_code *rt_kernel_cpu(keops_kernel *k, kerr *e);
/* Runs k on the CPU backend with the resolved thread count, over the pairs of rg (NULL: all). */
keops_status rt_run_cpu(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                        void *const *outs, const keops_run_options *o, const fe_ranges *rg,
                        kerr *e);

/* Copies the caller's struct `in`, whose first member is its size, into `out` of this
 * library's layout (`ours` bytes), as api.c reads every public struct: size 0 or smaller than
 * ours is refused, a larger one only while its bytes past ours are zero. who, name and type
 * name it in the message ("keops_kernel_run", "opts", "keops_run_options"). */
keops_status rt_copy_sized(const void *in, void *out, size_t ours, const char *who,
                           const char *name, const char *type);

/* api.c: the broadcast extents B[0..b->ndim) of batch b for p's inputs and their product
 * *total; every extent checked (each the batch's or 1), rt_fail naming the first bad one. */
keops_status rt_batch_shape(const fe_program *p, const keops_batch *b, int64_t *B, int64_t *total);

/* ranges.c: checks every entry of r for a run of p on M x N (rt_fail naming the first bad
 * one) and gives the arrays of p's axis in *out, which points into r. */
keops_status rt_ranges_read(const fe_program *p, const keops_ranges *r, int64_t M, int64_t N,
                            fe_ranges *out);

/* The program a kernel runs (owned by the kernel; valid until keops_kernel_destroy).
 * NULL for a NULL kernel. keops-dump uses it to print what keops_kernel_create built, so
 * that the tool and the API agree on every message and every result. */
const fe_program *rt_kernel_program(const keops_kernel *k);

/* Records a failure for keops_last_error() on this thread and returns st, so that error
 * paths read `return rt_fail(st, "...")`. The message is formatted as printf does. */
keops_status rt_fail(keops_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records e (a front-end or backend failure) and returns its status. A message that names
 * its place ("formula:1:9: error: ...") is kept as it is, any other gets "who: " in front; a
 * kerr left at KEOPS_OK by a failing callee becomes KEOPS_ERROR_COMPILE naming `who`, since
 * that is a bug in the library. */
keops_status rt_fail_kerr(const kerr *e, const char *who);

/* gpu_run.c */
int rt_gpu_usable(const rt_device *dev); /* dev loads and has at least one device */
/* Whether AUTO may choose dev's device 0: it loads and has a device, that device gets code
 * (a compute capability and driver rt_ptx_target accepts, NVPTX in this LLVM) and its
 * primary context can be retained (not compute mode PROHIBITED...), and it has not faulted.
 * 0 with the reason in e otherwise. */
int rt_gpu_auto_ok(const rt_device *dev, kerr *e);
keops_status rt_run_gpu(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                        void *const *outs, const keops_run_options *o, const fe_ranges *rg,
                        kerr *e);
/* Zeros the outputs when they are device pointers (a formula that simplified to Zero). */
keops_status rt_gpu_fill_zero(const keops_kernel *k, int64_t M, int64_t N, void *const *outs,
                              const keops_run_options *o, kerr *e);
void rt_gpu_unload(keops_context *ctx);

/* Compiles k for the backend that options o select, without running it (keops-bench times
 * compilation with it). */
keops_status rt_kernel_prepare(keops_kernel *k, const keops_run_options *o);

#endif
