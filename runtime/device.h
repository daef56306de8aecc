/* The device interface of the GPU backend: what the runtime (gpu_run.c, context.c) asks of a
 * GPU, as a table of hooks. runtime/cuda.c implements it over the CUDA driver (cu_driver); a
 * second implementation (an emulator) is just another table, and a context runs on the table
 * it holds (keops_context.dev).
 *
 * Conventions, for every hook and every implementation:
 * - An implementation is a process-wide singleton: hooks take no `self`, the state (a driver
 *   opened once, contexts retained per device) lives in the implementation's file. Every hook
 *   is thread-safe and keeps no error state between calls.
 * - A hook that can fail returns a keops_status and fills e (when not NULL; every hook accepts
 *   a NULL e) with a message naming what failed. Statuses: KEOPS_ERROR_NO_DEVICE (no driver, no
 *   device, ordinal out of range), KEOPS_ERROR_OUT_OF_MEMORY (device memory), KEOPS_ERROR_ARGUMENT
 *   (a NULL where a pointer is required), KEOPS_ERROR_DEVICE (any other failure). Nothing
 *   prints, aborts or exits.
 * - Module, memory, launch, sync and stream hooks act on the device made current on the calling
 *   thread by `enter`: bracket them with enter / leave.
 * - Handles are opaque (rt_module, rt_function, rt_stream); device memory is an rt_dptr, a
 *   device address (0: none). Who owns each is said at the hook that makes it. */
#ifndef KEOPS_DEVICE_H
#define KEOPS_DEVICE_H

#include <stddef.h>

#include "keops.h"
#include "kerr.h"

/* What the runtime needs to know of one device: launch limits, and the inputs of the PTX
 * target choice (rt_ptx_target). */
typedef struct rt_device_info {
  int ordinal;
  char name[256];
  int cc_major, cc_minor; /* compute capability, e.g. 9.0 */
  int sm_count;           /* streaming multiprocessors */
  int max_threads_per_block;
  int max_shared_per_block;       /* bytes available without opting in (48 KiB) */
  int max_shared_per_block_optin; /* bytes a kernel may get with `launch` (227 KiB on H100) */
  int warp_size;
  int driver_version; /* the driver's CUDA release, 1000*major + 10*minor (12080 = 12.8): the
                         newest PTX ISA the driver accepts follows from it */
} rt_device_info;

typedef struct rt_module rt_module;     /* code loaded on one device */
typedef struct rt_function rt_function; /* a kernel of a module; lives as long as its module */
typedef struct rt_stream rt_stream;     /* an ordered queue of device work; NULL: the default */
typedef unsigned long long rt_dptr;     /* a device address; 0 is never a valid allocation */

/* The code a device loads (rt_device.image). */
enum {
  RT_IMAGE_PTX,        /* PTX text (kt_nvptx's), JIT-compiled by the driver */
  RT_IMAGE_HOST_OBJECT /* an object file of the host (kt_gpuemu's, compiler/emu.h's ABI) */
};

typedef struct rt_device {
  const char *name; /* the implementation, for people: "CUDA driver" */
  int image;        /* RT_IMAGE_*: what module_load takes */

  /* ---- describe ---- */
  /* Opens the implementation, once per process; later calls return the same outcome and
   * message. Every other hook calls it first, so calling it is only needed to learn why the
   * implementation is unusable. */
  keops_status (*load)(kerr *e);
  /* Number of devices (>= 1 once load succeeded; 0 on failure). */
  keops_status (*count)(int *count, kerr *e);
  /* The properties of device `ordinal` into *out (caller's storage); out of range:
   * KEOPS_ERROR_NO_DEVICE. */
  keops_status (*info)(int ordinal, rt_device_info *out, kerr *e);

  /* ---- the current device ---- */
  /* Makes device `ordinal` current on this thread (pushed on the thread's stack of current
   * devices). Whatever enter acquires for a device is kept for the life of the process.
   * Every successful enter must be paired with one leave on the same thread. */
  keops_status (*enter)(int ordinal, kerr *e);
  /* Pops what enter pushed; harmless when load failed. */
  void (*leave)(void);
  /* Nonzero once device `ordinal` had a fault that leaves it unusable for the rest of the
   * process (CUDA's sticky errors): `enter` then fails at once, and AUTO runs on the CPU.
   * NULL: the implementation has no such faults. */
  int (*faulted)(int ordinal);
  /* Makes current the context that owns device address p, for runs on the user's device
   * pointers: the primary context of p's device (*primary = 1, as enter(ordinal) would), or one
   * the user created (CUDA's cuCtxCreate), whose memory and streams only code loaded in it may
   * use. Pair with leave. NULL: every pointer belongs to the context enter makes current. */
  keops_status (*enter_owner)(rt_dptr p, int *primary, kerr *e);

  /* ---- modules ---- */
  /* Loads size bytes of code of the device's image kind (PTX: NUL-terminated text, size
   * without the NUL) on the current device into *module, which the caller owns and releases
   * with module_unload on the same device. The caller keeps image; it may be freed after the
   * call. On failure *module is NULL and the message ends with the JIT's log. */
  keops_status (*module_load)(const void *image, size_t size, rt_module **module, kerr *e);
  /* The kernel `name` of module into *fn (NULL on failure), valid until the module is
   * unloaded; nothing to release. */
  keops_status (*module_function)(rt_module *module, const char *name, rt_function **fn, kerr *e);
  /* The most threads per block fn launches with, its registers and local memory per thread
   * counted (CUDA's MAX_THREADS_PER_BLOCK attribute), into *threads. */
  keops_status (*function_max_threads)(rt_function *fn, int *threads, kerr *e);
  /* Releases module and its functions. A NULL module is fine; e may be NULL so that a
   * cleanup path can ignore the outcome. */
  keops_status (*module_unload)(rt_module *module, kerr *e);

  /* ---- memory of the current device ---- */
  /* bytes of device memory into *dptr (0 on failure), owned by the caller, released with
   * free. bytes == 0 gives *dptr = 0 and succeeds. */
  keops_status (*alloc)(size_t bytes, rt_dptr *dptr, kerr *e);
  /* Releases what alloc gave; dptr 0 is fine. The caller makes sure no queued work still uses
   * it (sync first). */
  keops_status (*free)(rt_dptr dptr, kerr *e);
  /* Copies, queued on `stream` (NULL: the default stream): the host memory must stay valid
   * until they complete. A copy into pageable host memory is complete when dtoh returns;
   * other copies only after sync. bytes == 0 does nothing. */
  keops_status (*htod)(rt_dptr dst, const void *src, size_t bytes, rt_stream *stream, kerr *e);
  keops_status (*dtoh)(void *dst, rt_dptr src, size_t bytes, rt_stream *stream, kerr *e);
  keops_status (*memset0)(rt_dptr dptr, size_t bytes, rt_stream *stream, kerr *e);
  /* The device ordinal a device address belongs to into *ordinal (-1 on failure): the
   * runtime checks the device pointers users pass with it. An address the implementation does
   * not know: KEOPS_ERROR_DEVICE. */
  keops_status (*pointer_device)(rt_dptr dptr, int *ordinal, kerr *e);

  /* ---- execution ---- */
  /* Queues fn on `stream` (NULL: the default stream) over grid x block threads with
   * shared_bytes of dynamic shared memory (above 48 KiB opted into first, up to the device's
   * max_shared_per_block_optin). params is an array of pointers to each argument, read before
   * launch returns. */
  keops_status (*launch)(rt_function *fn, const unsigned grid[3], const unsigned block[3],
                         unsigned shared_bytes, rt_stream *stream, void **params, kerr *e);
  /* Waits for the work queued on stream; NULL waits for all work of the current device. */
  keops_status (*sync)(rt_stream *stream, kerr *e);
  /* A stream of the current device that does not wait for the default stream, into *stream;
   * the caller owns it and releases it with stream_destroy (same device current). */
  keops_status (*stream_create)(rt_stream **stream, kerr *e);
  keops_status (*stream_destroy)(rt_stream *stream, kerr *e);
} rt_device;

/* The LLVM NVPTX target for device d with LLVM major version llvm_major: the CPU name
 * ("sm_90") into sm and the PTX ISA feature ("+ptx85") into ptx_feature. The architecture is
 * the device's own when that LLVM knows it, else the newest portable one below it (PTX is
 * JIT-compiled forward by the driver); the PTX ISA is the newest both LLVM and the driver
 * (d->driver_version) accept. KEOPS_ERROR_UNSUPPORTED for a device older than sm_50, an LLVM
 * older than 19, or a driver too old for the chosen target; KEOPS_ERROR_ARGUMENT for buffers
 * too small. Pure: it depends on d alone, whatever implementation described it (ptx_target.c;
 * the tests feed it synthetic devices). */
keops_status rt_ptx_target(const rt_device_info *d, int llvm_major, char *sm, size_t sm_size,
                           char *ptx_feature, size_t ptx_feature_size, kerr *e);

#endif
