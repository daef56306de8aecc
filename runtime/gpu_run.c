/* The GPU backend behind the API: PTX per (program, architecture) and a module per
 * (program, device), both through the context's single-flight cache; host arrays are copied
 * in and out, device pointers are used as they are. When the rows cannot fill the device,
 * j is split across blockIdx.y and a second kernel (keops_combine) merges the partial
 * states of each row. Block-sparse runs launch the ranges kernel over a lookup table built here
 * (ranges_table, gpu.h). Devices are reached only through the context's device table (ctx->dev,
 * device.h), so any implementation of it runs this code unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm/Config/llvm-config.h>

#include "device.h"
#include "gpu.h"
#include "red.h"
#include "runtime.h"

/* What a (kernel, device) needs at launch; lives until the context is destroyed. */
typedef struct rt_gpu_code {
  rt_module *module;
  rt_function *fn, *combine, *ranges;
  int fn_threads, combine_threads, ranges_threads; /* the most threads per block each launches with */
  struct rt_gpu_code *next; /* the context's list, for unloading */
  int ordinal;
} rt_gpu_code;

typedef struct build_ctx {
  keops_kernel *k;
  const rt_device_info *info;
  kt_target t;
  int here; /* load in the context current on this thread, for this run only (not cached) */
} build_ctx;

/* The device's image: PTX text, or a host object for the emulator. */
typedef struct image {
  char *code;
  size_t len;
} image;

static void drop_image(void *p) {
  image *im = p;
  free(im->code);
  free(im);
}

static void *build_image(void *arg, kerr *e) {
  build_ctx *b = arg;
  image *im = calloc(1, sizeof *im);
  kc_out out = b->k->ctx->dev->image == RT_IMAGE_PTX ? KC_ASM : KC_OBJ;
  if (!im || !(im->code = kt_compile(b->k->prog, &b->t, "keops_kernel", out, &im->len, e))) {
    if (!im) kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    free(im);
    return NULL;
  }
  return im;
}

static void *build_module(void *arg, kerr *e) {
  build_ctx *b = arg;
  keops_context *ctx = b->k->ctx;
  const rt_device *dev = ctx->dev;
  size_t n = strlen(b->k->prog->key) + strlen(b->t.cpu) + strlen(b->t.features) + 8;
  char *pkey = malloc(n);
  if (!pkey) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  snprintf(pkey, n, "%s|%s=%s%s", b->k->prog->key, b->t.isa->name, b->t.cpu, b->t.features);
  const image *im = rt_cache_get_owned(ctx->cache, pkey, build_image, b, drop_image, e);
  free(pkey);
  rt_gpu_code *c = im ? calloc(1, sizeof *c) : NULL;
  if (im && !c) kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
  if (!c) return NULL;
  if (!b->here && dev->enter(b->info->ordinal, e) != KEOPS_OK) {
    free(c);
    return NULL;
  }
  if (dev->module_load(im->code, im->len, &c->module, e) == KEOPS_OK &&
      (dev->module_function(c->module, "keops_kernel", &c->fn, e) != KEOPS_OK ||
       dev->module_function(c->module, "keops_combine", &c->combine, e) != KEOPS_OK ||
       dev->module_function(c->module, "keops_kernel" GPU_RANGES_SUFFIX, &c->ranges, e) != KEOPS_OK ||
       dev->function_max_threads(c->fn, &c->fn_threads, e) != KEOPS_OK ||
       dev->function_max_threads(c->combine, &c->combine_threads, e) != KEOPS_OK ||
       dev->function_max_threads(c->ranges, &c->ranges_threads, e) != KEOPS_OK))
    dev->module_unload(c->module, NULL), c->module = NULL, c->fn = NULL;
  if (!b->here) dev->leave();
  if (!c->fn) {
    free(c);
    return NULL;
  }
  c->ordinal = b->info->ordinal;
  if (b->here) return c;
  pthread_mutex_lock(&ctx->lock);
  c->next = ctx->gpu_code;
  ctx->gpu_code = c;
  pthread_mutex_unlock(&ctx->lock);
  return c;
}

/* ---- scratch device memory for host-array runs ----------------------------------------------
 *
 * A run on host arrays needs device copies of its inputs, buffers for its outputs and, with a
 * j-split, for the partial states. Allocating and freeing them on every run costs driver
 * calls, and cuMemFree synchronises the whole device, so those runs take a scratch set from
 * their device's free list instead and give it back after their final synchronisation. A set
 * has one buffer per slot (input position, output, partial states), grown when a run needs
 * more (freed and allocated again, at least 5/4 of the old size so that slowly growing sizes
 * do not reallocate on every run), never shrunk while kept. One buffer per array rather than
 * one for the whole run: the devices check every copy and kernel access against its
 * allocation (the fake driver, the emulator), and a first run still gets buffers of exactly
 * its sizes, so those checks keep catching a kernel that reads past an array's end.
 *
 * Bounds, so that a context does not pin device memory the user's other work needs: a set
 * keeps at most SCRATCH_SET_BYTES (buffers beyond are freed when it is given back) and a
 * device keeps at most SCRATCH_SETS idle sets (more concurrent runs allocate sets of their
 * own, freed after their run): at most 256 MiB per context and device. A run whose arrays
 * exceed 64 MiB copies them over PCIe (milliseconds) and usually computes for far longer, so
 * allocating them again (tens of microseconds) costs it little; short runs on small arrays,
 * whose time the driver calls dominate, are the ones the sets serve. */
#define SCRATCH_SLOTS (FE_MAX_ARGS + 5) /* inputs by position, the outputs, the partial states,
                                           a ranges run's lookup table and j-ranges */
#define SCRATCH_OUT FE_MAX_ARGS
#define SCRATCH_PARTIAL (FE_MAX_ARGS + 2)
#define SCRATCH_LOOKUP (FE_MAX_ARGS + 3)
#define SCRATCH_JR (FE_MAX_ARGS + 4)
#define SCRATCH_SET_BYTES ((size_t)64 << 20)
#define SCRATCH_SETS 4

typedef struct rt_scratch {
  rt_dptr ptr[SCRATCH_SLOTS];
  size_t size[SCRATCH_SLOTS];
  struct rt_scratch *next;
} rt_scratch;

/* What a run needs of a device, asked of the driver once per context and device: its
 * properties and the code target they give; and its idle scratch sets (under ctx->lock). */
struct rt_gpu_dev {
  rt_device_info info;
  kt_target t;
  rt_scratch *idle;
  int nidle;
};

/* Frees every buffer of s; the device current, nothing queued using them. */
static void scratch_release(const rt_device *dev, rt_scratch *s) {
  for (int q = 0; q < SCRATCH_SLOTS; q++)
    if (s->ptr[q]) dev->free(s->ptr[q], NULL);
  free(s);
}

void rt_gpu_unload(keops_context *ctx) {
  const rt_device *dev = ctx->dev;
  for (rt_gpu_code *c = ctx->gpu_code, *n; c; c = n) {
    n = c->next;
    if (dev->enter(c->ordinal, NULL) == KEOPS_OK) {
      dev->module_unload(c->module, NULL);
      dev->leave();
    }
    free(c);
  }
  ctx->gpu_code = NULL;
  /* no run is in flight: every kernel holds the context, so this is its last reference */
  for (int q = 0; q < RT_MAX_DEVICES; q++) {
    rt_gpu_dev *d = ctx->gpu_devs[q];
    if (!d) continue;
    int in = d->idle && dev->enter(q, NULL) == KEOPS_OK;
    for (rt_scratch *s = d->idle, *n; s; s = n) {
      n = s->next;
      if (in) /* a device lost to a fault keeps them; only a reset reclaims its memory */
        scratch_release(dev, s);
      else
        free(s);
    }
    if (in) dev->leave();
    free(d);
    ctx->gpu_devs[q] = NULL;
  }
}

static rt_gpu_dev *gpu_dev(keops_context *ctx, int ordinal, kerr *e) {
  const rt_device *dev = ctx->dev;
  rt_gpu_dev *d = NULL;
  pthread_mutex_lock(&ctx->lock);
  if (ordinal >= 0 && ordinal < RT_MAX_DEVICES && (d = ctx->gpu_devs[ordinal])) {
    pthread_mutex_unlock(&ctx->lock);
    return d;
  }
  pthread_mutex_unlock(&ctx->lock);
  rt_gpu_dev q;
  if (dev->load(e) || dev->info(ordinal, &q.info, e)) return NULL;
  if (dev->image == RT_IMAGE_PTX) {
    char sm[16], ptx[16];
    if (rt_ptx_target(&q.info, LLVM_VERSION_MAJOR, sm, sizeof sm, ptx, sizeof ptx, e)) return NULL;
    kt_set(&q.t, &kt_nvptx, sm, ptx);
  } else { /* the emulator runs the GPU's kernel compiled for this host */
    kt_set(&q.t, &kt_gpuemu, ctx->target.cpu, ctx->target.features);
  }
  if (ordinal >= RT_MAX_DEVICES) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "device %d: keops runs on the first %d devices", ordinal, RT_MAX_DEVICES);
    return NULL;
  }
  if (!(d = malloc(sizeof *d))) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  *d = q;
  d->idle = NULL;
  d->nidle = 0;
  pthread_mutex_lock(&ctx->lock);
  if (ctx->gpu_devs[ordinal]) /* another thread was first: keep its copy */
    free(d), d = ctx->gpu_devs[ordinal];
  else
    ctx->gpu_devs[ordinal] = d;
  pthread_mutex_unlock(&ctx->lock);
  return d;
}

/* The code of k for device gd (compiled and loaded on first use). here: loaded into the
 * context current on this thread, for one run (the caller unloads it and frees it), not
 * cached. */
static rt_gpu_code *gpu_code(keops_kernel *k, const rt_gpu_dev *gd, int here, kerr *e) {
  const rt_device_info *info = &gd->info;
  /* The kernel remembers its code per device, so that a repeated run neither builds the key
   * nor looks it up: the code lives until the context is destroyed, and the kernel holds its
   * context. (gpu_dev refused ordinals beyond the array.) */
  rt_gpu_code *c = here ? NULL : atomic_load_explicit(&k->gpu[info->ordinal], memory_order_acquire);
  if (c) return c;
  build_ctx b = {k, info, gd->t, here};
  const rt_device *dev = k->ctx->dev;
  char suffix[96];
  snprintf(suffix, sizeof suffix, "|dev=%s:%d", dev->name, info->ordinal);
  size_t n = strlen(k->prog->key) + sizeof suffix + strlen(b.t.cpu) + strlen(b.t.features) + 8;
  char *key = malloc(n);
  if (!key) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  snprintf(key, n, "%s|gpu=%s%s%s", k->prog->key, b.t.cpu, b.t.features, suffix);
  c = here ? build_module(&b, e) : rt_cache_get(k->ctx->cache, key, build_module, &b, e);
  free(key);
  if (c && !here) atomic_store_explicit(&k->gpu[info->ordinal], c, memory_order_release);
  return c;
}

/* ---- running ------------------------------------------------------------------------------ */

typedef struct run {
  const fe_program *p;
  const rt_device *dev;
  const rt_device_info *info;
  rt_stream *stream;
  int64_t rows, nred;
  int U; /* rows per thread (gpu_rows_per_thread) */
  rt_dptr in[FE_MAX_ARGS], out[2], partial;
  size_t es;
  /* a ranges run: its tables in host memory (ranges_table) and their device copies */
  int64_t *lookup, *jr, nlookup, njr;
  rt_dptr dlookup, djr;
} run;

static int64_t arg_rows(const fe_program *p, int pos, int64_t M, int64_t N) {
  int c = p->args.cat[pos];
  return c == CAT_I ? M : c == CAT_J ? N : 1;
}

/* Threads per block: as many as the launch bound, the device, the kernel's registers and
 * local memory (fn_threads) and the shared memory allow, in whole warps. */
static unsigned block_size(const fe_program *p, const rt_device_info *d, int fn_threads, size_t es,
                           unsigned *shared) {
  unsigned bs = GPU_MAX_BLOCK < d->max_threads_per_block ? GPU_MAX_BLOCK : (unsigned)d->max_threads_per_block;
  if (fn_threads < (int)bs) bs = fn_threads > 0 ? (unsigned)fn_threads : 0;
  size_t per = (size_t)p->red_width * es;
  size_t limit = (size_t)(d->max_shared_per_block_optin > d->max_shared_per_block ? d->max_shared_per_block_optin
                                                                                   : d->max_shared_per_block);
  if (per && bs * per > limit) bs = (unsigned)(limit / per);
  bs = bs / 32 * 32;
  *shared = (unsigned)(bs * per);
  return bs;
}

/* Rows a block of bs threads in S slices reduces (gpu.h). */
static int64_t block_rows(const run *r, unsigned bs, unsigned S) { return (int64_t)(bs / S) * r->U; }

/* Slices per row (gpu.h), a power of two dividing bs: doubled while the rows leave the device
 * short of `want` blocks, each slice keeps at least 64 j's, and the slices' states fit in
 * the shared memory a block has without opting in. *shared grows to hold those states. */
static unsigned slice_count(const run *r, unsigned bs, int64_t want, unsigned *shared) {
  size_t state = (size_t)r->p->state * sizeof(double) * (size_t)r->U;
  unsigned S = 1;
  for (unsigned S2 = 2; S2 <= bs && bs % S2 == 0; S2 *= 2) {
    int64_t R = block_rows(r, bs, S);
    if ((r->rows + R - 1) / R >= want || r->nred / S2 < 64 ||
        (size_t)(S2 - 1) * (bs / S2) * state > (size_t)r->info->max_shared_per_block)
      break;
    S = S2;
  }
  size_t merge = (size_t)(S - 1) * (bs / S) * state;
  if (merge > *shared) *shared = (unsigned)merge;
  return S;
}

static keops_status launch(run *r, rt_gpu_code *c, unsigned bs, unsigned shared, unsigned nslice,
                           unsigned nsplit, kerr *e) {
  const fe_program *p = r->p;
  int64_t j0 = 0, j1 = r->nred, S = nslice, R = block_rows(r, bs, nslice);
  void *params[5 + FE_MAX_ARGS + 2];
  int np = 0;
  params[np++] = &r->rows;
  params[np++] = &j0;
  params[np++] = &j1;
  params[np++] = &S;
  params[np++] = &r->partial;
  for (int pos = 0; pos < p->args.n; pos++) params[np++] = &r->in[pos];
  for (int o = 0; o < p->nout; o++) params[np++] = &r->out[o];
  unsigned grid[3] = {(unsigned)((r->rows + R - 1) / R), nsplit, 1}, block[3] = {bs, 1, 1};
  return r->dev->launch(c->fn, grid, block, shared, r->stream, params, e);
}

/* A ranges run's tables for blocks of R rows (gpu.h): r->lookup, an entry (row start, row end,
 * first range, end range) per CUDA block, so that a block's rows lie in one block of the
 * ranges (cut in pieces of at most R rows), or in one gap between them (an empty list of
 * ranges: its rows are written the reduction of nothing); and r->jr, each block's j-ranges with
 * the empty ones dropped and adjacent ones merged (fewer rounds of partly filled tiles). */
static keops_status ranges_table(run *r, const fe_ranges *rg, int64_t R, kerr *e) {
  int64_t nl = 0, nj = 0, at = 0;
  for (int64_t b = 0; b <= rg->nblocks; b++) {
    int64_t s = b < rg->nblocks ? rg->rows[2 * b] : r->rows, t = b < rg->nblocks ? rg->rows[2 * b + 1] : r->rows;
    nl += (s - at + R - 1) / R + (t - s + R - 1) / R;
    if (b < rg->nblocks && t > s) nj += rg->slices[b] - fe_slice_begin(rg, b);
    at = t;
  }
  if (nl > INT32_MAX) { /* CUDA's grid is at most 2^31 - 1 blocks wide */
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "the ranges' %lld blocks of rows need %lld CUDA blocks of %lld rows, "
             "more than a grid holds (%d)", (long long)rg->nblocks, (long long)nl, (long long)R, INT32_MAX);
    return e->status;
  }
  r->lookup = malloc(sizeof(int64_t) * 4 * (size_t)(nl ? nl : 1));
  r->jr = malloc(sizeof(int64_t) * 2 * (size_t)(nj ? nj : 1));
  if (!r->lookup || !r->jr) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory for the lookup table of %lld CUDA blocks", (long long)nl);
    return e->status;
  }
  int64_t *l = r->lookup, *j = r->jr, q = 0;
  at = 0;
  for (int64_t b = 0; b <= rg->nblocks; b++) {
    int64_t s = b < rg->nblocks ? rg->rows[2 * b] : r->rows, t = b < rg->nblocks ? rg->rows[2 * b + 1] : r->rows;
    for (int64_t i = at; i < s; i += R, l += 4) l[0] = i, l[1] = s - i > R ? i + R : s, l[2] = l[3] = 0;
    if (t > s) {
      int64_t q0 = q;
      for (int64_t k = fe_slice_begin(rg, b); k < rg->slices[b]; k++) {
        const int64_t *c = rg->red + 2 * k;
        if (c[0] == c[1]) continue;
        if (q > q0 && j[2 * q - 1] == c[0]) j[2 * q - 1] = c[1];
        else j[2 * q] = c[0], j[2 * q + 1] = c[1], q++;
      }
      for (int64_t i = s; i < t; i += R, l += 4) l[0] = i, l[1] = t - i > R ? i + R : t, l[2] = q0, l[3] = q;
    }
    at = t;
  }
  r->nlookup = nl;
  r->njr = q;
  return KEOPS_OK;
}

/* A ranges run's threads per block: bs, or fewer when the ranges' blocks are short, so that a
 * CUDA block's R U rows are not mostly past its block's end (idle threads): whole warps that
 * cover the mean non-empty block, at least 64 threads (an SM holds at most 32 blocks: 64
 * threads still fill its 2048). */
static unsigned ranges_block_size(const fe_ranges *rg, int U, unsigned bs) {
  int64_t rows = 0, n = 0;
  for (int64_t b = 0; b < rg->nblocks; b++)
    if (rg->rows[2 * b + 1] > rg->rows[2 * b]) rows += rg->rows[2 * b + 1] - rg->rows[2 * b], n++;
  if (!n) return bs;
  int64_t want = ((rows + n - 1) / n + U - 1) / U;
  want = want < 64 ? 64 : (want + 31) / 32 * 32;
  return want < (int64_t)bs ? (unsigned)want : bs;
}

/* The ranges kernel over the lookup table's blocks: one slice, no j-split (the ranges already
 * cut the work, and a block's rows share their list of j-ranges). */
static keops_status launch_ranges(run *r, rt_gpu_code *c, unsigned bs, unsigned shared, kerr *e) {
  const fe_program *p = r->p;
  void *params[3 + FE_MAX_ARGS + 2];
  int np = 0;
  params[np++] = &r->rows;
  params[np++] = &r->dlookup;
  params[np++] = &r->djr;
  for (int pos = 0; pos < p->args.n; pos++) params[np++] = &r->in[pos];
  for (int o = 0; o < p->nout; o++) params[np++] = &r->out[o];
  unsigned grid[3] = {(unsigned)r->nlookup, 1, 1}, block[3] = {bs, 1, 1};
  return r->dev->launch(c->ranges, grid, block, shared, r->stream, params, e);
}

/* Small row counts: split j across blocks too, so that the device gets about `want` blocks of
 * R rows. */
static unsigned split_count(const run *r, unsigned bs, int64_t R, int64_t want) {
  int64_t blocks = (r->rows + R - 1) / R;
  if (blocks >= want || r->nred < 4 * (int64_t)bs) return 1;
  int64_t s = (want + blocks - 1) / blocks, cap = r->nred / (4 * (int64_t)bs);
  s = s < cap ? s : cap;
  return (unsigned)(s < 1 ? 1 : s > 65535 ? 65535 : s);
}

/* Merges the nsplit partial states of every row and writes the outputs (keops_combine). */
static keops_status combine(run *r, rt_gpu_code *c, unsigned bs, unsigned nsplit, kerr *e) {
  int64_t ns = nsplit;
  if (c->combine_threads < (int)bs) /* its own registers: whole warps when it can */
    bs = c->combine_threads >= 32 ? (unsigned)c->combine_threads / 32 * 32 : (unsigned)c->combine_threads;
  void *params[3 + 2] = {&r->rows, &ns, &r->partial, &r->out[0], &r->out[1]};
  unsigned grid[3] = {(unsigned)((r->rows + bs - 1) / bs), 1, 1}, block[3] = {bs, 1, 1};
  return r->dev->launch(c->combine, grid, block, 0, r->stream, params, e);
}

static size_t out_bytes(const fe_program *p, int o, int64_t rows) {
  return (size_t)rows * (size_t)p->out_dim[o] * (p->out_dtype[o] == KEOPS_FLOAT32 ? 4 : 8);
}

/* Makes slot q of s hold at least bytes (the device current, s idle). */
static keops_status scratch_fit(const rt_device *dev, rt_scratch *s, int q, size_t bytes, kerr *e) {
  if (s->size[q] >= bytes) return KEOPS_OK;
  size_t grown = s->size[q] + s->size[q] / 4;
  if (s->ptr[q]) dev->free(s->ptr[q], NULL); /* a failed free leaves the memory to the driver */
  s->ptr[q] = 0, s->size[q] = 0;
  keops_status rc = KEOPS_ERROR_OUT_OF_MEMORY;
  if (grown > bytes) rc = dev->alloc(grown, &s->ptr[q], NULL); /* no room to spare: exactly bytes */
  if (rc == KEOPS_OK) bytes = grown;
  else if ((rc = dev->alloc(bytes, &s->ptr[q], e))) return rc;
  s->size[q] = bytes;
  return KEOPS_OK;
}

/* An idle scratch set of gd whose slots hold need[] (bytes per slot) if there is one, else
 * the one given back last (it will grow), else a new one; NULL when out of memory. */
static rt_scratch *scratch_take(keops_context *ctx, rt_gpu_dev *gd, const size_t *need) {
  rt_scratch *s = NULL, **at = NULL;
  pthread_mutex_lock(&ctx->lock);
  for (rt_scratch **p = &gd->idle; *p && !at; p = &(*p)->next) {
    int q = 0;
    while (q < SCRATCH_SLOTS && (*p)->size[q] >= need[q]) q++;
    if (q == SCRATCH_SLOTS) at = p;
  }
  if (!at && gd->idle) at = &gd->idle;
  if (at) s = *at, *at = s->next, gd->nidle--;
  pthread_mutex_unlock(&ctx->lock);
  return s ? s : calloc(1, sizeof *s);
}

/* Gives s back after its run: an idle set (nothing queued uses it) is kept within the bounds
 * above; one the stream may still use (waiting for it failed) is freed, never reused. The
 * device current. */
static void scratch_give(keops_context *ctx, rt_gpu_dev *gd, const rt_device *dev, rt_scratch *s, int idle) {
  if (idle) {
    size_t kept = 0;
    for (int q = 0; q < SCRATCH_SLOTS; q++)
      if (s->size[q] && kept + s->size[q] > SCRATCH_SET_BYTES)
        dev->free(s->ptr[q], NULL), s->ptr[q] = 0, s->size[q] = 0;
      else
        kept += s->size[q];
    pthread_mutex_lock(&ctx->lock);
    if (gd->nidle < SCRATCH_SETS) s->next = gd->idle, gd->idle = s, gd->nidle++, s = NULL;
    pthread_mutex_unlock(&ctx->lock);
  }
  if (s) scratch_release(dev, s);
}

/* The bytes each scratch slot needs, into need[SCRATCH_SLOTS]: with host arrays (devp 0),
 * inputs, outputs, partial states of nsplit slices; and a ranges run's tables. */
static void scratch_need(const run *r, int64_t M, int64_t N, unsigned nsplit, int devp, size_t *need) {
  const fe_program *p = r->p;
  memset(need, 0, SCRATCH_SLOTS * sizeof *need);
  need[SCRATCH_LOOKUP] = sizeof(int64_t) * 4 * (size_t)r->nlookup;
  need[SCRATCH_JR] = sizeof(int64_t) * 2 * (size_t)r->njr;
  if (devp) return;
  for (int pos = 0; pos < p->args.n; pos++)
    need[pos] = (size_t)arg_rows(p, pos, M, N) * (size_t)p->args.dim[pos] * r->es;
  for (int o = 0; o < p->nout; o++) need[SCRATCH_OUT + o] = out_bytes(p, o, r->rows);
  if (nsplit > 1) need[SCRATCH_PARTIAL] = sizeof(double) * nsplit * (size_t)r->rows * (size_t)p->state;
}

/* Device copies of the inputs and a ranges run's tables, device buffers for the outputs and
 * partial states, in the slots of s (those need[] names). */
static keops_status stage_in(run *r, rt_scratch *s, const size_t *need, const void *const *args, kerr *e) {
  const fe_program *p = r->p;
  for (int pos = 0; pos < p->args.n; pos++) {
    if (!need[pos]) continue;
    if (scratch_fit(r->dev, s, pos, need[pos], e)) return e->status;
    r->in[pos] = s->ptr[pos];
    if (r->dev->htod(r->in[pos], args[pos], need[pos], r->stream, e)) return e->status;
  }
  for (int q = SCRATCH_OUT; q < SCRATCH_SLOTS; q++) {
    if (!need[q]) continue;
    if (scratch_fit(r->dev, s, q, need[q], e)) return e->status;
    if (q == SCRATCH_PARTIAL) r->partial = s->ptr[q];
    else if (q == SCRATCH_LOOKUP) r->dlookup = s->ptr[q];
    else if (q == SCRATCH_JR) r->djr = s->ptr[q];
    else r->out[q - SCRATCH_OUT] = s->ptr[q];
  }
  if (need[SCRATCH_LOOKUP] && r->dev->htod(r->dlookup, r->lookup, need[SCRATCH_LOOKUP], r->stream, e))
    return e->status;
  if (need[SCRATCH_JR] && r->dev->htod(r->djr, r->jr, need[SCRATCH_JR], r->stream, e)) return e->status;
  return KEOPS_OK;
}

/* Device pointers must live on the device the run uses. */
static keops_status check_device_pointers(const rt_device *d, const fe_program *p,
                                          const void *const *args, void *const *outs, int ordinal,
                                          kerr *e) {
  for (int q = 0; q < p->args.n + p->nout; q++) {
    const void *ptr = q < p->args.n ? (args ? args[q] : NULL) : outs[q - p->args.n];
    int dev = -1;
    if (!ptr) continue;
    kerr why;
    kerr_clear(&why);
    if (d->pointer_device((rt_dptr)(uintptr_t)ptr, &dev, &why)) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s %d is not a device pointer (%s)",
               q < p->args.n ? "argument" : "output", q < p->args.n ? q : q - p->args.n, why.msg);
      return e->status;
    }
    if (dev != ordinal) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s %d is a pointer of device %d, the run uses device %d",
               q < p->args.n ? "argument" : "output", q < p->args.n ? q : q - p->args.n, dev, ordinal);
      return e->status;
    }
  }
  return KEOPS_OK;
}

keops_status rt_run_gpu(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                        void *const *outs, const keops_run_options *o, const fe_ranges *rg,
                        kerr *e) {
  const fe_program *p = k->prog;
  const rt_device *dev = k->ctx->dev;
  rt_gpu_dev *gd = gpu_dev(k->ctx, o->device_id, e);
  if (!gd) return e->status;
  rt_device_info info = gd->info;
  int devp = o->device_pointers != 0, here = 0;
  if (devp && dev->enter_owner) {
    /* Device pointers of a context the user created: the kernels must run in it, on its
     * stream. Modules loaded there would outlive what keops can know of that context, so its
     * code is loaded for this run and unloaded after it (the run then waits for its stream). */
    const void *first = NULL;
    for (int q = 0; q < p->args.n + p->nout && !first; q++)
      first = q < p->args.n ? (args ? args[q] : NULL) : outs[q - p->args.n];
    int primary = 1;
    if (first) {
      if (check_device_pointers(dev, p, args, outs, info.ordinal, e) ||
          dev->enter_owner((rt_dptr)(uintptr_t)first, &primary, e))
        return e->status;
      if (primary) dev->leave();
    }
    here = !primary;
  }
  rt_gpu_code *c = gpu_code(k, gd, here, e);
  if (!c) {
    if (here) dev->leave();
    return e->status;
  }
  if (!here && dev->enter(info.ordinal, e)) return e->status;
  run r;
  memset(&r, 0, sizeof r);
  r.p = p;
  r.dev = dev;
  r.info = &info;
  r.stream = o->stream;
  r.rows = fe_rows(p, M, N);
  r.nred = fe_nred(p, M, N);
  r.U = gpu_rows_per_thread(p);
  r.es = p->dtype == KEOPS_FLOAT32 ? 4 : 8;
  keops_status rc = KEOPS_OK;
  rt_scratch *s = NULL;
  if (devp) {
    rc = check_device_pointers(dev, p, args, outs, info.ordinal, e);
    for (int pos = 0; pos < p->args.n; pos++) r.in[pos] = (rt_dptr)(uintptr_t)args[pos];
    for (int q = 0; q < p->nout; q++) r.out[q] = (rt_dptr)(uintptr_t)outs[q];
  }
  if (rc == KEOPS_OK && r.rows) {
    /* the launch's shape first: a host-array run's scratch set holds the partial states too */
    int fn_threads = rg ? c->ranges_threads : c->fn_threads;
    unsigned shared, bs = block_size(p, &info, fn_threads, r.es, &shared);
    if (fn_threads < 32) {
      rc = KEOPS_ERROR_UNSUPPORTED;
      kerr_set(e, rc, "the kernel needs too many registers or too much local memory per thread: %s "
               "runs it with at most %d threads a block, less than a warp", info.name, fn_threads);
    } else if (bs < 32) {
      rc = KEOPS_ERROR_UNSUPPORTED;
      kerr_set(e, rc, "the j-variables (%d values per j) do not fit in %s's shared memory",
               p->red_width, info.name);
    }
    /* about 4 blocks per SM: half of what an SM of 2048 threads holds at 256 threads a block,
     * enough to hide latency */
    int64_t want = 4 * (int64_t)info.sm_count;
    unsigned nslice = 1, nsplit = 1;
    if (rc == KEOPS_OK && rg) {
      bs = ranges_block_size(rg, r.U, bs);
      shared = (unsigned)(bs * (size_t)p->red_width * r.es); /* the tiles' (block_size) */
      rc = ranges_table(&r, rg, block_rows(&r, bs, 1), e);
    } else if (rc == KEOPS_OK) {
      nslice = slice_count(&r, bs, want, &shared);
      nsplit = split_count(&r, bs, block_rows(&r, bs, nslice), want);
    }
    /* device pointers' runs take a set for a ranges run's tables only; in a user's context
     * (here) a set of their own, freed after the run: the idle sets are the primary
     * context's memory, which another context cannot use */
    if (rc == KEOPS_OK && (!devp || rg)) {
      size_t need[SCRATCH_SLOTS];
      scratch_need(&r, M, N, nsplit, devp, need);
      if (!(s = here ? calloc(1, sizeof *s) : scratch_take(k->ctx, gd, need))) {
        rc = KEOPS_ERROR_OUT_OF_MEMORY;
        kerr_set(e, rc, "out of memory");
      } else {
        rc = stage_in(&r, s, need, args, e);
      }
    } else if (rc == KEOPS_OK && nsplit > 1) {
      rc = dev->alloc(sizeof(double) * nsplit * (size_t)r.rows * (size_t)p->state, &r.partial, e);
    }
    if (rc == KEOPS_OK) rc = rg ? launch_ranges(&r, c, bs, shared, e) : launch(&r, c, bs, shared, nslice, nsplit, e);
    if (rc == KEOPS_OK && nsplit > 1) rc = combine(&r, c, bs, nsplit, e);
    if (rc == KEOPS_OK && !devp)
      for (int q = 0; rc == KEOPS_OK && q < p->nout; q++)
        if (out_bytes(p, q, r.rows)) rc = dev->dtoh(outs[q], r.out[q], out_bytes(p, q, r.rows), r.stream, e);
    if (rc == KEOPS_OK && !devp) rc = dev->sync(r.stream, e);
  }
  free(r.lookup);
  free(r.jr);
  /* The stream may still use the buffers (after an error, device pointers' partial states or
   * ranges tables) or the module: wait for it. Scratch memory whose stream could not be waited
   * for is not reused. */
  int idle = 1;
  if (rc != KEOPS_OK || (r.partial && !s) || (devp && s) || here) {
    int report = rc == KEOPS_OK && (here || (devp && s)); /* this run's kernel is in the wait */
    keops_status sr = dev->sync(r.stream, report ? e : NULL);
    if (report) rc = sr;
    idle = sr == KEOPS_OK;
  }
  if (s && here) scratch_release(dev, s);
  else if (s) scratch_give(k->ctx, gd, dev, s, idle);
  else if (r.partial) dev->free(r.partial, NULL);
  if (here) {
    dev->module_unload(c->module, NULL);
    free(c);
  }
  dev->leave();
  return rc;
}

keops_status rt_gpu_fill_zero(const keops_kernel *k, int64_t M, int64_t N, void *const *outs,
                              const keops_run_options *o, kerr *e) {
  const fe_program *p = k->prog;
  int64_t rows = fe_rows(p, M, N);
  const rt_device *dev = k->ctx->dev;
  if (dev->load(e)) return e->status;
  keops_status rc = check_device_pointers(dev, p, NULL, outs, o->device_id, e);
  if (rc) return rc;
  const void *first = NULL;
  for (int q = 0; q < p->nout && !first; q++) first = outs[q];
  int primary; /* the memset goes on the stream of the context that owns the outputs */
  if (first && dev->enter_owner ? dev->enter_owner((rt_dptr)(uintptr_t)first, &primary, e)
                                : dev->enter(o->device_id, e))
    return e->status;
  for (int q = 0; rc == KEOPS_OK && q < p->nout; q++)
    if (out_bytes(p, q, rows))
      rc = dev->memset0((rt_dptr)(uintptr_t)outs[q], out_bytes(p, q, rows), o->stream, e);
  dev->leave();
  return rc;
}

int rt_gpu_usable(const rt_device *dev) {
  kerr e;
  kerr_clear(&e);
  int n = 0;
  return dev->load(&e) == KEOPS_OK && dev->count(&n, &e) == KEOPS_OK && n > 0;
}

int rt_gpu_auto_ok(const rt_device *dev, kerr *e) {
  int n = 0;
  rt_device_info info;
  if (dev->load(e) || dev->count(&n, e) || dev->info(0, &info, e)) return 0;
  if (dev->image == RT_IMAGE_PTX) {
    char sm[16], ptx[16];
    kt_target t;
    if (rt_ptx_target(&info, LLVM_VERSION_MAJOR, sm, sizeof sm, ptx, sizeof ptx, e)) return 0;
    kt_set(&t, &kt_nvptx, sm, ptx);
    LLVMTargetMachineRef tm = kt_machine(&t, e); /* an LLVM built without NVPTX has no target */
    if (!tm) return 0;
    LLVMDisposeTargetMachine(tm);
  }
  /* the primary context: refused in compute mode PROHIBITED, on a MIG parent, a busy
   * exclusive-process device... What enter acquires stays for the process, as for any run. */
  if (dev->enter(0, e)) return 0;
  dev->leave();
  if (dev->faulted && dev->faulted(0)) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "device 0 faulted earlier in this process");
    return 0;
  }
  return 1;
}
