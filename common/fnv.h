/* FNV-1a, 64 bits: the project's one non-cryptographic hash (cache slots, disk file names and
 * checksums, symbol names, the CPU feature digest of cache keys). Its values name files in
 * the disk cache, so changing the function or the seed orphans every stored kernel. */
#ifndef KEOPS_FNV_H
#define KEOPS_FNV_H

#include <stddef.h>
#include <stdint.h>

#define KFNV64_SEED 1469598103934665603ull /* the offset basis: where a hash starts */
#define KFNV64_PRIME 1099511628211ull

/* The hash of n bytes at p, continuing from h (KFNV64_SEED to start), so that a hash can
 * run over several pieces. */
uint64_t kfnv64(const void *p, size_t n, uint64_t h);
/* The hash of a NUL-terminated string from KFNV64_SEED. */
uint64_t kfnv64_str(const char *s);

#endif
