/* CUDA driver layer, the device interface's CUDA implementation (cu_driver, cuda.h):
 * libcuda.so.1 opened with dlopen, a typed function table, primary contexts, modules, memory,
 * launches. No CUDA header is used: the few types and enum values the driver API needs are
 * declared here with the numbers CUDA's cuda.h documents (checked against CUDA 13.0's cuda.h;
 * these values are ABI and never change). */
#include "cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
  CUDA_ERROR_INVALID_PTX = 218,
  CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
  CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_LAUNCH_TIMEOUT = 702,
  CUDA_ERROR_HARDWARE_STACK_ERROR = 714,
  CUDA_ERROR_ILLEGAL_INSTRUCTION = 715,
  CUDA_ERROR_MISALIGNED_ADDRESS = 716,
  CUDA_ERROR_INVALID_ADDRESS_SPACE = 717,
  CUDA_ERROR_INVALID_PC = 718,
  CUDA_ERROR_LAUNCH_FAILED = 719,
};
enum { /* CUdevice_attribute */
       CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1,
       CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8,
       CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10,
       CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
       CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
       CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
       CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
};
enum { /* CUjit_option */
       CU_JIT_INFO_LOG_BUFFER = 3,
       CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
       CU_JIT_ERROR_LOG_BUFFER = 5,
       CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
};
enum { CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8 };
enum { CU_POINTER_ATTRIBUTE_CONTEXT = 1, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9 };

/* The driver entry points: (member, exported symbol, parameters). The _v2 symbols are the
 * ones cuda.h maps the plain names to; the unversioned ones are the CUDA 3.x ABI with 32-bit
 * sizes. The legacy default stream (not the _ptsz variants) is what a NULL stream means. */
#define CU_FUNCS(X)                                                                                \
  X(cuGetErrorName, "cuGetErrorName", (CUresult, const char **))                                   \
  X(cuGetErrorString, "cuGetErrorString", (CUresult, const char **))                               \
  X(cuInit, "cuInit", (unsigned))                                                                  \
  X(cuDriverGetVersion, "cuDriverGetVersion", (int *))                                             \
  X(cuDeviceGetCount, "cuDeviceGetCount", (int *))                                                 \
  X(cuDeviceGet, "cuDeviceGet", (CUdevice *, int))                                                 \
  X(cuDeviceGetName, "cuDeviceGetName", (char *, int, CUdevice))                                   \
  X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *, int, CUdevice))                          \
  X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *, CUdevice))                 \
  X(cuCtxPushCurrent, "cuCtxPushCurrent_v2", (CUcontext))                                          \
  X(cuCtxPopCurrent, "cuCtxPopCurrent_v2", (CUcontext *))                                          \
  X(cuCtxSynchronize, "cuCtxSynchronize", (void))                                                  \
  X(cuModuleLoadDataEx, "cuModuleLoadDataEx",                                                      \
    (CUmodule *, const void *, unsigned, int *, void **))                                          \
  X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *, CUmodule, const char *))            \
  X(cuModuleUnload, "cuModuleUnload", (CUmodule))                                                  \
  X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *, size_t))                                          \
  X(cuMemFree, "cuMemFree_v2", (CUdeviceptr))                                                      \
  X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr, const void *, size_t, CUstream))      \
  X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void *, CUdeviceptr, size_t, CUstream))            \
  X(cuMemsetD8Async, "cuMemsetD8Async", (CUdeviceptr, unsigned char, size_t, CUstream))            \
  X(cuPointerGetAttribute, "cuPointerGetAttribute", (void *, int, CUdeviceptr))                    \
  X(cuFuncSetAttribute, "cuFuncSetAttribute", (CUfunction, int, int))                              \
  X(cuFuncGetAttribute, "cuFuncGetAttribute", (int *, int, CUfunction))                           \
  X(cuLaunchKernel, "cuLaunchKernel",                                                              \
    (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,   \
     void **, void **))                                                                            \
  X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream))                                       \
  X(cuStreamCreate, "cuStreamCreate", (CUstream *, unsigned))                                      \
  X(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream))

#define CU_MEMBER(name, sym, params) CUresult(*name) params;
#define CU_SYMBOL(name, sym, params) sym,
static struct { CU_FUNCS(CU_MEMBER) } drv;
static const char *const drv_symbols[] = {CU_FUNCS(CU_SYMBOL)};

/* The outcome of cu_load, set once under pthread_once and read-only afterwards (the once
 * gives every later caller a happens-before edge on these writes). */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static keops_status load_status;
static char load_msg[1024];
static int ndev;
/* Primary contexts, retained on first use and kept for the life of the process: releasing
 * them at exit would race the driver's own teardown. */
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext *ctxs;
/* Per device, the sticky error that ended its primary context (0: none). A kernel fault
 * (ILLEGAL_ADDRESS, LAUNCH_FAILED...) leaves the context unusable: every later call on it
 * returns the error until the process resets the device, which keops never does under its
 * users' feet. Read and written under ctx_lock. */
static int *faults;
/* The contexts `enter` and `enter_owner` made current on this thread, innermost last: the
 * device ordinal of a primary context, -1 for a context of the user's (whose faults are not
 * the primary context's). Whose context a failing call used. */
static _Thread_local int entered[16], nentered;

static const char *err_name(CUresult r) {
  const char *s = NULL;
  if (!drv.cuGetErrorName || drv.cuGetErrorName(r, &s) != CUDA_SUCCESS || !s)
    return "unknown CUDA error";
  return s;
}

static const char *err_string(CUresult r) {
  const char *s = NULL;
  if (!drv.cuGetErrorString || drv.cuGetErrorString(r, &s) != CUDA_SUCCESS || !s)
    return "no description";
  return s;
}

/* Out of memory and missing devices keep their own statuses so that callers can fall back
 * (smaller tiles, the CPU); code the driver cannot run on this device (PTX it cannot compile,
 * a PTX ISA too new for it, no binary for the architecture) is a request this backend cannot
 * serve; everything else is a device failure. */
static keops_status status_of(CUresult r) {
  switch (r) {
  case CUDA_ERROR_OUT_OF_MEMORY: return KEOPS_ERROR_OUT_OF_MEMORY;
  case CUDA_ERROR_NO_DEVICE:
  case CUDA_ERROR_INVALID_DEVICE: return KEOPS_ERROR_NO_DEVICE;
  case CUDA_ERROR_INVALID_PTX:
  case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
  case CUDA_ERROR_NO_BINARY_FOR_GPU: return KEOPS_ERROR_UNSUPPORTED;
  default: return KEOPS_ERROR_DEVICE;
  }
}

/* The errors after which a context is lost (CUDA's "sticky" errors: the process must reset
 * the device). */
static int sticky(CUresult r) {
  return r == CUDA_ERROR_ILLEGAL_ADDRESS || r == CUDA_ERROR_LAUNCH_TIMEOUT ||
         (r >= CUDA_ERROR_HARDWARE_STACK_ERROR && r <= CUDA_ERROR_LAUNCH_FAILED);
}

/* Remembers a sticky error of the device current on this thread. */
static void note_fault(CUresult r) {
  if (!sticky(r) || !nentered || !faults || entered[nentered - 1] < 0) return;
  pthread_mutex_lock(&ctx_lock);
  if (!faults[entered[nentered - 1]]) faults[entered[nentered - 1]] = r;
  pthread_mutex_unlock(&ctx_lock);
}

/* "<call> failed: <NAME> (<description>)" and an optional detail after ": ". */
static keops_status fail(kerr *e, const char *call, CUresult r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static keops_status fail(kerr *e, const char *call, CUresult r, const char *fmt, ...) {
  keops_status st = status_of(r);
  note_fault(r);
  char detail[sizeof e->msg] = "";
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
  }
  kerr_set(e, st, "%s failed: %s (%s)%s%s", call, err_name(r), err_string(r), detail[0] ? ": " : "",
           detail);
  return st;
}

#define CU_CALL(e, name, args)                                                                     \
  do {                                                                                             \
    CUresult r_ = drv.name args;                                                                   \
    if (r_ != CUDA_SUCCESS) return fail(e, drv_symbols[sym_##name], r_, NULL);                     \
  } while (0)
#define CU_INDEX(name, sym, params) sym_##name,
enum { CU_FUNCS(CU_INDEX) sym_count };

static void load_fail(keops_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void load_fail(keops_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(load_msg, sizeof load_msg, fmt, ap);
  va_end(ap);
  load_status = st;
}

static void load(void) {
  /* libcuda.so.1 is the driver; the unversioned libcuda.so is the toolkit's link stub, which
   * fails every call with CUDA_ERROR_STUB_LIBRARY. */
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    load_fail(KEOPS_ERROR_NO_DEVICE, "no CUDA driver: dlopen(\"libcuda.so.1\") failed: %s",
              why ? why : "unknown reason");
    return;
  }
  void *slots[sym_count];
  for (int i = 0; i < sym_count; i++) {
    slots[i] = dlsym(lib, drv_symbols[i]);
    if (!slots[i]) {
      load_fail(KEOPS_ERROR_NO_DEVICE, "CUDA driver libcuda.so.1 lacks %s (driver too old?)",
                drv_symbols[i]);
      dlclose(lib);
      return;
    }
  }
  /* ISO C has no conversion between object and function pointers: copy the bits, which POSIX
   * guarantees to be a valid function pointer for dlsym's result. */
  _Static_assert(sizeof drv == sizeof slots, "one pointer per driver entry point");
  memcpy(&drv, slots, sizeof drv);

  CUresult r = drv.cuInit(0);
  if (r != CUDA_SUCCESS) {
    load_fail(KEOPS_ERROR_NO_DEVICE,
              "no usable CUDA device: libcuda.so.1 loaded, but cuInit failed: %s (%s)", err_name(r),
              err_string(r));
  } else if ((r = drv.cuDeviceGetCount(&ndev)) != CUDA_SUCCESS) {
    load_fail(KEOPS_ERROR_NO_DEVICE,
              "no usable CUDA device: libcuda.so.1 loaded, but cuDeviceGetCount failed: %s (%s)",
              err_name(r), err_string(r));
  } else if (ndev <= 0) {
    load_fail(KEOPS_ERROR_NO_DEVICE,
              "no CUDA device: libcuda.so.1 loaded, but the driver reports no device");
  } else if (!(ctxs = calloc((size_t)ndev, sizeof *ctxs)) ||
             !(faults = calloc((size_t)ndev, sizeof *faults))) {
    free(ctxs);
    ctxs = NULL;
    load_fail(KEOPS_ERROR_OUT_OF_MEMORY, "out of memory loading the CUDA driver");
  } else {
    load_status = KEOPS_OK;
    return;
  }
  ndev = 0;
  memset(&drv, 0, sizeof drv);
  dlclose(lib);
}

static keops_status cu_load(kerr *e) {
  pthread_once(&load_once, load);
  if (load_status != KEOPS_OK) kerr_set(e, load_status, "%s", load_msg);
  return load_status;
}

static keops_status cu_device_count(int *count, kerr *e) {
  if (count) *count = 0;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  if (count) *count = ndev;
  return KEOPS_OK;
}

static keops_status check_ordinal(int ordinal, kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  if (ordinal < 0 || ordinal >= ndev) {
    kerr_set(e, KEOPS_ERROR_NO_DEVICE, "device %d requested, %d available", ordinal, ndev);
    return KEOPS_ERROR_NO_DEVICE;
  }
  return KEOPS_OK;
}

static keops_status cu_device_info(int ordinal, rt_device_info *out, kerr *e) {
  if (!out) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "cu_device_info: NULL output");
    return KEOPS_ERROR_ARGUMENT;
  }
  memset(out, 0, sizeof *out);
  keops_status st = check_ordinal(ordinal, e);
  if (st != KEOPS_OK) return st;
  CUdevice dev;
  CU_CALL(e, cuDeviceGet, (&dev, ordinal));
  out->ordinal = ordinal;
  CU_CALL(e, cuDeviceGetName, (out->name, (int)sizeof out->name, dev));
  out->name[sizeof out->name - 1] = '\0';
  static const struct {
    int attr;
    size_t off;
  } attrs[] = {
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, offsetof(rt_device_info, cc_major)},
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, offsetof(rt_device_info, cc_minor)},
      {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, offsetof(rt_device_info, sm_count)},
      {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, offsetof(rt_device_info, max_threads_per_block)},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK,
       offsetof(rt_device_info, max_shared_per_block)},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
       offsetof(rt_device_info, max_shared_per_block_optin)},
      {CU_DEVICE_ATTRIBUTE_WARP_SIZE, offsetof(rt_device_info, warp_size)},
  };
  for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++) {
    int v = 0;
    CUresult r = drv.cuDeviceGetAttribute(&v, attrs[i].attr, dev);
    if (r != CUDA_SUCCESS)
      return fail(e, "cuDeviceGetAttribute", r, "attribute %d of device %d", attrs[i].attr,
                  ordinal);
    memcpy((char *)out + attrs[i].off, &v, sizeof v);
  }
  /* Before Volta there is no opt-in: the plain limit is all a block can get. */
  if (out->max_shared_per_block_optin < out->max_shared_per_block)
    out->max_shared_per_block_optin = out->max_shared_per_block;
  CU_CALL(e, cuDriverGetVersion, (&out->driver_version));
  return KEOPS_OK;
}

/* ---- contexts ------------------------------------------------------------------------ */

static keops_status cu_ctx_enter(int ordinal, kerr *e) {
  keops_status st = check_ordinal(ordinal, e);
  if (st != KEOPS_OK) return st;
  if (nentered == (int)(sizeof entered / sizeof *entered)) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "device %d: more than %d nested enters on one thread", ordinal,
             nentered);
    return KEOPS_ERROR_DEVICE;
  }
  /* One retain per device, under the lock, so concurrent first users share one context. */
  pthread_mutex_lock(&ctx_lock);
  CUcontext c = ctxs[ordinal];
  CUresult r = CUDA_SUCCESS, fault = faults[ordinal];
  const char *call = NULL;
  if (!c && !fault) {
    CUdevice dev;
    if ((r = drv.cuDeviceGet(&dev, ordinal)) != CUDA_SUCCESS)
      call = "cuDeviceGet";
    else if ((r = drv.cuDevicePrimaryCtxRetain(&c, dev)) != CUDA_SUCCESS)
      call = "cuDevicePrimaryCtxRetain";
    else
      ctxs[ordinal] = c;
  }
  pthread_mutex_unlock(&ctx_lock);
  if (fault) { /* fail fast: every call on that context would return the fault again */
    kerr_set(e, KEOPS_ERROR_DEVICE,
             "device %d is unusable: an earlier run in this process faulted with %s (%s), which "
             "ends its CUDA context until the process exits",
             ordinal, err_name(fault), err_string(fault));
    return KEOPS_ERROR_DEVICE;
  }
  if (call) return fail(e, call, r, "device %d", ordinal);
  CU_CALL(e, cuCtxPushCurrent, (c));
  entered[nentered++] = ordinal;
  return KEOPS_OK;
}

static void cu_ctx_leave(void) {
  CUcontext c;
  if (cu_load(NULL) != KEOPS_OK) return; /* the once orders the table's writes */
  drv.cuCtxPopCurrent(&c);
  if (nentered) nentered--;
}

static int cu_faulted(int ordinal) {
  if (cu_load(NULL) != KEOPS_OK || ordinal < 0 || ordinal >= ndev) return 0;
  pthread_mutex_lock(&ctx_lock);
  int f = faults[ordinal] != 0;
  pthread_mutex_unlock(&ctx_lock);
  return f;
}

/* The context that owns p: the device's primary one (*primary = 1), or one the user made with
 * cuCtxCreate, whose memory and streams only its own kernels may use. */
static keops_status cu_enter_owner(rt_dptr p, int *primary, kerr *e) {
  *primary = 0;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CUcontext c = NULL;
  int ord = -1;
  CUresult r = drv.cuPointerGetAttribute(&c, CU_POINTER_ATTRIBUTE_CONTEXT, p);
  if (r == CUDA_SUCCESS) r = drv.cuPointerGetAttribute(&ord, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p);
  if (r != CUDA_SUCCESS) return fail(e, "cuPointerGetAttribute", r, "pointer 0x%llx", p);
  /* the primary context, retained as enter does, to tell it from the user's */
  if ((st = cu_ctx_enter(ord, e)) != KEOPS_OK) return st;
  cu_ctx_leave();
  pthread_mutex_lock(&ctx_lock);
  *primary = c == ctxs[ord];
  pthread_mutex_unlock(&ctx_lock);
  if (*primary) return cu_ctx_enter(ord, e);
  if (nentered == (int)(sizeof entered / sizeof *entered)) {
    kerr_set(e, KEOPS_ERROR_DEVICE, "more than %d nested enters on one thread", nentered);
    return KEOPS_ERROR_DEVICE;
  }
  CU_CALL(e, cuCtxPushCurrent, (c));
  entered[nentered++] = -1;
  return KEOPS_OK;
}

/* ---- modules ------------------------------------------------------------------------- */

/* Drops trailing blanks and newlines the JIT leaves at the end of its logs. */
static void trim(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r')) s[--n] = '\0';
}

static keops_status cu_module_load(const void *image, size_t size, rt_module **module, kerr *e) {
  const char *ptx = image;
  (void)size; /* the driver reads PTX up to its NUL */
  if (module) *module = NULL;
  if (!ptx || !module) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "cu_module_load: NULL argument");
    return KEOPS_ERROR_ARGUMENT;
  }
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  char errlog[4096] = "", infolog[2048] = "";
  int opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_INFO_LOG_BUFFER,
                CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
  void *vals[] = {errlog, (void *)(uintptr_t)sizeof errlog, infolog,
                  (void *)(uintptr_t)sizeof infolog};
  CUmodule m = NULL;
  CUresult r = drv.cuModuleLoadDataEx(&m, ptx, (unsigned)(sizeof opts / sizeof *opts), opts, vals);
  if (r != CUDA_SUCCESS) {
    errlog[sizeof errlog - 1] = infolog[sizeof infolog - 1] = '\0';
    trim(errlog);
    trim(infolog);
    const char *log = errlog[0] ? errlog : infolog;
    return fail(e, "cuModuleLoadDataEx", r, log[0] ? "%s" : NULL, log);
  }
  *module = (rt_module *)m;
  return KEOPS_OK;
}

static keops_status cu_module_function(rt_module *module, const char *name, rt_function **fn,
                                       kerr *e) {
  if (fn) *fn = NULL;
  if (!module || !name || !fn) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "cu_module_function: NULL argument");
    return KEOPS_ERROR_ARGUMENT;
  }
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CUfunction f = NULL;
  CUresult r = drv.cuModuleGetFunction(&f, (CUmodule)module, name);
  if (r != CUDA_SUCCESS) return fail(e, "cuModuleGetFunction", r, "kernel %s", name);
  *fn = (rt_function *)f;
  return KEOPS_OK;
}

static keops_status cu_function_max_threads(rt_function *fn, int *threads, kerr *e) {
  *threads = 0;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CUresult r = drv.cuFuncGetAttribute(threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, (CUfunction)fn);
  if (r != CUDA_SUCCESS) return fail(e, "cuFuncGetAttribute", r, "MAX_THREADS_PER_BLOCK");
  return KEOPS_OK;
}

static keops_status cu_module_unload(rt_module *module, kerr *e) {
  if (!module) return KEOPS_OK;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CU_CALL(e, cuModuleUnload, ((CUmodule)module));
  return KEOPS_OK;
}

/* ---- memory -------------------------------------------------------------------------- */

static keops_status cu_alloc(size_t bytes, rt_dptr *dptr, kerr *e) {
  if (!dptr) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "cu_alloc: NULL argument");
    return KEOPS_ERROR_ARGUMENT;
  }
  *dptr = 0;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK || bytes == 0) return st;
  CUdeviceptr p = 0;
  CUresult r = drv.cuMemAlloc(&p, bytes);
  if (r != CUDA_SUCCESS) return fail(e, "cuMemAlloc_v2", r, "%zu bytes", bytes);
  *dptr = p;
  return KEOPS_OK;
}

static keops_status cu_free(rt_dptr dptr, kerr *e) {
  if (!dptr) return KEOPS_OK;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CU_CALL(e, cuMemFree, (dptr));
  return KEOPS_OK;
}

static keops_status cu_htod(rt_dptr dst, const void *src, size_t bytes, rt_stream *stream,
                            kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK || bytes == 0) return st;
  CUresult r = drv.cuMemcpyHtoDAsync(dst, src, bytes, (CUstream)stream);
  if (r != CUDA_SUCCESS) return fail(e, "cuMemcpyHtoDAsync_v2", r, "%zu bytes", bytes);
  return KEOPS_OK;
}

static keops_status cu_dtoh(void *dst, rt_dptr src, size_t bytes, rt_stream *stream, kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK || bytes == 0) return st;
  CUresult r = drv.cuMemcpyDtoHAsync(dst, src, bytes, (CUstream)stream);
  if (r != CUDA_SUCCESS) return fail(e, "cuMemcpyDtoHAsync_v2", r, "%zu bytes", bytes);
  return KEOPS_OK;
}

static keops_status cu_memset0(rt_dptr dptr, size_t bytes, rt_stream *stream, kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK || bytes == 0) return st;
  CUresult r = drv.cuMemsetD8Async(dptr, 0, bytes, (CUstream)stream);
  if (r != CUDA_SUCCESS) return fail(e, "cuMemsetD8Async", r, "%zu bytes", bytes);
  return KEOPS_OK;
}

static keops_status cu_pointer_device(rt_dptr dptr, int *ordinal, kerr *e) {
  if (!ordinal) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "cu_pointer_device: NULL argument");
    return KEOPS_ERROR_ARGUMENT;
  }
  *ordinal = -1;
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  int ord = -1;
  CUresult r = drv.cuPointerGetAttribute(&ord, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, dptr);
  if (r != CUDA_SUCCESS) return fail(e, "cuPointerGetAttribute", r, "pointer 0x%llx", dptr);
  *ordinal = ord;
  return KEOPS_OK;
}

/* ---- launches ------------------------------------------------------------------------ */

static keops_status cu_launch(rt_function *fn, const unsigned grid[3], const unsigned block[3],
                              unsigned shared_bytes, rt_stream *stream, void **params, kerr *e) {
  if (!fn || !grid || !block) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "cu_launch: NULL argument");
    return KEOPS_ERROR_ARGUMENT;
  }
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  /* Above 48 KiB of dynamic shared memory a kernel must opt in (Volta and later). */
  if (shared_bytes > 48u * 1024) {
    CUresult r = drv.cuFuncSetAttribute(
        (CUfunction)fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)shared_bytes);
    if (r != CUDA_SUCCESS)
      return fail(e, "cuFuncSetAttribute", r, "%u bytes of dynamic shared memory", shared_bytes);
  }
  CUresult r = drv.cuLaunchKernel((CUfunction)fn, grid[0], grid[1], grid[2], block[0], block[1],
                                  block[2], shared_bytes, (CUstream)stream, params, NULL);
  if (r != CUDA_SUCCESS)
    return fail(e, "cuLaunchKernel", r, "grid %ux%ux%u, block %ux%ux%u, %u bytes shared", grid[0],
                grid[1], grid[2], block[0], block[1], block[2], shared_bytes);
  return KEOPS_OK;
}

static keops_status cu_sync(rt_stream *stream, kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  if (stream)
    CU_CALL(e, cuStreamSynchronize, ((CUstream)stream));
  else
    CU_CALL(e, cuCtxSynchronize, ());
  return KEOPS_OK;
}

static keops_status cu_stream_create(rt_stream **stream, kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CUstream s = NULL;
  CU_CALL(e, cuStreamCreate, (&s, 1u)); /* CU_STREAM_NON_BLOCKING: no implicit default-stream sync */
  *stream = (rt_stream *)s;
  return KEOPS_OK;
}

static keops_status cu_stream_destroy(rt_stream *stream, kerr *e) {
  keops_status st = cu_load(e);
  if (st != KEOPS_OK) return st;
  CU_CALL(e, cuStreamDestroy, ((CUstream)stream));
  return KEOPS_OK;
}

const rt_device cu_driver = {
    .name = "CUDA driver",
    .image = RT_IMAGE_PTX,
    .load = cu_load,
    .count = cu_device_count,
    .info = cu_device_info,
    .enter = cu_ctx_enter,
    .leave = cu_ctx_leave,
    .faulted = cu_faulted,
    .enter_owner = cu_enter_owner,
    .module_load = cu_module_load,
    .module_function = cu_module_function,
    .function_max_threads = cu_function_max_threads,
    .module_unload = cu_module_unload,
    .alloc = cu_alloc,
    .free = cu_free,
    .htod = cu_htod,
    .dtoh = cu_dtoh,
    .memset0 = cu_memset0,
    .pointer_device = cu_pointer_device,
    .launch = cu_launch,
    .sync = cu_sync,
    .stream_create = cu_stream_create,
    .stream_destroy = cu_stream_destroy,
};
