/* The GPU emulation target (emu.c): gpu.c's kernels, built with kt_grid hooks that read a
 * per-thread state instead of PTX special registers, compiled for the host and run by the
 * emulator (runtime/emulator.c), which executes each block's threads as fibers with real barrier
 * semantics and checks every shared and global memory access.
 *
 * The code's ABI, for each kernel `name` of a module (keops_kernel, keops_combine):
 *   void name(void *const *params, kt_emu_thread *t)
 * params as cuLaunchKernel's (params[q] points at argument q, 8 bytes each: i64 or pointer),
 * called once per thread with that thread's state; and a constant kt_emu_info `name.info`. */
#ifndef KEOPS_EMU_H
#define KEOPS_EMU_H

#include <stdint.h>

typedef struct kt_emu_thread kt_emu_thread;

/* access() kinds: what the kernel is about to do at addr (bytes of it). */
enum { KT_EMU_LOAD = 0, KT_EMU_STORE = 1, KT_EMU_SHARED = 2 };

/* One thread's state, written by the emulator; the kernel only reads it (the field order is
 * the code's: emu.c builds the same struct type). */
struct kt_emu_thread {
  uint32_t sreg[5]; /* kt_sreg order: tid.x, ntid.x, ctaid.x, ctaid.y, nctaid.y */
  uint32_t pad;
  void *shared;     /* the block's dynamic shared memory */
  /* Waits for every thread of the block (returns when all have arrived). */
  void (*barrier)(kt_emu_thread *t);
  /* Called before every load and store of shared or global memory: kind is KT_EMU_LOAD or
   * KT_EMU_STORE, plus KT_EMU_SHARED for shared memory. Returns only when the access is
   * allowed: otherwise the emulator ends the launch with an error. */
  void (*access)(kt_emu_thread *t, const void *addr, uint64_t bytes, uint32_t kind);
};

/* What the launcher needs to know of a kernel beyond its entry point. */
typedef struct kt_emu_info {
  uint32_t nparams;  /* 8-byte arguments in params */
  uint32_t maxntid;  /* its launch bound: threads per block */
  uint32_t ftz;      /* float32 denormals flush to zero, as the GPU's code does */
  uint32_t pad;
} kt_emu_info;

typedef void (*kt_emu_entry)(void *const *params, kt_emu_thread *t);

#endif
