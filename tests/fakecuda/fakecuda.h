/* The tests' fake CUDA driver: libcuda.so.1 built from tests/fakecuda/, found by
 * runtime/cuda.c's dlopen through LD_LIBRARY_PATH. It implements the driver entry points
 * cuda.c loads (and a few the tests use: cuCtxCreate, cuFuncGetAttribute...) on the host:
 *
 * - device memory is host memory (a CUdeviceptr is a host address), in an allocation table;
 *   every copy and memset is checked against it (CUDA_ERROR_INVALID_VALUE outside one
 *   allocation), fresh allocations are filled with 0xff bytes (NaN in either dtype);
 * - work queued on a stream runs only at synchronisation points: cuStreamSynchronize,
 *   cuCtxSynchronize, cuMemFree (which synchronises the context, as CUDA's does), and a copy
 *   to (pageable) host memory, which runs its stream's work before it returns, as CUDA
 *   documents; host-to-device copies take their source at the call (CUDA stages pageable
 *   memory), so a missing synchronisation shows as a wrong result;
 * - contexts: per-thread stacks, primary contexts retained and released, cuCtxCreate ones;
 *   memory, modules and streams belong to the context current when they were made, and a
 *   kernel that touches memory outside its context's allocations faults (ILLEGAL_ADDRESS,
 *   sticky: every later call on that context returns it);
 * - modules: PTX is not compiled; the program is rebuilt from its "// keops program:" line
 *   (fe_from_key), compiled for the GPU emulator (kt_gpuemu) and run by it (runtime/emulator.c)
 *   at the stream's synchronisation point. PTX without the line: CUDA_ERROR_INVALID_PTX, with
 *   a log; a .version newer than the driver's, UNSUPPORTED_PTX_VERSION; a .target newer than
 *   the device, NO_BINARY_FOR_GPU.
 *
 * The tests script it with the functions below (dlopen("libcuda.so.1") + dlsym, in the
 * process that uses cuda.c), or with environment variables read at first use:
 *   FAKECUDA_DEVICES=N  FAKECUDA_CC=9.0,8.6,...  FAKECUDA_DRIVER=12080
 *   FAKECUDA_COMPUTE_MODE=prohibited  FAKECUDA_MEMORY=bytes
 *   FAKECUDA_FAIL=entry:nth:code[:sticky],...   (see fakecuda_fail)
 * Everything is thread-safe; nothing prints. */
#ifndef KEOPS_FAKECUDA_H
#define KEOPS_FAKECUDA_H

#include <stddef.h>

typedef struct fakecuda_device {
  char name[64];
  int cc_major, cc_minor;
  int sm_count;
  int max_threads_per_block;
  int shared_per_block;       /* without opting in */
  int shared_per_block_optin; /* with cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) */
  int regs_per_block;
  int compute_mode;           /* 0 default, 2 prohibited, 3 exclusive process */
  size_t memory;              /* bytes cuMemAlloc may hand out */
} fakecuda_device;

/* What is alive now: the leak checks. */
typedef struct fakecuda_live {
  int allocations; /* of contexts without a sticky error */
  size_t bytes;
  int modules, streams;
  /* allocations and modules of contexts a sticky error ended: their frees and unloads fail
   * with the error, as the driver's do; only a reset of the context reclaims them */
  int lost_allocations, lost_modules;
  int user_contexts;   /* cuCtxCreate'd, not destroyed */
  int primary_retains; /* sum over devices of primary-context retain counts */
  int queued;          /* operations waiting for a synchronisation */
} fakecuda_live;

typedef int (*fakecuda_set_devices_fn)(int count, int driver_version);
typedef int (*fakecuda_get_device_fn)(int ordinal, fakecuda_device *out);
typedef int (*fakecuda_set_device_fn)(int ordinal, const fakecuda_device *d);
typedef void (*fakecuda_fail_fn)(const char *entry, int nth, int code, int sticky);
typedef void (*fakecuda_clear_failures_fn)(void);
typedef long (*fakecuda_calls_fn)(const char *entry);
typedef void (*fakecuda_live_fn)(fakecuda_live *out);
typedef const char *(*fakecuda_last_fault_fn)(void);
typedef void (*fakecuda_set_kernel_regs_fn)(int regs);
typedef void (*fakecuda_hold_fn)(const char *entry, int nth);
typedef int (*fakecuda_held_fn)(void);
typedef void (*fakecuda_release_fn)(void);

/* count devices (0..16) of the default kind (9.0, 132 SMs, 1024 threads, 48/227 KiB shared,
 * 65536 registers, 1 GiB) and the driver version (12080 = CUDA 12.8); -1 on bad values. */
int fakecuda_set_devices(int count, int driver_version);
int fakecuda_get_device(int ordinal, fakecuda_device *out); /* 0, or -1 out of range */
int fakecuda_set_device(int ordinal, const fakecuda_device *d);
/* The nth call from now of entry point `entry` (its exported name, e.g. "cuMemAlloc_v2";
 * NULL: any entry point) returns code without doing anything; nth 0: every call. sticky:
 * the code also becomes the current context's sticky error (as 700 and 719 do on a GPU). */
void fakecuda_fail(const char *entry, int nth, int code, int sticky);
void fakecuda_clear_failures(void);
long fakecuda_calls(const char *entry); /* calls so far; NULL: all entry points */
void fakecuda_get_live(fakecuda_live *out);
const char *fakecuda_last_fault(void); /* the emulator's message of the last kernel fault */
void fakecuda_set_kernel_regs(int regs); /* registers per thread a kernel reports (default 32) */
/* The nth call from now (nth >= 1) of entry point `entry` waits at its start, before doing
 * anything, until fakecuda_release(): a test stops a run in the middle to run another
 * meanwhile. fakecuda_held() says whether a call waits now; release also cancels a hold not
 * reached yet. */
void fakecuda_hold(const char *entry, int nth);
int fakecuda_held(void);
void fakecuda_release(void);

#endif
