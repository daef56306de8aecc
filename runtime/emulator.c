/* The GPU emulator (emulator.h). A block's threads are fibers on one OS thread (blocks are
 * shared out to a few OS threads): each runs until it reaches a barrier or returns, and when every thread of the block
 * waits at the barrier they all go on, as bar.sync. The kernel calls back (kt_emu_thread) at
 * every barrier and before every shared or global memory access; a fault abandons the
 * faulting fiber and the launch. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "emulator.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/Object.h>

#include "jit.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#define MXCSR_FTZ_DAZ 0x8040u
#endif

/* Fibers switch stacks under the sanitizers' feet: tell them (both APIs are no-ops to call
 * only in their builds). */
#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EMU_TSAN 1
#endif
#endif
#ifdef EMU_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#ifdef EMU_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

/* A thread's stack: the kernel's state and K-min heap (GPU_MAX_HEAP, 16 KiB) and the
 * callbacks, with room for the sanitizers' larger frames. */
#define STACK (256u << 10)

/* ---- modules -------------------------------------------------------------------------------- */

enum { MAX_FNS = 8 };

struct rt_emu_module {
  rt_jit *jit;
  pthread_mutex_t lock; /* guards fns */
  int nfns;
  rt_emu_function fns[MAX_FNS];
};

keops_status rt_emu_module_load(const void *obj, size_t size, rt_emu_module **m, kerr *e) {
  *m = NULL;
  rt_emu_module *mod = calloc(1, sizeof *mod);
  if (!mod) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory loading an emulated module");
    return e->status;
  }
  if (!(mod->jit = rt_jit_create(e))) {
    free(mod);
    return e->status;
  }
  LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, size, "keops-emu");
  /* ORC links lazily, at the first lookup: make sure now that this is an object file */
  char *why = NULL;
  LLVMContextRef C = LLVMContextCreate();
  LLVMBinaryRef bin = LLVMCreateBinary(buf, C, &why);
  int is_obj = bin && LLVMBinaryGetType(bin) >= LLVMBinaryTypeCOFF && LLVMBinaryGetType(bin) <= LLVMBinaryTypeWasm;
  if (bin) LLVMDisposeBinary(bin);
  LLVMContextDispose(C);
  if (!is_obj) {
    kerr_set(e, KEOPS_ERROR_COMPILE, "the emulated module is not an object file (%s)", why ? why : "another kind of file");
    LLVMDisposeMessage(why);
    LLVMDisposeMemoryBuffer(buf);
    rt_jit_destroy(mod->jit);
    free(mod);
    return e->status;
  }
  if (!rt_jit_add_object(mod->jit, buf, NULL, e)) {
    rt_jit_destroy(mod->jit);
    free(mod);
    return e->status;
  }
  pthread_mutex_init(&mod->lock, NULL);
  *m = mod;
  return KEOPS_OK;
}

keops_status rt_emu_module_function(rt_emu_module *m, const char *name, const rt_emu_function **fn,
                                    kerr *e) {
  *fn = NULL;
  size_t n = strlen(name);
  if (n + 6 > sizeof m->fns[0].name) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "no kernel '%.80s' in the emulated module", name);
    return e->status;
  }
  pthread_mutex_lock(&m->lock);
  for (int q = 0; q < m->nfns && !*fn; q++)
    if (!strcmp(m->fns[q].name, name)) *fn = &m->fns[q];
  if (!*fn && m->nfns < MAX_FNS) {
    rt_emu_function *f = &m->fns[m->nfns];
    char info[sizeof f->name];
    snprintf(info, sizeof info, "%s.info", name);
    kerr why;
    kerr_clear(&why);
    void *entry = rt_jit_lookup(m->jit, name, &why);
    const kt_emu_info *ip = entry ? rt_jit_lookup(m->jit, info, &why) : NULL;
    if (ip) {
      f->entry = (kt_emu_entry)(uintptr_t)entry;
      f->info = *ip;
      snprintf(f->name, sizeof f->name, "%s", name);
      *fn = &m->fns[m->nfns++];
    } else {
      kerr_set(e, KEOPS_ERROR_DEVICE, "no kernel '%s' in the emulated module (%s)", name, why.msg);
    }
  } else if (!*fn) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "more than %d kernels asked of one emulated module", MAX_FNS);
  }
  pthread_mutex_unlock(&m->lock);
  return *fn ? KEOPS_OK : e->status;
}

void rt_emu_module_unload(rt_emu_module *m) {
  if (!m) return;
  rt_jit_destroy(m->jit);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

/* ---- fibers ---------------------------------------------------------------------------------- */

/* A saved context. On x86-64, the stack pointer of a stack that holds the callee-saved
 * registers: a switch is 14 instructions, where swapcontext also saves the signal mask with
 * a system call (two thirds of the emulated test suite's time went there). Elsewhere a
 * ucontext. The FP control state is not switched: every fiber of a launch shares it. */
#if defined(__x86_64__)
typedef struct ctx {
  void *sp;
} ctx;
void rt_emu_switch_(void **save, void *to);
__asm__(".text\n.globl rt_emu_switch_\n.hidden rt_emu_switch_\n.type rt_emu_switch_,@function\n"
        "rt_emu_switch_:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
        ".size rt_emu_switch_, .-rt_emu_switch_\n");
static void ctx_switch(ctx *from, ctx *to) { rt_emu_switch_(&from->sp, to->sp); }
/* A first switch to c "returns" into fn with the stack aligned as at a call. */
static void ctx_make(ctx *c, void *stack, size_t size, void (*fn)(void)) {
  void **sp = (void **)((((uintptr_t)stack + size) & ~(uintptr_t)15) - 64);
  memset(sp, 0, 64);
  sp[6] = (void *)(uintptr_t)fn;
  c->sp = sp;
}
#else
typedef struct ctx {
  ucontext_t uc;
} ctx;
static void ctx_switch(ctx *from, ctx *to) { swapcontext(&from->uc, &to->uc); }
static void ctx_make(ctx *c, void *stack, size_t size, void (*fn)(void)) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = NULL;
  makecontext(&c->uc, fn, 0);
}
#endif

enum { F_RUN, F_WAIT, F_EXIT, F_DEAD };

typedef struct block block;

typedef struct fiber {
  kt_emu_thread t; /* first: the kernel's pointer is the fiber's */
  block *b;
  ctx uc;
  void *stack;
  int state;
  void *asan_fake;
  void *tsan;
} fiber;

/* Per 4-byte word of shared memory: its last writer and reader (thread + 1; READERS: several) and
 * the barrier epoch of each; an entry of an older epoch is ordered by a barrier. */
typedef struct shadow {
  uint32_t w_epoch, w_tid, r_epoch, r_tid;
} shadow;
#define READERS UINT32_MAX

struct block {
  const rt_emu_launch *l;
  fiber *f;
  unsigned n;
  unsigned id[3];
  ctx sched;
  fiber *cur;
  unsigned char *shared;
  shadow *sh;
  uint32_t epoch; /* unique over the launch's blocks and barriers */
  kerr *e;
  int failed;
  void *asan_fake;
  const void *sched_bottom;
  size_t sched_size;
  void *tsan;
};

static _Thread_local block *running; /* the block this OS thread runs */

static void to_sched(fiber *f, int dying) {
  block *b = f->b;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? NULL : &f->asan_fake, b->sched_bottom, b->sched_size);
#endif
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(b->tsan, 0);
#endif
  (void)dying;
  ctx_switch(&f->uc, &b->sched);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(f->asan_fake, &b->sched_bottom, &b->sched_size);
#endif
}

static void resume(block *b, fiber *f) {
  b->cur = f;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(&b->asan_fake, f->stack, STACK);
#endif
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(f->tsan, 0);
#endif
  ctx_switch(&b->sched, &f->uc);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(b->asan_fake, NULL, NULL);
#endif
}

static void fiber_main(void) {
  block *b = running;
  fiber *f = b->cur;
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(NULL, &b->sched_bottom, &b->sched_size);
#endif
  b->l->fn->entry(b->l->params, &f->t);
  f->state = F_EXIT;
  to_sched(f, 1);
}

/* Ends the launch with an error naming the thread; the fiber is never resumed. */
__attribute__((format(printf, 2, 3))) static void fault(fiber *f, const char *fmt, ...) {
  block *b = f->b;
  if (!b->failed) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    kerr_set(b->e, KEOPS_ERROR_DEVICE, "emulated %s: thread %u of block (%u, %u, %u) %s", b->l->fn->name,
             f->t.sreg[0], b->id[0], b->id[1], b->id[2], what);
    b->failed = 1;
  }
  f->state = F_DEAD;
  to_sched(f, 1);
}

static void barrier_cb(kt_emu_thread *t) {
  fiber *f = (fiber *)t;
  f->state = F_WAIT;
  to_sched(f, 0);
}

/* Shared memory is checked by 4-byte words (the kernels' elements are 4 or 8 bytes). */
static void shared_access(fiber *f, const unsigned char *p, uint64_t bytes, int store) {
  block *b = f->b;
  uint64_t size = b->l->shared_bytes, off = (uint64_t)(p - b->shared), align = bytes < 16 ? bytes : 16;
  const char *what = store ? "stores" : "loads";
  if (p < b->shared || off > size || bytes > size - off)
    fault(f, "%s %llu bytes at shared offset %lld, outside the %llu bytes of dynamic shared memory", what,
          (unsigned long long)bytes, (long long)(p - b->shared), (unsigned long long)size);
  if ((bytes & 3) || (align & (align - 1)) || (off & (align - 1)))
    fault(f, "%s %llu bytes at shared offset %llu: a misaligned address", what, (unsigned long long)bytes,
          (unsigned long long)off);
  uint32_t tid = f->t.sreg[0] + 1, ep = b->epoch;
  for (shadow *s = &b->sh[off / 4], *end = s + bytes / 4; s < end; s++) {
    unsigned long long at = (unsigned long long)(s - b->sh) * 4;
    if (s->w_epoch == ep && s->w_tid != tid)
      fault(f, "%s shared offset %llu, written by thread %u since the last barrier: a race",
            store ? "writes" : "reads", at, s->w_tid - 1);
    if (store) {
      if (s->r_epoch == ep && s->r_tid != tid)
        fault(f, "writes shared offset %llu, read by %s since the last barrier: a race", at,
              s->r_tid == READERS ? "other threads" : "another thread");
      s->w_epoch = ep, s->w_tid = tid;
    } else if (s->r_epoch != ep) {
      s->r_epoch = ep, s->r_tid = tid;
    } else if (s->r_tid != tid) {
      s->r_tid = READERS;
    }
  }
}

static void access_cb(kt_emu_thread *t, const void *addr, uint64_t bytes, uint32_t kind) {
  fiber *f = (fiber *)t;
  const rt_emu_launch *l = f->b->l;
  int store = (kind & KT_EMU_STORE) != 0;
  if (kind & KT_EMU_SHARED)
    shared_access(f, addr, bytes, store);
  else if (l->global_ok && !l->global_ok(l->global_ctx, addr, bytes))
    fault(f, "%s %llu bytes at %p, outside every allocation of the device", store ? "stores" : "loads",
          (unsigned long long)bytes, addr);
}

/* Runs block b to completion: passes over the runnable threads until none is left, each pass
 * ending at a barrier that every thread must reach. */
static void run_block(block *b) {
  const rt_emu_launch *l = b->l;
  memset(b->shared, 0xff, l->shared_bytes); /* never-written shared memory reads as NaN */
  b->epoch++;
  for (unsigned i = 0; i < b->n; i++) {
    fiber *f = &b->f[i];
    f->b = b;
    f->state = F_RUN;
    f->t = (kt_emu_thread){{i, l->block[0], b->id[0], b->id[1], l->grid[1]}, 0, b->shared, barrier_cb, access_cb};
#ifdef EMU_ASAN /* an abandoned fiber's frames (a fault) leave their scopes poisoned */
    __asan_unpoison_memory_region(f->stack, STACK);
#endif
    ctx_make(&f->uc, f->stack, STACK, fiber_main); /* after the FTZ modes are set */
  }
  for (;;) {
    for (unsigned i = 0; i < b->n && !b->failed; i++)
      if (b->f[i].state == F_RUN) resume(b, &b->f[i]);
    if (b->failed) return;
    unsigned waiting = 0;
    for (unsigned i = 0; i < b->n; i++) waiting += b->f[i].state == F_WAIT;
    if (!waiting) return;
    for (unsigned i = 0; i < b->n; i++)
      if (b->f[i].state == F_EXIT) {
        kerr_set(b->e, KEOPS_ERROR_DEVICE,
                 "emulated %s: thread %u of block (%u, %u, %u) returned while %u threads wait at a "
                 "barrier", l->fn->name, i, b->id[0], b->id[1], b->id[2], waiting);
        b->failed = 1;
        return;
      }
    b->epoch++;
    for (unsigned i = 0; i < b->n; i++) b->f[i].state = F_RUN;
  }
}

/* ---- launches -------------------------------------------------------------------------------- */

static keops_status refuse(kerr *e, const rt_emu_launch *l, const char *why, unsigned long long a,
                           unsigned long long b) {
  char msg[256];
  snprintf(msg, sizeof msg, why, a, b);
  kerr_set(e, KEOPS_ERROR_ARGUMENT, "emulated launch of %s refused: %s", l->fn ? l->fn->name : "(null)", msg);
  return e->status;
}

keops_status rt_emu_check(const rt_emu_launch *l, kerr *e) {
  if (!l->fn || (!l->params && l->fn->info.nparams)) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "emulated launch: NULL %s", l->fn ? "params" : "function");
    return e->status;
  }
  unsigned long long threads = (unsigned long long)l->block[0] * l->block[1] * l->block[2];
  if (!threads || !l->grid[0] || !l->grid[1] || !l->grid[2])
    return refuse(e, l, "an empty grid or block (%llu threads, %llu blocks in x)", threads, l->grid[0]);
  if (l->block[1] != 1 || l->block[2] != 1)
    return refuse(e, l, "blocks of %llu x %llu threads in y and z: the kernels read threadIdx.x only", l->block[1],
                  l->block[2]);
  if (threads > l->max_threads)
    return refuse(e, l, "%llu threads per block, above the device's %llu", threads, l->max_threads);
  if (threads > l->fn->info.maxntid)
    return refuse(e, l, "%llu threads per block, above the kernel's launch bound of %llu", threads,
                  l->fn->info.maxntid);
  if (l->grid[0] > 0x7fffffffu || l->grid[1] > 65535 || l->grid[2] > 65535)
    return refuse(e, l, "a grid of %llu x %llu blocks (limits: 2^31 - 1 in x, 65535 in y and z)", l->grid[0],
                  l->grid[1]);
  if (l->shared_bytes > l->shared_limit)
    return refuse(e, l, "%llu bytes of dynamic shared memory, above the %llu the kernel may use", l->shared_bytes,
                  l->shared_limit);
  return KEOPS_OK;
}

/* The launch's blocks are shared out to up to MAX_WORKERS threads, each with a block's worth of
 * fibers, stacks, shared memory and shadow of its own. */
#define MAX_WORKERS 16

typedef struct grid_run {
  const rt_emu_launch *l;
  pthread_mutex_t lock; /* next, failed, e */
  uint64_t next, nblocks;
  int failed;
  keops_status st;
  kerr *e;
} grid_run;

static void fail(grid_run *g, const kerr *why) {
  pthread_mutex_lock(&g->lock);
  if (!g->failed) {
    g->failed = 1;
    g->st = why->status;
    kerr_set(g->e, why->status, "%s", why->msg);
  }
  pthread_mutex_unlock(&g->lock);
}

static void *worker(void *arg) {
  grid_run *g = arg;
  const rt_emu_launch *l = g->l;
  kerr e;
  kerr_clear(&e);
  block b;
  memset(&b, 0, sizeof b);
  b.l = l;
  b.e = &e;
  b.n = l->block[0];
  size_t page = (size_t)sysconf(_SC_PAGESIZE), span = STACK + page;
  b.f = calloc(b.n, sizeof *b.f);
  b.shared = malloc(l->shared_bytes ? l->shared_bytes : 1);
  b.sh = calloc(l->shared_bytes / 4 + 1, sizeof *b.sh);
  unsigned char *stacks = mmap(NULL, span * b.n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                               -1, 0);
  if (!b.f || !b.shared || !b.sh || stacks == MAP_FAILED) {
    kerr_set(&e, KEOPS_ERROR_OUT_OF_MEMORY, "out of host memory emulating %s (%u threads)", l->fn->name, b.n);
    fail(g, &e);
    goto out;
  }
  for (unsigned i = 0; i < b.n; i++) {
    mprotect(stacks + span * i, page, PROT_NONE); /* a guard below each stack */
    b.f[i].stack = stacks + span * i + page;
#ifdef EMU_TSAN
    b.f[i].tsan = __tsan_create_fiber(0);
#endif
  }
#ifdef EMU_TSAN
  b.tsan = __tsan_get_current_fiber();
#endif
  block *outer = running;
  running = &b;
#ifdef MXCSR_FTZ_DAZ
  unsigned csr = _mm_getcsr();
  if (l->fn->info.ftz) _mm_setcsr(csr | MXCSR_FTZ_DAZ);
#endif
  for (;;) {
    pthread_mutex_lock(&g->lock);
    uint64_t q = g->failed ? g->nblocks : g->next++;
    pthread_mutex_unlock(&g->lock);
    if (q >= g->nblocks) break;
    b.id[0] = (unsigned)(q % l->grid[0]), b.id[1] = (unsigned)(q / l->grid[0] % l->grid[1]);
    b.id[2] = (unsigned)(q / l->grid[0] / l->grid[1]);
    run_block(&b);
    if (b.failed) {
      fail(g, &e);
      break;
    }
  }
#ifdef MXCSR_FTZ_DAZ
  _mm_setcsr(csr);
#endif
  running = outer;
#ifdef EMU_TSAN
  for (unsigned i = 0; i < b.n; i++) __tsan_destroy_fiber(b.f[i].tsan);
#endif
out:
#ifdef EMU_ASAN /* the mapping's addresses will be reused: no stale poison there */
  if (stacks != MAP_FAILED) __asan_unpoison_memory_region(stacks, span * b.n);
#endif
  if (stacks != MAP_FAILED) munmap(stacks, span * b.n);
  free(b.sh);
  free(b.shared);
  free(b.f);
  return NULL;
}

keops_status rt_emu_run(const rt_emu_launch *l, kerr *e) {
  if (rt_emu_check(l, e)) return e->status;
  grid_run g = {l, PTHREAD_MUTEX_INITIALIZER, 0, (uint64_t)l->grid[0] * l->grid[1] * l->grid[2], 0, KEOPS_OK, e};
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  uint64_t nw = cores < 1 ? 1 : cores > MAX_WORKERS ? MAX_WORKERS : (uint64_t)cores;
  if (nw > g.nblocks) nw = g.nblocks;
  pthread_t th[MAX_WORKERS];
  unsigned started = 0;
  for (; started + 1 < nw; started++) /* the caller is the last worker */
    if (pthread_create(&th[started], NULL, worker, &g)) break;
  worker(&g);
  for (unsigned t = 0; t < started; t++) pthread_join(th[t], NULL);
  pthread_mutex_destroy(&g.lock);
  return g.st;
}
