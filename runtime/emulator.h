/* The GPU emulator: runs kt_gpuemu's code (compiler/emu.h's ABI) on the host, blocks shared
 * out to a few OS threads, each block's threads as fibers that meet at real barriers. It checks
 * what a GPU would not: a thread that exits while others wait at a barrier, shared-memory
 * races between barriers (a writer and reader per 4-byte word and barrier epoch),
 * misaligned shared accesses, accesses past the dynamic shared size or outside the launch's global memory; and it enforces the launch
 * limits a device does (threads per block against the kernel's launch bound and the
 * device, grid extents, shared memory against the limit the kernel opted into). Float32
 * kernels run with the host's flush-to-zero modes on (x86: MXCSR FTZ and DAZ).
 *
 * Two devices are built on it: the emulated rt_device (emu_device.c, KEOPS_GPU=emulator) and
 * the tests' fake CUDA driver. Thread-safe: launches on different threads run concurrently;
 * nothing prints. */
#ifndef KEOPS_RT_EMU_H
#define KEOPS_RT_EMU_H

#include <stddef.h>
#include <stdint.h>

#include "emu.h"
#include "kerr.h"

typedef struct rt_emu_module rt_emu_module;
typedef struct rt_emu_function {
  kt_emu_entry entry;
  kt_emu_info info;
  char name[64];
} rt_emu_function;

/* Links size bytes of a host object file made by kt_compile for kt_gpuemu (KC_OBJ) into a
 * JIT of its own, into *m (the caller owns it; release with rt_emu_module_unload). The caller
 * keeps obj. KEOPS_ERROR_COMPILE with the linker's message on failure (*m NULL). */
keops_status rt_emu_module_load(const void *obj, size_t size, rt_emu_module **m, kerr *e);
/* The kernel `name` of m into *fn, valid until m is unloaded. KEOPS_ERROR_DEVICE when m has
 * no such kernel. */
keops_status rt_emu_module_function(rt_emu_module *m, const char *name, const rt_emu_function **fn,
                                    kerr *e);
void rt_emu_module_unload(rt_emu_module *m); /* NULL is fine */

/* One launch: fn over grid x block threads. */
typedef struct rt_emu_launch {
  const rt_emu_function *fn;
  unsigned grid[3], block[3];
  unsigned shared_bytes;   /* dynamic shared memory per block */
  unsigned shared_limit;   /* what the kernel may have: 48 KiB unless it opted into more */
  unsigned max_threads;    /* the device's threads per block (1024) */
  void *const *params;     /* as cuLaunchKernel's: params[q] points at argument q (8 bytes) */
  /* Nonzero when [addr, addr + bytes) lies inside one live allocation of the launch's device
   * (called from the kernel's threads, on several OS threads at once). NULL: every access is. */
  int (*global_ok)(void *ctx, const void *addr, uint64_t bytes);
  void *global_ctx;
} rt_emu_launch;

/* The launch's configuration against the limits, as a device checks it when the launch is
 * queued: KEOPS_OK or KEOPS_ERROR_ARGUMENT (see rt_emu_run). */
keops_status rt_emu_check(const rt_emu_launch *l, kerr *e);
/* Runs the launch to completion. KEOPS_ERROR_ARGUMENT for a launch a device would refuse
 * (the message says which limit, as CUDA_ERROR_INVALID_VALUE or LAUNCH_OUT_OF_RESOURCES
 * would); KEOPS_ERROR_DEVICE for what the kernel did wrong (the message names the thread,
 * the block and the access), after which the launch is abandoned: the other threads of the
 * grid may not have run. */
keops_status rt_emu_run(const rt_emu_launch *l, kerr *e);

/* The emulated devices (emu_device.c): what KEOPS_GPU=emulator makes a context's GPU. */
struct rt_device;
extern const struct rt_device rt_emu_device;

#endif
