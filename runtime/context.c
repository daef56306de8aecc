/* Context internals: target choice, the lazily started JIT and worker pool, and the CPU
 * kernel of a kernel handle through the keyed cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda.h"
#include "emulator.h"
#include "fnv.h"
#include "keops_build_id.h" /* generated: a digest of the sources (tools/build_id.cmake) */
#include "runtime.h"

static int online_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)(n < 1024 ? n : 1024) : 1;
}

const rt_device *rt_device_pick(kerr *e) {
  const char *env = getenv("KEOPS_GPU");
  if (!env || !*env || !strcmp(env, "cuda")) return &cu_driver;
  if (!strcmp(env, "emulator")) return &rt_emu_device;
  kerr_set(e, KEOPS_ERROR_ARGUMENT, "KEOPS_GPU = '%.40s' names no GPU implementation (expected cuda or emulator)",
           env);
  return NULL;
}

static void describe_gpu(keops_context *ctx) {
  kerr e;
  kerr_clear(&e);
  rt_device_info d;
  int n = 0;
  char *s = ctx->describe[KEOPS_BACKEND_GPU];
  size_t sz = sizeof ctx->describe[0];
  if (ctx->dev->load(&e) || ctx->dev->count(&n, &e) || ctx->dev->info(0, &d, &e))
    snprintf(s, sz, "GPU: none usable (%.120s)", e.msg);
  else if (ctx->dev->image == RT_IMAGE_HOST_OBJECT)
    snprintf(s, sz, "GPU emulator (KEOPS_GPU=emulator: %d devices shaped as compute capability %d.%d "
             "with %d SMs; kernels run on the host, so timings are not GPU timings)", n, d.cc_major,
             d.cc_minor, d.sm_count);
  else
    snprintf(s, sz, "GPU (%d device%s; device 0: %.60s, compute capability %d.%d, %d SMs)", n,
             n > 1 ? "s" : "", d.name, d.cc_major, d.cc_minor, d.sm_count);
}

keops_status rt_context_init(keops_context *ctx, kerr *e) {
  if (kt_pick(&ctx->target, NULL, e)) return e->status;
  ctx->nthreads = online_cores();
  const char *env = getenv("KEOPS_NUM_THREADS");
  if (env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end || n < 0 || n > 1024) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT,
               "KEOPS_NUM_THREADS = '%.40s' is not a thread count in [0, 1024] (0: all cores)", env);
      return e->status;
    }
    if (n > 0) ctx->nthreads = (int)n; /* 0 means all cores, as num_threads = 0 does */
  }
  if (!(ctx->dev = rt_device_pick(e))) return e->status;
  if (!(ctx->cache = rt_cache_create())) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return e->status;
  }
  pthread_mutex_init(&ctx->lock, NULL);
  rt_disk_init(&ctx->disk);
  pthread_mutex_init(&ctx->probe_lock, NULL);
  atomic_init(&ctx->disk_loads, 0);
  snprintf(ctx->describe[KEOPS_BACKEND_CPU], sizeof ctx->describe[0],
           "CPU JIT (%s, %s, %d thread%s)", ctx->target.isa->name, ctx->target.cpu, ctx->nthreads,
           ctx->nthreads > 1 ? "s" : "");
  snprintf(ctx->describe[KEOPS_BACKEND_REFERENCE], sizeof ctx->describe[0],
           "reference interpreter (double precision, 1 thread)");
  return KEOPS_OK;
}

void rt_gpu_probe(const keops_context *cctx) {
  keops_context *ctx = (keops_context *)cctx; /* facts fixed at creation, filled late */
  pthread_mutex_lock(&ctx->probe_lock);
  if (!ctx->probed) {
    kerr why;
    kerr_clear(&why);
    ctx->gpu_usable = rt_gpu_auto_ok(ctx->dev, &why);
    describe_gpu(ctx);
    if (ctx->gpu_usable)
      snprintf(ctx->describe[KEOPS_BACKEND_AUTO], sizeof ctx->describe[0], "%s", ctx->describe[KEOPS_BACKEND_GPU]);
    else /* the CPU, and why not the GPU */
      snprintf(ctx->describe[KEOPS_BACKEND_AUTO], sizeof ctx->describe[0], "%.60s; GPU not used: %.79s",
               ctx->describe[KEOPS_BACKEND_CPU], why.msg);
    ctx->probed = 1;
  }
  pthread_mutex_unlock(&ctx->probe_lock);
}

void rt_context_fini(keops_context *ctx) {
  rt_gpu_unload(ctx);
  rt_pool_destroy(ctx->pool);
  rt_jit_destroy(ctx->jit); /* frees the code of every kernel */
  rt_cache_destroy(ctx->cache);
  pthread_mutex_destroy(&ctx->lock);
  pthread_mutex_destroy(&ctx->probe_lock);
}

keops_status rt_kernel_init(keops_kernel *k, kerr *e) {
  atomic_init(&k->cpu, NULL);
  for (int q = 0; q < RT_MAX_DEVICES; q++) atomic_init(&k->gpu[q], NULL);
  const kt_target *t = &k->ctx->target;
  size_t n = strlen(k->prog->key) + strlen(t->cpu) + strlen(t->features) + 128;
  if (!(k->cpu_key = malloc(n))) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return e->status;
  }
  /* the feature string is ~900 characters: a digest keeps lookups short */
  uint64_t h = kfnv64_str(t->features);
  snprintf(k->cpu_key, n, "%s|cpu=%s/%s/%016llx/u%d|keops=%s/%s|llvm=%s", k->prog->key,
           t->isa->name, t->cpu, (unsigned long long)h, t->isa->u, KEOPS_VERSION, KEOPS_BUILD_ID,
           KEOPS_LLVM_VERSION);
  return KEOPS_OK;
}

keops_backend rt_backend(const keops_context *ctx, const keops_run_options *o) {
  if (o->backend != KEOPS_BACKEND_AUTO) return o->backend;
  rt_gpu_probe(ctx);
  /* a device lost to a sticky fault since the context was made: the CPU takes over */
  if (ctx->gpu_usable && ctx->dev->faulted && ctx->dev->faulted(o->device_id)) return KEOPS_BACKEND_CPU;
  return ctx->gpu_usable ? KEOPS_BACKEND_GPU : KEOPS_BACKEND_CPU;
}

static void *build_cpu(void *arg, kerr *e) {
  keops_kernel *k = arg;
  keops_context *ctx = k->ctx;
  pthread_mutex_lock(&ctx->lock);
  if (!ctx->jit) ctx->jit = rt_jit_create(e);
  rt_jit *jit = ctx->jit;
  pthread_mutex_unlock(&ctx->lock);
  int from_disk = 0;
  void *code = jit ? rt_cpu_compile(jit, k->prog, &ctx->target, k->cpu_key, &ctx->disk, &from_disk, e) : NULL;
  if (from_disk) atomic_fetch_add(&ctx->disk_loads, 1);
  return code;
}

const cpu_code *rt_kernel_cpu(keops_kernel *k, kerr *e) {
  const cpu_code *fn = atomic_load_explicit(&k->cpu, memory_order_acquire);
  if (fn) return fn;
  fn = rt_cache_get_owned(k->ctx->cache, k->cpu_key, build_cpu, k, free, e);
  if (fn) atomic_store_explicit(&k->cpu, fn, memory_order_release);
  else if (e->status == KEOPS_OK) /* a failure must never pass for success */
    kerr_set(e, KEOPS_ERROR_COMPILE, "internal error: the CPU compile failed without a message");
  return fn;
}

keops_status rt_run_cpu(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                        void *const *outs, const keops_run_options *o, const fe_ranges *rg,
                        kerr *e) {
  const cpu_code *fn = rt_kernel_cpu(k, e);
  if (!fn) return e->status;
  keops_context *ctx = k->ctx;
  pthread_mutex_lock(&ctx->lock);
  if (!ctx->pool) ctx->pool = rt_pool_create(ctx->nthreads);
  rt_pool *pool = ctx->pool;
  pthread_mutex_unlock(&ctx->lock);
  if (!pool) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory starting the worker pool");
    return e->status;
  }
  int threads = o->num_threads > 0 && o->num_threads < ctx->nthreads ? o->num_threads : ctx->nthreads;
  int lanes = kt_lanes(&ctx->target, k->prog->dtype) * ctx->target.isa->u;
  return rt_cpu_run(pool, fn, k->prog, M, N, args, outs, rg, threads, lanes, e);
}
