/* The fake driver's modules and launches: the program comes back from the PTX's
 * "// keops program:" line (nvptx.c writes it), is compiled for the GPU emulator and runs in
 * it when its stream is synchronised (fakecuda.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"
#include "front.h"
#include "target.h"


#define KEY_LINE "// keops program: "

/* The newest PTX ISA each driver accepts (NVIDIA's release history), newest first. */
static const int driver_ptx[][2] = {
    {13010, 91}, {13000, 90}, {12090, 88}, {12080, 87}, {12070, 86}, {12050, 85}, {12040, 84},
    {12030, 83}, {12020, 82}, {12010, 81}, {12000, 80}, {11080, 78}, {11070, 77}, {11060, 76},
    {11050, 75}, {11040, 74}, {11030, 73}, {11020, 72}, {11010, 71}, {11000, 70}, {10020, 65},
    {10010, 64}, {10000, 63}, {9020, 62},  {9010, 61},  {9000, 60},
};

typedef struct jit_opts {
  char *err, *info;
  size_t err_size, info_size;
} jit_opts;

static void read_opts(unsigned n, const int *opts, void **vals, jit_opts *o) {
  memset(o, 0, sizeof *o);
  for (unsigned i = 0; opts && vals && i < n; i++) switch (opts[i]) {
    case 3: o->info = vals[i]; break;
    case 4: o->info_size = (size_t)(uintptr_t)vals[i]; break;
    case 5: o->err = vals[i]; break;
    case 6: o->err_size = (size_t)(uintptr_t)vals[i]; break;
    default: break;
    }
}

static void log_to(char *buf, size_t size, const char *msg) {
  if (buf && size) snprintf(buf, size, "%s", msg);
}

/* What the PTX header says against what the driver and the device take. */
static CUresult check_header(const char *ptx, int driver, int cc, char *why, size_t n) {
  const char *v = strstr(ptx, "\n.version ");
  int ma, mi;
  if (!v || sscanf(v, "\n.version %d.%d", &ma, &mi) != 2) {
    snprintf(why, n, "ptxas fatal   : no .version directive");
    return CUDA_ERROR_INVALID_PTX;
  }
  int max = 0;
  for (size_t i = 0; i < sizeof driver_ptx / sizeof *driver_ptx && !max; i++)
    if (driver >= driver_ptx[i][0]) max = driver_ptx[i][1];
  if (ma * 10 + mi > max) {
    snprintf(why, n, "ptxas application ptx input, line 5; fatal   : Unsupported .version %d.%d; current version is '%d.%d'",
             ma, mi, max / 10, max % 10);
    return CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
  }
  const char *t = strstr(ptx, "\n.target sm_");
  int sm;
  if (!t || sscanf(t, "\n.target sm_%d", &sm) != 1) {
    snprintf(why, n, "ptxas fatal   : no .target sm_XY directive");
    return CUDA_ERROR_INVALID_PTX;
  }
  if (sm > cc) {
    snprintf(why, n, "PTX for sm_%d cannot run on a device of compute capability %d.%d", sm,
             cc / 10, cc % 10);
    return CUDA_ERROR_NO_BINARY_FOR_GPU;
  }
  return CUDA_SUCCESS;
}

/* The emulator's module for the program named in ptx; the reason into why on failure. */
static rt_emu_module *build(const char *ptx, char *why, size_t n) {
  const char *line = strstr(ptx, KEY_LINE);
  if (!line) {
    snprintf(why, n, "fakecuda: the PTX has no '" KEY_LINE "' line: only keops's PTX can run here");
    return NULL;
  }
  line += strlen(KEY_LINE);
  size_t len = strcspn(line, "\r\n");
  char *key = malloc(len + 1);
  if (!key) {
    snprintf(why, n, "fakecuda: out of memory");
    return NULL;
  }
  memcpy(key, line, len);
  key[len] = '\0';
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_from_key(key, &e);
  free(key);
  kt_target host, t;
  char *obj = NULL;
  size_t size = 0;
  rt_emu_module *m = NULL;
  if (p && kt_pick(&host, "host", &e) == 0) {
    kt_set(&t, &kt_gpuemu, host.cpu, host.features);
    obj = kt_compile(p, &t, "keops_kernel", KC_OBJ, &size, &e);
  }
  if (obj) rt_emu_module_load(obj, size, &m, &e);
  if (!m) snprintf(why, n, "fakecuda: %.1900s", e.msg);
  free(obj);
  fe_free(p);
  return m;
}

FK_EXPORT CUresult cuModuleLoadDataEx(fk_module **out, const void *image, unsigned nopts,
                                      int *opts, void **vals) {
  BEGIN("cuModuleLoadDataEx", 1);
  fk_ctx *c;
  CUresult r = fk_need_ctx(&c);
  if (r) END(r);
  if (!out || !image) END(CUDA_ERROR_INVALID_VALUE);
  jit_opts o;
  read_opts(nopts, opts, vals, &o);
  char why[2048] = "";
  r = check_header(image, fk.driver, fk.dev[c->dev].d.cc_major * 10 + fk.dev[c->dev].d.cc_minor,
                   why, sizeof why);
  pthread_mutex_unlock(&fk.lock);
  rt_emu_module *em = r ? NULL : build(image, why, sizeof why);
  if (!r && !em) r = CUDA_ERROR_INVALID_PTX;
  fk_module *m = em ? calloc(1, sizeof *m) : NULL;
  if (em && !m) r = CUDA_ERROR_OUT_OF_MEMORY;
  if (r) {
    log_to(o.err, o.err_size, why);
    rt_emu_module_unload(em);
    return r;
  }
  log_to(o.info, o.info_size, "fakecuda: compiled for the GPU emulator");
  pthread_mutex_lock(&fk.lock);
  if (!fk_ctx_live(c)) {
    pthread_mutex_unlock(&fk.lock);
    rt_emu_module_unload(em);
    free(m);
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  m->ctx = c;
  m->em = em;
  m->next = fk.modules;
  fk.modules = m;
  *out = m;
  END(CUDA_SUCCESS);
}

void fk_module_free(fk_module *m) {
  for (fk_func *f = m->funcs, *n; f; f = n) {
    n = f->next;
    free(f);
  }
  rt_emu_module_unload(m->em);
  free(m);
}

static fk_module *module_live(const fk_module *m) {
  for (fk_module *x = fk.modules; x; x = x->next)
    if (x == m) return x;
  return NULL;
}

static fk_func *func_live(const fk_func *f) {
  for (fk_module *m = fk.modules; m; m = m->next)
    for (fk_func *x = m->funcs; x; x = x->next)
      if (x == f) return x;
  return NULL;
}

FK_EXPORT CUresult cuModuleGetFunction(fk_func **out, fk_module *m, const char *name) {
  BEGIN("cuModuleGetFunction", 1);
  if (!out || !name) END(CUDA_ERROR_INVALID_VALUE);
  if (!module_live(m)) END(CUDA_ERROR_INVALID_HANDLE);
  for (fk_func *f = m->funcs; f; f = f->next)
    if (!strcmp(f->ef->name, name)) {
      *out = f;
      END(CUDA_SUCCESS);
    }
  kerr e;
  kerr_clear(&e);
  const rt_emu_function *ef;
  if (rt_emu_module_function(m->em, name, &ef, &e)) END(CUDA_ERROR_NOT_FOUND);
  fk_func *f = calloc(1, sizeof *f);
  if (!f) END(CUDA_ERROR_OUT_OF_MEMORY);
  f->mod = m;
  f->ef = ef;
  f->max_dyn_shared = FK_DEFAULT_SHARED;
  f->next = m->funcs;
  m->funcs = f;
  *out = f;
  END(CUDA_SUCCESS);
}

/* Work queued with the module's kernels runs first: unloading under it would be the caller's
 * bug, which a GPU reports as a fault at best. */
FK_EXPORT CUresult cuModuleUnload(fk_module *m) {
  BEGIN("cuModuleUnload", 1);
  if (!module_live(m)) END(CUDA_ERROR_INVALID_HANDLE);
  fk_ctx *c = m->ctx;
  pthread_mutex_unlock(&fk.lock);
  fk_drain(c, NULL, NULL);
  pthread_mutex_lock(&fk.exec);
  pthread_mutex_lock(&fk.lock);
  CUresult r = CUDA_ERROR_INVALID_HANDLE;
  for (fk_module **p = &fk.modules; *p; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      fk_module_free(m);
      r = CUDA_SUCCESS;
      break;
    }
  pthread_mutex_unlock(&fk.exec);
  END(r);
}

FK_EXPORT CUresult cuFuncSetAttribute(fk_func *f, int attr, int value) {
  BEGIN("cuFuncSetAttribute", 1);
  if (!func_live(f)) END(CUDA_ERROR_INVALID_HANDLE);
  if (attr != 8) END(CUDA_ERROR_INVALID_VALUE); /* MAX_DYNAMIC_SHARED_SIZE_BYTES only */
  const fakecuda_device *d = &fk.dev[f->mod->ctx->dev].d;
  int limit = d->shared_per_block_optin > d->shared_per_block ? d->shared_per_block_optin
                                                              : d->shared_per_block;
  if (value < 0 || value > limit) END(CUDA_ERROR_INVALID_VALUE);
  f->max_dyn_shared = value;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuFuncGetAttribute(int *v, int attr, fk_func *f) {
  BEGIN("cuFuncGetAttribute", 1);
  if (!v) END(CUDA_ERROR_INVALID_VALUE);
  if (!func_live(f)) END(CUDA_ERROR_INVALID_HANDLE);
  switch (attr) {
  case 0: { /* MAX_THREADS_PER_BLOCK: the launch bound, the device, the registers in warps */
    const fakecuda_device *d = &fk.dev[f->mod->ctx->dev].d;
    int regs = fk.kernel_regs > 0 ? fk.kernel_regs : 1, by_regs = d->regs_per_block / regs / 32 * 32;
    *v = (int)f->ef->info.maxntid;
    if (d->max_threads_per_block < *v) *v = d->max_threads_per_block;
    if (by_regs < *v) *v = by_regs;
    break;
  }
  case 1: case 2: case 3: *v = 0; break;        /* static shared, constant, local bytes */
  case 4: *v = fk.kernel_regs; break;           /* NUM_REGS */
  case 5: *v = 80; break;                       /* PTX_VERSION */
  case 6: *v = 90; break;                       /* BINARY_VERSION */
  case 8: *v = f->max_dyn_shared; break;
  default: END(CUDA_ERROR_INVALID_VALUE);
  }
  END(CUDA_SUCCESS);
}

/* The checks a device makes when it accepts a launch; the emulator repeats them. */
FK_EXPORT CUresult cuLaunchKernel(fk_func *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                  unsigned by, unsigned bz, unsigned shared, fk_stream *s,
                                  void **params, void **extra) {
  BEGIN("cuLaunchKernel", 1);
  fk_ctx *c;
  fk_queue *q;
  CUresult r = fk_need_ctx(&c);
  if (r || (r = fk_queue_of(c, s, &q))) END(r);
  if (!func_live(f)) END(CUDA_ERROR_INVALID_HANDLE);
  if (f->mod->ctx != c) END(CUDA_ERROR_INVALID_HANDLE);
  const fakecuda_device *d = &fk.dev[c->dev].d;
  uint64_t threads = (uint64_t)bx * by * bz;
  if (!gx || !gy || !gz || !bx || !by || !bz || gx > 2147483647u || gy > 65535 || gz > 65535 ||
      bz > 64 || threads > (uint64_t)d->max_threads_per_block || extra || (!params && f->ef->info.nparams))
    END(CUDA_ERROR_INVALID_VALUE);
  if (threads > f->ef->info.maxntid || threads * (uint64_t)fk.kernel_regs > (uint64_t)d->regs_per_block)
    END(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
  if (shared > (unsigned)f->max_dyn_shared) END(CUDA_ERROR_INVALID_VALUE);
  fk_op *op = calloc(1, sizeof *op);
  if (!op) END(CUDA_ERROR_OUT_OF_MEMORY);
  if (f->ef->info.nparams > sizeof op->vals / sizeof *op->vals) {
    free(op);
    END(CUDA_ERROR_INVALID_VALUE);
  }
  op->kind = OP_LAUNCH;
  op->fn = f;
  op->grid[0] = gx, op->grid[1] = gy, op->grid[2] = gz;
  op->block[0] = bx, op->block[1] = by, op->block[2] = bz;
  op->shared = shared;
  op->shared_limit = (unsigned)f->max_dyn_shared;
  for (uint32_t i = 0; i < f->ef->info.nparams; i++) memcpy(&op->vals[i], params[i], 8);
  /* and whatever else the emulator would refuse, refused here, when the launch is queued */
  void *pv[1] = {op->vals};
  rt_emu_launch l = {.fn = f->ef, .shared_bytes = shared, .shared_limit = op->shared_limit,
                     .max_threads = (unsigned)d->max_threads_per_block, .params = pv};
  memcpy(l.grid, op->grid, sizeof l.grid);
  memcpy(l.block, op->block, sizeof l.block);
  kerr e;
  kerr_clear(&e);
  if (rt_emu_check(&l, &e)) {
    free(op);
    END(CUDA_ERROR_INVALID_VALUE);
  }
  fk_enqueue(q, op);
  END(CUDA_SUCCESS);
}
