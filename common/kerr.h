/* The error type every layer shares: the front end, the code generators and the runtime,
 * including the device implementations (runtime/device.h), which must not depend on the
 * compiler. A kerr is a plain value: no allocation, nothing to free. */
#ifndef KEOPS_KERR_H
#define KEOPS_KERR_H

#include "keops.h"

/* A failure: status and message. Messages are complete sentences without trailing newline;
 * the parser prefixes the position. */
typedef struct kerr {
  keops_status status; /* KEOPS_OK while nothing failed */
  char msg[4096];
} kerr;
void kerr_set(kerr *e, keops_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))); /* keeps the first error; e may be NULL */
void kerr_clear(kerr *e);

#endif
