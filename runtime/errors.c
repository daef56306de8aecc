/* The library's error reporting: this thread's last message (keops_last_error), the status
 * names, and the rt_fail helpers every runtime module reports through. Its own module, below
 * everything that fails, so the module graph stays acyclic. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keops.h"
#include "runtime.h"

/* Each thread's last failure; a kerr message always fits. */
static _Thread_local char last_error[sizeof(((kerr *)0)->msg)];

keops_status rt_fail(keops_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return st;
}

/* Whether msg starts with a place, "name:line:col: error: " (the parser's messages, which
 * are complete and must stay exactly as the user sees them in a compiler). */
static int names_place(const char *msg) {
  const char *s = strchr(msg, ':');
  if (!s || s == msg || memchr(msg, '\n', (size_t)(s - msg))) return 0;
  for (int field = 0; field < 2; field++) {
    if (!isdigit((unsigned char)s[1])) return 0;
    for (s++; isdigit((unsigned char)*s); s++) {
    }
    if (*s != ':') return 0;
  }
  return strncmp(s, ": error: ", 9) == 0;
}

keops_status rt_fail_kerr(const kerr *e, const char *who) {
  if (e->status == KEOPS_OK)
    return rt_fail(KEOPS_ERROR_COMPILE, "%s: internal error: failed without a status", who);
  if (e->msg[0] == '\0') return rt_fail(e->status, "%s: %s", who, keops_status_string(e->status));
  if (names_place(e->msg)) return rt_fail(e->status, "%s", e->msg);
  return rt_fail(e->status, "%s: %s", who, e->msg);
}

const char *keops_last_error(void) { return last_error; }

const char *keops_status_string(keops_status s) {
  switch (s) {
  case KEOPS_OK: return "KEOPS_OK";
  case KEOPS_ERROR_SYNTAX: return "KEOPS_ERROR_SYNTAX";
  case KEOPS_ERROR_DIMENSION: return "KEOPS_ERROR_DIMENSION";
  case KEOPS_ERROR_ARGUMENT: return "KEOPS_ERROR_ARGUMENT";
  case KEOPS_ERROR_UNSUPPORTED: return "KEOPS_ERROR_UNSUPPORTED";
  case KEOPS_ERROR_NO_DEVICE: return "KEOPS_ERROR_NO_DEVICE";
  case KEOPS_ERROR_DEVICE: return "KEOPS_ERROR_DEVICE";
  case KEOPS_ERROR_COMPILE: return "KEOPS_ERROR_COMPILE";
  case KEOPS_ERROR_OUT_OF_MEMORY: return "KEOPS_ERROR_OUT_OF_MEMORY";
  case KEOPS_ERROR_IO: return "KEOPS_ERROR_IO";
  case KEOPS_ERROR_NOT_CONVERGED: return "KEOPS_ERROR_NOT_CONVERGED";
  }
  return "unknown status"; /* outside the switch: s may hold any int */
}

