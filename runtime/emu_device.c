/* The emulated GPU as a device (rt_emu_device, KEOPS_GPU=emulator): two devices shaped as
 * an H100 (132 SMs, 1024 threads and 227 KiB of opt-in shared memory per block), whose
 * memory is host memory under an allocation table, and whose streams run their work only
 * when synchronised - so that a missing synchronisation in the runtime shows as a wrong
 * result, not as luck. Kernels are kt_gpuemu's code run by the emulator (emulator.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "emulator.h"

#define NDEV 2
#define MAX_DEPTH 64 /* enter's stack per thread */

/* Hooks accept a NULL e (device.h): their failures then go to a local kerr. */
#define NO_NULL(e)                                                                                 \
  kerr local_err_;                                                                                 \
  if (!(e)) kerr_clear(&local_err_), (e) = &local_err_

/* ---- devices and the current one -------------------------------------------------------- */

static keops_status emu_load(kerr *e) {
  (void)e;
  return KEOPS_OK;
}

static keops_status emu_count(int *count, kerr *e) {
  (void)e;
  *count = NDEV;
  return KEOPS_OK;
}

static keops_status emu_info(int ordinal, rt_device_info *out, kerr *e) {
  if (ordinal < 0 || ordinal >= NDEV) {
    kerr_set(e, KEOPS_ERROR_NO_DEVICE, "emulated device %d does not exist (there are %d)", ordinal, NDEV);
    return KEOPS_ERROR_NO_DEVICE;
  }
  *out = (rt_device_info){.ordinal = ordinal, .cc_major = 9, .cc_minor = 0, .sm_count = 132,
                          .max_threads_per_block = 1024, .max_shared_per_block = 48 << 10,
                          .max_shared_per_block_optin = 227 << 10, .warp_size = 32,
                          .driver_version = 12080};
  snprintf(out->name, sizeof out->name, "keops GPU emulator %d (host)", ordinal);
  return KEOPS_OK;
}

static _Thread_local int current[MAX_DEPTH], depth;

static keops_status emu_enter(int ordinal, kerr *e) {
  NO_NULL(e);
  rt_device_info d;
  if (emu_info(ordinal, &d, e)) return e->status;
  if (depth == MAX_DEPTH) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "emulated devices entered %d times without leaving", MAX_DEPTH);
    return e->status;
  }
  current[depth++] = ordinal;
  return KEOPS_OK;
}

static void emu_leave(void) {
  if (depth > 0) depth--;
}

static int cur_dev(const char *what, kerr *e) {
  if (depth == 0) kerr_set(e, KEOPS_ERROR_DEVICE, "%s with no current emulated device (enter first)", what);
  return depth ? current[depth - 1] : -1;
}

/* ---- memory ----------------------------------------------------------------------------- */

typedef struct region {
  unsigned char *base;
  size_t size;
  int dev;
} region;

static struct {
  pthread_mutex_t lock;
  region *r;
  size_t n, cap;
} mem = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

/* The region holding [p, p + bytes) on device dev (-1: any), copied into *out. */
static int find(const void *p, size_t bytes, int dev, region *out) {
  const unsigned char *a = p;
  int found = 0;
  pthread_mutex_lock(&mem.lock);
  for (size_t q = 0; q < mem.n && !found; q++) {
    region *r = &mem.r[q];
    if (a >= r->base && (size_t)(a - r->base) <= r->size && bytes <= r->size - (size_t)(a - r->base) &&
        (dev < 0 || r->dev == dev))
      *out = *r, found = 1;
  }
  pthread_mutex_unlock(&mem.lock);
  return found;
}

static int global_ok(void *ctx, const void *addr, uint64_t bytes) {
  region r;
  return find(addr, bytes, (int)(intptr_t)ctx, &r);
}

static keops_status emu_alloc(size_t bytes, rt_dptr *dptr, kerr *e) {
  NO_NULL(e);
  *dptr = 0;
  int dev = cur_dev("alloc", e);
  if (dev < 0 || !bytes) return e->status;
  unsigned char *p = malloc(bytes);
  pthread_mutex_lock(&mem.lock);
  if (p && mem.n == mem.cap) {
    size_t cap = mem.cap ? 2 * mem.cap : 64;
    region *r = realloc(mem.r, cap * sizeof *r);
    if (r)
      mem.r = r, mem.cap = cap;
  }
  if (p && mem.n < mem.cap) {
    memset(p, 0xff, bytes); /* fresh device memory reads as NaN */
    mem.r[mem.n++] = (region){p, bytes, dev};
    *dptr = (rt_dptr)(uintptr_t)p;
  }
  pthread_mutex_unlock(&mem.lock);
  if (!*dptr) {
    free(p);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of emulated device memory (%zu bytes)", bytes);
  }
  return e->status;
}

static keops_status emu_free(rt_dptr dptr, kerr *e) {
  NO_NULL(e);
  if (!dptr) return KEOPS_OK;
  void *p = (void *)(uintptr_t)dptr;
  int found = 0;
  pthread_mutex_lock(&mem.lock);
  for (size_t q = 0; q < mem.n && !found; q++)
    if (mem.r[q].base == p) mem.r[q] = mem.r[--mem.n], found = 1;
  pthread_mutex_unlock(&mem.lock);
  if (!found) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "free of %p, which no emulated allocation starts at", p);
    return KEOPS_ERROR_DEVICE;
  }
  free(p);
  return KEOPS_OK;
}

static keops_status emu_pointer_device(rt_dptr dptr, int *ordinal, kerr *e) {
  NO_NULL(e);
  region r;
  *ordinal = -1;
  if (!find((void *)(uintptr_t)dptr, 1, -1, &r)) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "%p is not emulated device memory", (void *)(uintptr_t)dptr);
    return KEOPS_ERROR_DEVICE;
  }
  *ordinal = r.dev;
  return KEOPS_OK;
}

/* ---- streams: work queued until a synchronisation --------------------------------------- */

enum { Q_HTOD, Q_ZERO, Q_LAUNCH };

typedef struct work {
  struct work *next;
  int kind;
  unsigned char *dst;
  size_t bytes;
  rt_emu_launch l;
  void *argp[32];
  unsigned char data[]; /* Q_HTOD: the source, copied when queued; Q_LAUNCH: the arguments */
} work;

struct rt_stream {
  int dev;
  work *head, *tail;
  pthread_mutex_t run; /* one drainer at a time, so the work runs in order */
  struct rt_stream *next;
};

static struct {
  pthread_mutex_t lock; /* the queues and the list */
  struct rt_stream dflt[NDEV];
  struct rt_stream *list;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .dflt = {{0, NULL, NULL, PTHREAD_MUTEX_INITIALIZER, NULL}, {1, NULL, NULL, PTHREAD_MUTEX_INITIALIZER, NULL}}};

static struct rt_stream *stream_of(rt_stream *s, int dev) { return s ? s : &q.dflt[dev]; }

static void push(struct rt_stream *s, work *w) {
  pthread_mutex_lock(&q.lock);
  if (s->tail)
    s->tail->next = w;
  else
    s->head = w;
  s->tail = w;
  pthread_mutex_unlock(&q.lock);
}

/* Runs the stream's queued work in order; the first failure is returned, the rest of the
 * queue still drains (a device's later work runs too). */
static keops_status drain(struct rt_stream *s, kerr *e) {
  keops_status st = KEOPS_OK;
  pthread_mutex_lock(&s->run);
  for (;;) {
    pthread_mutex_lock(&q.lock);
    work *w = s->head;
    if (w && !(s->head = w->next)) s->tail = NULL;
    pthread_mutex_unlock(&q.lock);
    if (!w) break;
    if (w->kind == Q_HTOD)
      memcpy(w->dst, w->data, w->bytes);
    else if (w->kind == Q_ZERO)
      memset(w->dst, 0, w->bytes);
    else if (st == KEOPS_OK)
      st = rt_emu_run(&w->l, e);
    free(w);
  }
  pthread_mutex_unlock(&s->run);
  return st;
}

/* A copy or memset's device range must lie in one allocation of the current device. */
static int range_ok(const char *what, rt_dptr d, size_t bytes, int dev, kerr *e) {
  region r;
  if (find((void *)(uintptr_t)d, bytes, dev, &r)) return 1;
  kerr_set(e, KEOPS_ERROR_DEVICE, "%s of %zu bytes at %p: not inside one allocation of emulated device %d", what,
           bytes, (void *)(uintptr_t)d, dev);
  return 0;
}

static keops_status emu_htod(rt_dptr dst, const void *src, size_t bytes, rt_stream *stream, kerr *e) {
  NO_NULL(e);
  int dev = cur_dev("htod", e);
  if (dev < 0 || !bytes || !range_ok("htod", dst, bytes, dev, e)) return e->status;
  work *w = calloc(1, sizeof *w + bytes);
  if (!w) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of host memory queueing a copy");
    return e->status;
  }
  w->kind = Q_HTOD, w->dst = (unsigned char *)(uintptr_t)dst, w->bytes = bytes;
  memcpy(w->data, src, bytes); /* the caller may reuse src once the call returns (pageable) */
  push(stream_of(stream, dev), w);
  return KEOPS_OK;
}

static keops_status emu_memset0(rt_dptr dptr, size_t bytes, rt_stream *stream, kerr *e) {
  NO_NULL(e);
  int dev = cur_dev("memset", e);
  if (dev < 0 || !bytes || !range_ok("memset", dptr, bytes, dev, e)) return e->status;
  work *w = calloc(1, sizeof *w);
  if (!w) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of host memory queueing a memset");
    return e->status;
  }
  w->kind = Q_ZERO, w->dst = (unsigned char *)(uintptr_t)dptr, w->bytes = bytes;
  push(stream_of(stream, dev), w);
  return KEOPS_OK;
}

/* Into pageable host memory: complete when the call returns, after the stream's work. */
static keops_status emu_dtoh(void *dst, rt_dptr src, size_t bytes, rt_stream *stream, kerr *e) {
  NO_NULL(e);
  int dev = cur_dev("dtoh", e);
  if (dev < 0 || !bytes || !range_ok("dtoh", src, bytes, dev, e)) return e->status;
  if (drain(stream_of(stream, dev), e)) return e->status;
  memcpy(dst, (void *)(uintptr_t)src, bytes);
  return KEOPS_OK;
}

static keops_status emu_launch(rt_function *fn, const unsigned grid[3], const unsigned block[3],
                               unsigned shared_bytes, rt_stream *stream, void **params, kerr *e) {
  NO_NULL(e);
  const rt_emu_function *f = (const rt_emu_function *)fn;
  int dev = cur_dev("launch", e);
  if (dev < 0) return e->status;
  unsigned n = f ? f->info.nparams : 0;
  if (n > 32) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "emulated launch of %s: %u arguments, more than 32", f->name, n);
    return e->status;
  }
  rt_device_info d;
  emu_info(dev, &d, NULL);
  rt_emu_launch l = {f, {grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]}, shared_bytes,
                     (unsigned)d.max_shared_per_block_optin, (unsigned)d.max_threads_per_block, params,
                     global_ok, (void *)(intptr_t)dev};
  if (rt_emu_check(&l, e)) return e->status;
  work *w = calloc(1, sizeof *w + 8 * (size_t)n);
  if (!w) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of host memory queueing a launch");
    return e->status;
  }
  w->kind = Q_LAUNCH;
  for (unsigned a = 0; a < n; a++) { /* read before launch returns, as the driver does */
    memcpy(w->data + 8 * a, params[a], 8);
    w->argp[a] = w->data + 8 * a;
  }
  w->l = l;
  w->l.params = w->argp;
  push(stream_of(stream, dev), w);
  return KEOPS_OK;
}

static keops_status emu_sync(rt_stream *stream, kerr *e) {
  NO_NULL(e);
  int dev = cur_dev("sync", e);
  if (dev < 0) return e->status;
  if (stream) return drain(stream, e);
  keops_status st = drain(&q.dflt[dev], e);
  pthread_mutex_lock(&q.lock);
  struct rt_stream *s = q.list;
  pthread_mutex_unlock(&q.lock);
  for (; s; s = s->next) /* streams are destroyed by their owner, not while it syncs */
    if (s->dev == dev) {
      keops_status t = drain(s, e);
      if (st == KEOPS_OK) st = t;
    }
  return st;
}

static keops_status emu_stream_create(rt_stream **stream, kerr *e) {
  NO_NULL(e);
  *stream = NULL;
  int dev = cur_dev("stream_create", e);
  if (dev < 0) return e->status;
  struct rt_stream *s = calloc(1, sizeof *s);
  if (!s) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of host memory creating a stream");
    return e->status;
  }
  s->dev = dev;
  pthread_mutex_init(&s->run, NULL);
  pthread_mutex_lock(&q.lock);
  s->next = q.list;
  q.list = s;
  pthread_mutex_unlock(&q.lock);
  *stream = s;
  return KEOPS_OK;
}

static keops_status emu_stream_destroy(rt_stream *stream, kerr *e) {
  NO_NULL(e);
  if (!stream) return KEOPS_OK;
  keops_status st = drain(stream, e); /* as the driver: queued work completes first */
  pthread_mutex_lock(&q.lock);
  for (struct rt_stream **p = &q.list; *p; p = &(*p)->next)
    if (*p == stream) {
      *p = stream->next;
      break;
    }
  pthread_mutex_unlock(&q.lock);
  pthread_mutex_destroy(&stream->run);
  free(stream);
  return st;
}

/* ---- modules ------------------------------------------------------------------------------ */

static keops_status emu_module_load(const void *image, size_t size, rt_module **module, kerr *e) {
  NO_NULL(e);
  *module = NULL;
  if (cur_dev("module_load", e) < 0) return e->status;
  rt_emu_module *m;
  if (rt_emu_module_load(image, size, &m, e)) return e->status;
  *module = (rt_module *)m;
  return KEOPS_OK;
}

static keops_status emu_module_function(rt_module *module, const char *name, rt_function **fn, kerr *e) {
  NO_NULL(e);
  const rt_emu_function *f;
  *fn = NULL;
  if (rt_emu_module_function((rt_emu_module *)module, name, &f, e)) return e->status;
  *fn = (rt_function *)(uintptr_t)f;
  return KEOPS_OK;
}

static keops_status emu_function_max_threads(rt_function *fn, int *threads, kerr *e) {
  (void)e; /* the launch bound: the host has no register file to run out of */
  *threads = (int)((const rt_emu_function *)fn)->info.maxntid;
  return KEOPS_OK;
}

static keops_status emu_module_unload(rt_module *module, kerr *e) {
  (void)e;
  rt_emu_module_unload((rt_emu_module *)module);
  return KEOPS_OK;
}

const rt_device rt_emu_device = {
    .name = "GPU emulator",
    .image = RT_IMAGE_HOST_OBJECT,
    .load = emu_load,
    .count = emu_count,
    .info = emu_info,
    .enter = emu_enter,
    .leave = emu_leave,
    .module_load = emu_module_load,
    .module_function = emu_module_function,
    .function_max_threads = emu_function_max_threads,
    .module_unload = emu_module_unload,
    .alloc = emu_alloc,
    .free = emu_free,
    .htod = emu_htod,
    .dtoh = emu_dtoh,
    .memset0 = emu_memset0,
    .pointer_device = emu_pointer_device,
    .launch = emu_launch,
    .sync = emu_sync,
    .stream_create = emu_stream_create,
    .stream_destroy = emu_stream_destroy,
};
