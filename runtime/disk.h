/* The on-disk cache of compiled CPU kernels (disk.c). */
#ifndef KEOPS_DISK_H
#define KEOPS_DISK_H

#include <stddef.h>
#include <stdint.h>

typedef struct rt_disk {
  int enabled;
  char dir[1024];
} rt_disk;

/* The directory: $KEOPS_CACHE_DIR ("" or "off": no disk cache), else
 * $XDG_CACHE_HOME/keops, else $HOME/.cache/keops, created if missing. A directory that
 * cannot be made or written disables the cache. */
void rt_disk_init(rt_disk *d);
/* The object stored under key (malloc'ed, caller frees; *size its bytes), or NULL when absent,
 * foreign or damaged. */
void *rt_disk_load(const rt_disk *d, const char *key, size_t *size);
/* Stores obj under key, atomically; failures are ignored (the next run compiles again). */
void rt_disk_store(const rt_disk *d, const char *key, const void *obj, size_t size);

#endif
