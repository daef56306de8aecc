/* The fake driver's core: configuration, error names, failure injection, cuInit, devices and
 * contexts, and the control functions of fakecuda.h. Memory and streams are in fake_mem.c,
 * modules and launches in fake_module.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

fk_state fk = {.lock = PTHREAD_MUTEX_INITIALIZER, .exec = PTHREAD_MUTEX_INITIALIZER};

/* ---- errors ------------------------------------------------------------------------------- */

static const struct {
  int code;
  const char *name, *text;
} errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {34, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {35, "CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA driver version is insufficient for CUDA runtime version"},
    {46, "CUDA_ERROR_DEVICE_UNAVAILABLE", "CUDA-capable device(s) is/are busy or unavailable"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {702, "CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static int error_index(CUresult r) {
  for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
    if (errors[i].code == r) return (int)i;
  return -1;
}

/* Like the driver: CUDA_ERROR_INVALID_VALUE and *s NULL for a code it does not know. These
 * two work before cuInit and are never injected (cuda.c needs them to report the rest). */
FK_EXPORT CUresult cuGetErrorName(CUresult r, const char **s) {
  int i = error_index(r);
  if (s) *s = i < 0 ? NULL : errors[i].name;
  return i < 0 || !s ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGetErrorString(CUresult r, const char **s) {
  int i = error_index(r);
  if (s) *s = i < 0 ? NULL : errors[i].text;
  return i < 0 || !s ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

/* ---- configuration ------------------------------------------------------------------------ */

static void default_device(fakecuda_device *d, int ordinal) {
  memset(d, 0, sizeof *d);
  d->cc_major = 9;
  d->cc_minor = 0;
  snprintf(d->name, sizeof d->name, "Fake GPU %d", ordinal);
  d->sm_count = 132;
  d->max_threads_per_block = 1024;
  d->shared_per_block = FK_DEFAULT_SHARED;
  d->shared_per_block_optin = 227 * 1024;
  d->regs_per_block = 65536;
  d->memory = (size_t)1 << 30;
}

typedef struct fk_rule {
  char entry[64]; /* "" any */
  long nth;       /* calls of entry left before the failing one (0: every call) */
  int code, sticky;
} fk_rule;
static fk_rule rules[32];
static int nrules;
typedef struct fk_count {
  char entry[64];
  long calls;
} fk_count;
static fk_count counts[64];
static long all_calls;

static void add_rule(const char *entry, int nth, int code, int sticky) {
  if (nrules == (int)(sizeof rules / sizeof *rules) || nth < 0) return;
  fk_rule *r = &rules[nrules++];
  snprintf(r->entry, sizeof r->entry, "%s", entry ? entry : "");
  r->nth = nth;
  r->code = code;
  r->sticky = sticky;
}

/* Defaults, then the environment: once, at the first call of anything (fk.lock held). */
static void configure(void) {
  if (fk.configured) return;
  fk.configured = 1;
  const char *s;
  fk.ndev = (s = getenv("FAKECUDA_DEVICES")) ? atoi(s) : 1;
  if (fk.ndev < 0 || fk.ndev > FK_MAX_DEV) fk.ndev = 1;
  fk.driver = (s = getenv("FAKECUDA_DRIVER")) ? atoi(s) : 12080;
  fk.kernel_regs = 32;
  for (int i = 0; i < FK_MAX_DEV; i++) default_device(&fk.dev[i].d, i);
  if ((s = getenv("FAKECUDA_CC")))
    for (int i = 0; i < FK_MAX_DEV && *s; i++) {
      int ma, mi;
      if (sscanf(s, "%d.%d", &ma, &mi) == 2) fk.dev[i].d.cc_major = ma, fk.dev[i].d.cc_minor = mi;
      s = strchr(s, ',');
      if (!s) break;
      s++;
    }
  int mode = (s = getenv("FAKECUDA_COMPUTE_MODE")) && !strcmp(s, "prohibited") ? 2 : 0;
  size_t mem = (s = getenv("FAKECUDA_MEMORY")) ? (size_t)strtoull(s, NULL, 10) : 0;
  for (int i = 0; i < FK_MAX_DEV; i++) {
    fk.dev[i].d.compute_mode = mode;
    if (mem) fk.dev[i].d.memory = mem;
  }
  if ((s = getenv("FAKECUDA_FAIL"))) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      char entry[64];
      int nth = 0, code = 0, sticky = 0;
      if (sscanf(tok, "%63[^:]:%d:%d:%d", entry, &nth, &code, &sticky) >= 3)
        add_rule(strcmp(entry, "*") ? entry : NULL, nth, code, sticky);
    }
  }
}

/* ---- entry, injection --------------------------------------------------------------------- */

static _Thread_local fk_ctx *stack[FK_MAX_STACK];
static _Thread_local int depth;

fk_ctx *fk_current(void) {
  while (depth > 0 && !fk_ctx_live(stack[depth - 1])) depth--; /* destroyed under us */
  return depth ? stack[depth - 1] : NULL;
}

int fk_ctx_live(const fk_ctx *c) {
  for (fk_ctx *x = fk.ctxs; x; x = x->next)
    if (x == c) return 1;
  return 0;
}

CUresult fk_need_ctx(fk_ctx **out) {
  fk_ctx *c = fk_current();
  *out = c;
  if (!c) return CUDA_ERROR_INVALID_CONTEXT;
  return c->sticky;
}

/* fakecuda_hold: the entry and countdown of the call to stop, and whether one waits now. */
static char hold_entry[64];
static int hold_nth, holding;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;

CUresult fk_begin(const char *name, int need_init) {
  configure();
  if (hold_nth && !strcmp(hold_entry, name) && --hold_nth == 0) {
    holding = 1; /* waits without fk.lock, so that other threads' calls go on */
    while (holding) pthread_cond_wait(&hold_cv, &fk.lock);
  }
  all_calls++;
  int i = 0;
  while (i < (int)(sizeof counts / sizeof *counts) && counts[i].entry[0] && strcmp(counts[i].entry, name)) i++;
  if (i < (int)(sizeof counts / sizeof *counts)) {
    snprintf(counts[i].entry, sizeof counts[i].entry, "%s", name);
    counts[i].calls++;
  }
  for (int r = 0; r < nrules; r++) {
    fk_rule *u = &rules[r];
    if (u->entry[0] && strcmp(u->entry, name)) continue;
    if (u->nth > 1) {
      u->nth--;
      continue;
    }
    int code = u->code;
    if (u->sticky) {
      fk_ctx *c = fk_current();
      if (c && !c->sticky) c->sticky = code;
    }
    if (u->nth == 1) { /* fired: a one-shot rule goes */
      rules[r] = rules[--nrules];
    }
    return code;
  }
  if (need_init && !fk.inited) return CUDA_ERROR_NOT_INITIALIZED;
  return CUDA_SUCCESS;
}


/* ---- init, devices -------------------------------------------------------------------------- */

FK_EXPORT CUresult cuInit(unsigned flags) {
  BEGIN("cuInit", 0);
  if (flags) END(CUDA_ERROR_INVALID_VALUE);
  if (!fk.ndev) END(CUDA_ERROR_NO_DEVICE);
  fk.inited = 1;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuDriverGetVersion(int *v) {
  BEGIN("cuDriverGetVersion", 0);
  if (!v) END(CUDA_ERROR_INVALID_VALUE);
  *v = fk.driver;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuDeviceGetCount(int *n) {
  BEGIN("cuDeviceGetCount", 1);
  if (!n) END(CUDA_ERROR_INVALID_VALUE);
  *n = fk.ndev;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal) {
  BEGIN("cuDeviceGet", 1);
  if (!d) END(CUDA_ERROR_INVALID_VALUE);
  if (ordinal < 0 || ordinal >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  *d = ordinal;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
  BEGIN("cuDeviceGetName", 1);
  if (!name || len <= 0) END(CUDA_ERROR_INVALID_VALUE);
  if (d < 0 || d >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  snprintf(name, (size_t)len, "%s", fk.dev[d].d.name);
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
  BEGIN("cuDeviceGetAttribute", 1);
  if (!v) END(CUDA_ERROR_INVALID_VALUE);
  if (d < 0 || d >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  const fakecuda_device *x = &fk.dev[d].d;
  switch (attr) {
  case 1: *v = x->max_threads_per_block; break;         /* MAX_THREADS_PER_BLOCK */
  case 2: *v = x->max_threads_per_block; break;         /* MAX_BLOCK_DIM_X */
  case 3: case 4: *v = 1024 < x->max_threads_per_block ? 1024 : x->max_threads_per_block; break;
  case 5: *v = 2147483647; break;                       /* MAX_GRID_DIM_X */
  case 6: case 7: *v = 65535; break;
  case 8: *v = x->shared_per_block; break;              /* MAX_SHARED_MEMORY_PER_BLOCK */
  case 10: *v = 32; break;                              /* WARP_SIZE */
  case 12: *v = x->regs_per_block; break;               /* MAX_REGISTERS_PER_BLOCK */
  case 16: *v = x->sm_count; break;                     /* MULTIPROCESSOR_COUNT */
  case 20: *v = x->compute_mode; break;                 /* COMPUTE_MODE */
  case 39: *v = 2048; break;                            /* MAX_THREADS_PER_MULTIPROCESSOR */
  case 41: *v = 1; break;                               /* UNIFIED_ADDRESSING */
  case 75: *v = x->cc_major; break;
  case 76: *v = x->cc_minor; break;
  case 81: *v = x->shared_per_block_optin; break;       /* MAX_SHARED_MEMORY_PER_MULTIPROCESSOR */
  case 82: *v = x->regs_per_block; break;               /* MAX_REGISTERS_PER_MULTIPROCESSOR */
  case 97: *v = x->shared_per_block_optin; break;       /* MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
  default: END(CUDA_ERROR_INVALID_VALUE);
  }
  END(CUDA_SUCCESS);
}

/* ---- contexts ------------------------------------------------------------------------------- */

static fk_ctx *new_ctx(int dev, int primary) {
  fk_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->dev = dev;
  c->primary = primary;
  c->next = fk.ctxs;
  fk.ctxs = c;
  return c;
}

/* Takes fk.exec with fk.lock held (lock order: exec first), so that no queued work runs. */
static void lock_exec(void) {
  pthread_mutex_unlock(&fk.lock);
  pthread_mutex_lock(&fk.exec);
  pthread_mutex_lock(&fk.lock);
}

/* Unlinks c and frees it with everything it owns (fk.lock held; its work is dropped). */
static void destroy_ctx(fk_ctx *c) {
  for (fk_ctx **p = &fk.ctxs; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  fk_ctx_free_resources(c);
  free(c);
}

FK_EXPORT CUresult cuDevicePrimaryCtxRetain(fk_ctx **out, CUdevice d) {
  BEGIN("cuDevicePrimaryCtxRetain", 1);
  if (!out) END(CUDA_ERROR_INVALID_VALUE);
  if (d < 0 || d >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  if (fk.dev[d].d.compute_mode == 2) END(CUDA_ERROR_DEVICE_UNAVAILABLE);
  fk_ctx *c = fk.dev[d].primary;
  if (!c && !(c = fk.dev[d].primary = new_ctx(d, 1))) END(CUDA_ERROR_OUT_OF_MEMORY);
  c->retains++;
  *out = c;
  END(CUDA_SUCCESS);
}

/* The last release destroys the primary context and what it owns (as the driver does). */
FK_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
  BEGIN("cuDevicePrimaryCtxRelease_v2", 1);
  if (d < 0 || d >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  if (!fk.dev[d].primary) END(CUDA_ERROR_INVALID_CONTEXT);
  lock_exec(); /* no work of the context may be running while it goes */
  fk_ctx *c = fk.dev[d].primary;
  CUresult r = c ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
  if (c && --c->retains == 0) {
    fk.dev[d].primary = NULL;
    destroy_ctx(c);
  }
  pthread_mutex_unlock(&fk.exec);
  END(r);
}

/* Clears a sticky error: what a process does to recover a device (all its state goes). */
FK_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d) {
  BEGIN("cuDevicePrimaryCtxReset_v2", 1);
  if (d < 0 || d >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  lock_exec();
  fk_ctx *c = fk.dev[d].primary;
  if (c) {
    fk_ctx_free_resources(c);
    c->sticky = 0;
  }
  pthread_mutex_unlock(&fk.exec);
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxCreate_v2(fk_ctx **out, unsigned flags, CUdevice d) {
  (void)flags;
  BEGIN("cuCtxCreate_v2", 1);
  if (!out) END(CUDA_ERROR_INVALID_VALUE);
  if (d < 0 || d >= fk.ndev) END(CUDA_ERROR_INVALID_DEVICE);
  if (fk.dev[d].d.compute_mode == 2) END(CUDA_ERROR_DEVICE_UNAVAILABLE);
  if (depth == FK_MAX_STACK) END(CUDA_ERROR_INVALID_VALUE);
  fk_ctx *c = new_ctx(d, 0);
  if (!c) END(CUDA_ERROR_OUT_OF_MEMORY);
  stack[depth++] = c;
  *out = c;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxDestroy_v2(fk_ctx *c) {
  BEGIN("cuCtxDestroy_v2", 1);
  if (!fk_ctx_live(c) || c->primary) END(CUDA_ERROR_INVALID_CONTEXT);
  lock_exec(); /* no work of c may be running while it goes */
  CUresult r = CUDA_SUCCESS;
  if (fk_ctx_live(c))
    destroy_ctx(c);
  else
    r = CUDA_ERROR_INVALID_CONTEXT;
  pthread_mutex_unlock(&fk.exec);
  END(r);
}

FK_EXPORT CUresult cuCtxPushCurrent_v2(fk_ctx *c) {
  BEGIN("cuCtxPushCurrent_v2", 1);
  if (!fk_ctx_live(c)) END(CUDA_ERROR_INVALID_CONTEXT);
  if (depth == FK_MAX_STACK) END(CUDA_ERROR_INVALID_VALUE);
  stack[depth++] = c;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxPopCurrent_v2(fk_ctx **out) {
  BEGIN("cuCtxPopCurrent_v2", 1);
  fk_ctx *c = fk_current();
  if (!c) END(CUDA_ERROR_INVALID_CONTEXT);
  depth--;
  if (out) *out = c;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxGetCurrent(fk_ctx **out) {
  BEGIN("cuCtxGetCurrent", 1);
  if (!out) END(CUDA_ERROR_INVALID_VALUE);
  *out = fk_current();
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxSetCurrent(fk_ctx *c) {
  BEGIN("cuCtxSetCurrent", 1);
  if (c && !fk_ctx_live(c)) END(CUDA_ERROR_INVALID_CONTEXT);
  if (!c) {
    if (depth) depth--;
  } else if (depth) {
    stack[depth - 1] = c;
  } else {
    stack[depth++] = c;
  }
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxGetDevice(CUdevice *d) {
  BEGIN("cuCtxGetDevice", 1);
  fk_ctx *c = fk_current();
  if (!d) END(CUDA_ERROR_INVALID_VALUE);
  if (!c) END(CUDA_ERROR_INVALID_CONTEXT);
  *d = c->dev;
  END(CUDA_SUCCESS);
}

FK_EXPORT CUresult cuCtxSynchronize(void) {
  BEGIN("cuCtxSynchronize", 1);
  fk_ctx *c;
  CUresult r = fk_need_ctx(&c);
  pthread_mutex_unlock(&fk.lock);
  if (r) return r;
  return fk_drain(c, NULL, NULL);
}

/* ---- control ---------------------------------------------------------------------------------- */

FK_EXPORT int fakecuda_set_devices(int count, int driver_version) {
  if (count < 0 || count > FK_MAX_DEV || driver_version < 0) return -1;
  pthread_mutex_lock(&fk.lock);
  configure();
  fk.ndev = count;
  fk.driver = driver_version;
  pthread_mutex_unlock(&fk.lock);
  return 0;
}

FK_EXPORT int fakecuda_get_device(int ordinal, fakecuda_device *out) {
  if (ordinal < 0 || ordinal >= FK_MAX_DEV || !out) return -1;
  pthread_mutex_lock(&fk.lock);
  configure();
  *out = fk.dev[ordinal].d;
  pthread_mutex_unlock(&fk.lock);
  return 0;
}

FK_EXPORT int fakecuda_set_device(int ordinal, const fakecuda_device *d) {
  if (ordinal < 0 || ordinal >= FK_MAX_DEV || !d) return -1;
  pthread_mutex_lock(&fk.lock);
  configure();
  fk.dev[ordinal].d = *d;
  pthread_mutex_unlock(&fk.lock);
  return 0;
}

FK_EXPORT void fakecuda_fail(const char *entry, int nth, int code, int sticky) {
  pthread_mutex_lock(&fk.lock);
  configure();
  add_rule(entry, nth, code, sticky);
  pthread_mutex_unlock(&fk.lock);
}

FK_EXPORT void fakecuda_clear_failures(void) {
  pthread_mutex_lock(&fk.lock);
  configure();
  nrules = 0;
  pthread_mutex_unlock(&fk.lock);
}

FK_EXPORT void fakecuda_hold(const char *entry, int nth) {
  pthread_mutex_lock(&fk.lock);
  snprintf(hold_entry, sizeof hold_entry, "%s", entry);
  hold_nth = nth > 0 ? nth : 1;
  pthread_mutex_unlock(&fk.lock);
}

FK_EXPORT int fakecuda_held(void) {
  pthread_mutex_lock(&fk.lock);
  int h = holding;
  pthread_mutex_unlock(&fk.lock);
  return h;
}

FK_EXPORT void fakecuda_release(void) {
  pthread_mutex_lock(&fk.lock);
  holding = 0;
  hold_nth = 0;
  pthread_cond_broadcast(&hold_cv);
  pthread_mutex_unlock(&fk.lock);
}

FK_EXPORT long fakecuda_calls(const char *entry) {
  long n = 0;
  pthread_mutex_lock(&fk.lock);
  if (!entry) n = all_calls;
  for (int i = 0; entry && i < (int)(sizeof counts / sizeof *counts) && counts[i].entry[0]; i++)
    if (!strcmp(counts[i].entry, entry)) n = counts[i].calls;
  pthread_mutex_unlock(&fk.lock);
  return n;
}

FK_EXPORT void fakecuda_get_live(fakecuda_live *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&fk.lock);
  for (int i = 0; i < fk.nalloc; i++)
    if (fk.allocs[i].ctx->sticky) out->lost_allocations++;
    else out->allocations++, out->bytes += fk.allocs[i].size;
  for (fk_module *m = fk.modules; m; m = m->next)
    if (m->ctx->sticky) out->lost_modules++;
    else out->modules++;
  for (fk_stream *s = fk.streams; s; s = s->next) out->streams++;
  for (fk_ctx *c = fk.ctxs; c; c = c->next) {
    if (!c->primary) out->user_contexts++;
    else out->primary_retains += c->retains;
  }
  out->queued = fk.queued;
  pthread_mutex_unlock(&fk.lock);
}

FK_EXPORT const char *fakecuda_last_fault(void) { return fk.last_fault; }

FK_EXPORT void fakecuda_set_kernel_regs(int regs) {
  pthread_mutex_lock(&fk.lock);
  configure();
  fk.kernel_regs = regs;
  pthread_mutex_unlock(&fk.lock);
}
