/* Internal runtime pieces behind a context: the ORC JIT that holds compiled CPU code, the
 * keyed kernel cache, and the worker pool. */
#ifndef KEOPS_JIT_H
#define KEOPS_JIT_H

#include <llvm-c/Core.h>

#include "dag.h"

/* ---- jit.c: one LLJIT per context ------------------------------------------------------ */

typedef struct rt_jit rt_jit;

/* Creates the JIT (process symbols resolvable, ORC errors captured, never printed).
 * Returns NULL with e set. */
rt_jit *rt_jit_create(kerr *e);
void rt_jit_destroy(rt_jit *j); /* frees all code added; NULL is fine */
/* Links the object file (takes ownership of obj) and returns the address of `symbol`, which
 * stays valid until rt_jit_destroy (symbol NULL: returns j; ORC links lazily, so a bad object
 * may then only fail at the first lookup). NULL with e set on failure. Thread-safe. */
void *rt_jit_add_object(rt_jit *j, LLVMMemoryBufferRef obj, const char *symbol, kerr *e);
/* The address of another symbol of an object already added; NULL with e set. */
void *rt_jit_lookup(rt_jit *j, const char *symbol, kerr *e);

/* ---- cache.c: keyed single-flight cache -------------------------------------------------- */

typedef struct rt_cache rt_cache;
typedef void *(*rt_build_fn)(void *ctx, kerr *e); /* returns the code, NULL with e set */

rt_cache *rt_cache_create(void); /* NULL when out of memory */
void rt_cache_destroy(rt_cache *c);
/* The code for key: built by build(ctx) the first time; callers asking for the same key
 * meanwhile wait and share the result. A failed build is not cached: the callers that were
 * waiting, and later ones, try again. NULL with e set on failure. */
void *rt_cache_get(rt_cache *c, const char *key, rt_build_fn build, void *ctx, kerr *e);
/* The same, the cache owning the code: drop(code) when the cache is destroyed. */
void *rt_cache_get_owned(rt_cache *c, const char *key, rt_build_fn build, void *ctx,
                         void (*drop)(void *), kerr *e);
/* Counters for tests and keops-bench. */
typedef struct rt_cache_stats {
  long hits, builds, waits;
} rt_cache_stats;
rt_cache_stats rt_cache_get_stats(rt_cache *c);

/* ---- pool.c: worker threads ---------------------------------------------------------------- */

typedef struct rt_pool rt_pool;
rt_pool *rt_pool_create(int nthreads); /* workers start lazily; NULL when out of memory */
void rt_pool_destroy(rt_pool *p);
int rt_pool_threads(const rt_pool *p);
/* Runs task(ctx, t) for every t in [0, ntasks) on at most `threads` threads, the caller
 * being one of them, and returns when all are done. When another caller holds the pool
 * the tasks run on the calling thread alone. */
void rt_pool_run(rt_pool *p, int threads, int ntasks, void (*task)(void *ctx, int t), void *ctx);

#endif
