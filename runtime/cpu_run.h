/* The CPU backend behind the API (cpu_run.c). */
#ifndef KEOPS_CPU_RUN_H
#define KEOPS_CPU_RUN_H

#include "cpu.h"
#include "disk.h"
#include "jit.h"

/* Compiles p for t into jit, or links the object the disk cache holds for key (then
 * *from_disk = 1); a compiled object is stored there. The code lives as long as the JIT; the
 * returned struct is the caller's (free). NULL with e set. */
cpu_code *rt_cpu_compile(rt_jit *jit, const fe_program *p, const kt_target *t, const char *key,
                         const rt_disk *disk, int *from_disk, kerr *e);
/* Runs the code over the user's arrays on `threads` threads of pool (lanes = rows per block of
 * the kernel, for chunking), over the pairs of rg (NULL: all). */
keops_status rt_cpu_run(rt_pool *pool, const cpu_code *code, const fe_program *p, int64_t M,
                        int64_t N, const void *const *args, void *const *outs,
                        const fe_ranges *rg, int threads, int lanes, kerr *e);

#endif
