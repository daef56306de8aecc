#include "kerr.h"

#include <stdarg.h>
#include <stdio.h>

void kerr_clear(kerr *e) {
  e->status = KEOPS_OK;
  e->msg[0] = 0;
}

void kerr_set(kerr *e, keops_status st, const char *fmt, ...) {
  if (!e || e->status != KEOPS_OK) return;
  e->status = st;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
}
