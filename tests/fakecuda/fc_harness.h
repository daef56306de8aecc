/* What the fake-driver suites (test_fakecuda.c, test_fakecuda_scratch.c) share: the fake's
 * control functions, found with dlsym (the suites do not link the fake), its leak check, and
 * the j-split kernel both run. Each suite is one program: static copies are per suite. */
#ifndef KEOPS_FC_HARNESS_H
#define KEOPS_FC_HARNESS_H

#include <check.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakecuda.h"
#include "matrix.h"

/* The fake's control functions (dlsym: the test does not link the fake). */
static struct {
  fakecuda_set_devices_fn set_devices;
  fakecuda_get_device_fn get_device;
  fakecuda_set_device_fn set_device;
  fakecuda_fail_fn inject;
  fakecuda_clear_failures_fn clear_failures;
  fakecuda_calls_fn calls;
  fakecuda_live_fn live;
  fakecuda_last_fault_fn last_fault;
  fakecuda_set_kernel_regs_fn set_kernel_regs;
  fakecuda_hold_fn hold;
  fakecuda_held_fn held;
  fakecuda_release_fn release;
} fake;

static inline void load_fake(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "fake-driver suite: the fake driver is not on LD_LIBRARY_PATH: %s\n", dlerror());
    exit(1);
  }
  void *syms[12];
  static const char *const names[12] = {
      "fakecuda_set_devices", "fakecuda_get_device", "fakecuda_set_device",
      "fakecuda_fail",        "fakecuda_clear_failures", "fakecuda_calls",
      "fakecuda_get_live",    "fakecuda_last_fault",  "fakecuda_set_kernel_regs",
      "fakecuda_hold",        "fakecuda_held",        "fakecuda_release"};
  for (int i = 0; i < 12; i++)
    if (!(syms[i] = dlsym(lib, names[i]))) {
      fprintf(stderr, "fake-driver suite: libcuda.so.1 is not the fake (no %s)\n", names[i]);
      exit(1);
    }
  _Static_assert(sizeof fake == sizeof syms, "one pointer per control function");
  memcpy(&fake, syms, sizeof fake);
}


/* Nothing of the fake's is alive but the primary contexts cuda.c keeps for the process, and
 * `kept` allocations (those whose cuMemFree the test made fail). What a context lost to a
 * sticky fault holds is not counted: the driver only gives it back when the context is reset,
 * which keops leaves to its user. */
static inline void assert_leaks(const char *when, int kept) {
  fakecuda_live l;
  fake.live(&l);
  ck_assert_msg(l.allocations == kept && l.modules == 0 && l.streams == 0 && l.user_contexts == 0 &&
                    l.queued == 0,
                "%s: live on the fake: %d allocations (%zu bytes), %d modules, %d streams, %d "
                "contexts, %d queued operations",
                when, l.allocations, l.bytes, l.modules, l.streams, l.user_contexts, l.queued);
}

static inline void assert_no_leak(const char *when) { assert_leaks(when, 0); }

/* The kernel of the j-split runs: 3 rows over 4096 reduced indices split j on the fake's
 * device. */
static const char *const run_aliases[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(2)"};

static inline keops_kernel *split_kernel(keops_context *c, keops_dtype dt) {
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))*b", .aliases = run_aliases, .n_aliases = 3,
                         .axis = KEOPS_AXIS_J, .dtype = dt};
  return mx_make(c, &d);
}

#endif
