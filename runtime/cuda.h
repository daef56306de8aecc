/* The CUDA driver as a device (device.h), for the GPU backend and the tests of the driver
 * layer.
 *
 * The driver is opened at run time with dlopen("libcuda.so.1") through a table of typed
 * function pointers, so building keops needs nothing of CUDA and a machine without a driver
 * or a device gets KEOPS_ERROR_NO_DEVICE with a message saying why, from every hook.
 *
 * Messages name the driver call and the driver's name for the error, e.g.
 * "cuModuleLoadDataEx failed: CUDA_ERROR_INVALID_PTX (...): <JIT error log>";
 * CUDA_ERROR_OUT_OF_MEMORY is KEOPS_ERROR_OUT_OF_MEMORY, CUDA_ERROR_NO_DEVICE and
 * CUDA_ERROR_INVALID_DEVICE are KEOPS_ERROR_NO_DEVICE, CUDA_ERROR_INVALID_PTX,
 * UNSUPPORTED_PTX_VERSION and NO_BINARY_FOR_GPU (code this driver or device cannot run) are
 * KEOPS_ERROR_UNSUPPORTED, any other driver error is KEOPS_ERROR_DEVICE. A sticky error
 * (ILLEGAL_ADDRESS, LAUNCH_FAILED and the other kernel faults) ends the device's primary
 * context: cuda.c remembers it, `enter` fails at once for that device afterwards, naming the
 * fault, and `faulted` says so (AUTO then runs on the CPU). `enter` makes the device's primary context current; primary contexts are
 * retained once per device and kept for the life of the process (releasing them at exit would
 * race the driver's own teardown). Streams are non-blocking CUDA streams, rt_dptr a
 * CUdeviceptr; module_load's PTX is JIT-compiled by the driver. */
#ifndef KEOPS_CUDA_H
#define KEOPS_CUDA_H

#include "device.h"

extern const rt_device cu_driver;

#endif
