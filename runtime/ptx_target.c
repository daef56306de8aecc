/* The PTX target choice (rt_ptx_target, device.h): which NVPTX architecture and PTX ISA an
 * LLVM release can emit for a device, from its compute capability and driver version alone,
 * so that every device implementation shares it and the tests can feed it synthetic devices.
 *
 * Architectures LLVM's NVPTX back end knows, with the first LLVM release that knows each and
 * the PTX ISA each needs at least (LLVM's NVPTX.td `Proc` rows, which follow the PTX ISA
 * manual's target table; LLVM 19 checked with `llc -march=nvptx64 -mcpu=help` here):
 *   LLVM 19: sm_50..sm_90 (and sm_90a), up to +ptx85
 *   LLVM 20: + sm_100, sm_101, sm_120 (their 'a' forms), up to +ptx87 (llvm PRs #123398, #124155)
 *   LLVM 21: + sm_103, sm_121 and the 'f' forms, up to +ptx88 (llvm PR #136639)
 *   LLVM 22: + sm_88, sm_110 (PTX 9.0 renamed sm_101 to sm_110), up to +ptx90 (llvm PR #156857)
 * Newer LLVM releases are treated as 22: a subset of what they know is always safe.
 * The 'a'/'f' variants are never used: their PTX does not run on later architectures.
 * `portable` rows are the mainline ones chosen for a device LLVM does not know: compute_XY PTX
 * is JIT-compiled by the driver for any later device (compute_90 PTX runs on sm_100), but the
 * embedded and renamed targets (sm_53, 62, 72, 87, 88, 101, 103, 110, 121) are only chosen
 * for that exact device. sm_101 PTX must stay at or below PTX 8.8, its last under that name. */
#include <stdio.h>

#include "device.h"

typedef struct arch_row {
  int sm, min_ptx, max_ptx, llvm, portable;
} arch_row;
static const arch_row arch_rows[] = {
    /* ascending sm */
    {50, 40, 0, 19, 1},   {52, 41, 0, 19, 1},  {53, 42, 0, 19, 0},  {60, 50, 0, 19, 1},
    {61, 50, 0, 19, 1},   {62, 50, 0, 19, 0},  {70, 60, 0, 19, 1},  {72, 61, 0, 19, 0},
    {75, 63, 0, 19, 1},   {80, 70, 0, 19, 1},  {86, 71, 0, 19, 1},  {87, 74, 0, 19, 0},
    {88, 90, 0, 22, 0},   {89, 78, 0, 19, 1},  {90, 78, 0, 19, 1},  {100, 86, 0, 20, 1},
    {101, 86, 88, 20, 0}, {103, 88, 0, 21, 0}, {110, 90, 0, 22, 0}, {120, 87, 0, 20, 1},
    {121, 88, 0, 21, 0},
};

/* The newest PTX ISA each CUDA driver accepts (NVIDIA's PTX ISA release history: PTX 8.6
 * came with CUDA 12.7, none with 12.6), newest first; cuDriverGetVersion's 1000*major+10*minor. */
static const struct {
  int driver, ptx;
} driver_rows[] = {
    {13010, 91}, {13000, 90}, {12090, 88}, {12080, 87}, {12070, 86}, {12050, 85}, {12040, 84},
    {12030, 83}, {12020, 82}, {12010, 81}, {12000, 80}, {11080, 78}, {11070, 77}, {11060, 76},
    {11050, 75}, {11040, 74}, {11030, 73}, {11020, 72}, {11010, 71}, {11000, 70}, {10020, 65},
    {10010, 64}, {10000, 63}, {9020, 62},  {9010, 61},  {9000, 60},
};

/* The oldest PTX ISA keops emits: 6.0 (CUDA 9.0) is LLVM's own default since LLVM 16 and the
 * first with the .sync warp primitives (shfl.sync, vote.sync) the GPU kernels use. */
enum { KEOPS_MIN_PTX = 60, KEOPS_MIN_LLVM = 19, KEOPS_MAX_LLVM_TABLE = 22 };

static int llvm_max_ptx(int llvm_major) {
  if (llvm_major >= 22) return 90;
  if (llvm_major == 21) return 88;
  if (llvm_major == 20) return 87;
  return 85;
}

keops_status rt_ptx_target(const rt_device_info *d, int llvm_major, char *sm, size_t sm_size,
                           char *ptx_feature, size_t ptx_feature_size, kerr *e) {
  if (!d || !sm || !ptx_feature || sm_size < 8 || ptx_feature_size < 8) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "rt_ptx_target: NULL argument or buffer under 8 bytes");
    return KEOPS_ERROR_ARGUMENT;
  }
  sm[0] = ptx_feature[0] = '\0';
  if (llvm_major < KEOPS_MIN_LLVM) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "the GPU backend needs LLVM %d or newer, this is LLVM %d",
             KEOPS_MIN_LLVM, llvm_major);
    return KEOPS_ERROR_UNSUPPORTED;
  }
  if (llvm_major > KEOPS_MAX_LLVM_TABLE) llvm_major = KEOPS_MAX_LLVM_TABLE;
  int cc = d->cc_major * 10 + d->cc_minor;
  if (d->cc_major < 5 || d->cc_minor < 0 || d->cc_minor > 9) {
    kerr_set(
        e, KEOPS_ERROR_UNSUPPORTED,
        "device %d (%s) has compute capability %d.%d; the GPU backend needs 5.0 (sm_50) or newer",
        d->ordinal, d->name, d->cc_major, d->cc_minor);
    return KEOPS_ERROR_UNSUPPORTED;
  }
  int drv_ptx = 0;
  for (size_t i = 0; i < sizeof driver_rows / sizeof *driver_rows && !drv_ptx; i++)
    if (d->driver_version >= driver_rows[i].driver) drv_ptx = driver_rows[i].ptx;
  if (drv_ptx < KEOPS_MIN_PTX) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED,
             "the CUDA driver (CUDA %d.%d) is too old: the GPU backend emits PTX ISA 6.0 or newer, "
             "which needs a driver of CUDA 9.0 or newer",
             d->driver_version / 1000, d->driver_version % 1000 / 10);
    return KEOPS_ERROR_UNSUPPORTED;
  }
  int ptx = drv_ptx < llvm_max_ptx(llvm_major) ? drv_ptx : llvm_max_ptx(llvm_major);
  /* The newest architecture that LLVM knows, the device runs and the PTX ISA can express. */
  const arch_row *pick = NULL;
  for (size_t i = sizeof arch_rows / sizeof *arch_rows; i-- > 0 && !pick;) {
    const arch_row *a = &arch_rows[i];
    if (a->llvm <= llvm_major && a->sm <= cc && (a->sm == cc || a->portable) && a->min_ptx <= ptx)
      pick = a;
  }
  if (!pick) { /* unreachable while sm_50 (PTX 4.0) is in the table; kept for table edits */
    kerr_set(
        e, KEOPS_ERROR_UNSUPPORTED,
        "LLVM %d has no target for device %d (%s, compute capability %d.%d) with PTX ISA %d.%d",
        llvm_major, d->ordinal, d->name, d->cc_major, d->cc_minor, ptx / 10, ptx % 10);
    return KEOPS_ERROR_UNSUPPORTED;
  }
  if (pick->max_ptx && ptx > pick->max_ptx) ptx = pick->max_ptx;
  snprintf(sm, sm_size, "sm_%d", pick->sm);
  snprintf(ptx_feature, ptx_feature_size, "+ptx%d", ptx);
  return KEOPS_OK;
}
