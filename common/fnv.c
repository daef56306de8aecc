#include "fnv.h"

#include <string.h>

uint64_t kfnv64(const void *p, size_t n, uint64_t h) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * KFNV64_PRIME;
  return h;
}

uint64_t kfnv64_str(const char *s) { return kfnv64(s, strlen(s), KFNV64_SEED); }
