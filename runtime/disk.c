/* The on-disk cache of compiled CPU kernels (DESIGN section 9): one file per key, written
 * to a temporary name and renamed, so readers never see half a file. A file whose header,
 * key or checksum does not match is ignored (and replaced by the next compile); every disk
 * problem only costs a compile, it never fails a run.
 *
 *   "KEOPSOBJ" | u32 format | u32 key bytes | u64 object bytes | u64 checksum | key | object
 *
 * The checksum (FNV-1a 64 over key and object) catches truncation and corruption; it is no
 * defence against someone who can write to the cache directory. */
#include "disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fnv.h"

#define DISK_FORMAT 1u
static const char magic[8] = {'K', 'E', 'O', 'P', 'S', 'O', 'B', 'J'};

typedef struct header {
  char magic[8];
  uint32_t format, keylen;
  uint64_t size, sum;
} header;


/* mkdir -p, quietly: a directory we cannot make only disables the cache. */
static int make_dirs(char *path) {
  for (char *s = path + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    int bad = mkdir(path, 0755) && errno != EEXIST;
    *s = '/';
    if (bad) return -1;
  }
  return mkdir(path, 0755) && errno != EEXIST ? -1 : 0;
}

void rt_disk_init(rt_disk *d) {
  const char *env = getenv("KEOPS_CACHE_DIR"), *home = getenv("HOME"), *xdg = getenv("XDG_CACHE_HOME");
  d->enabled = 0;
  if (env && (!*env || !strcmp(env, "off"))) return; /* explicitly off */
  int n = env    ? snprintf(d->dir, sizeof d->dir, "%s", env)
          : xdg && *xdg ? snprintf(d->dir, sizeof d->dir, "%s/keops", xdg)
          : home && *home ? snprintf(d->dir, sizeof d->dir, "%s/.cache/keops", home)
                          : -1;
  if (n <= 0 || (size_t)n >= sizeof d->dir - 64) return;
  d->enabled = make_dirs(d->dir) == 0 && access(d->dir, W_OK | X_OK) == 0;
}

static void file_name(const rt_disk *d, const char *key, char *out, size_t n) {
  snprintf(out, n, "%s/%016llx.kobj", d->dir,
           (unsigned long long)kfnv64_str(key));
}

void *rt_disk_load(const rt_disk *d, const char *key, size_t *size) {
  if (!d->enabled) return NULL;
  char path[1200];
  file_name(d, key, path, sizeof path);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  header h;
  size_t klen = strlen(key);
  char *kbuf = NULL;
  void *obj = NULL;
  if (fread(&h, sizeof h, 1, f) == 1 && !memcmp(h.magic, magic, sizeof magic) &&
      h.format == DISK_FORMAT && h.keylen == klen && h.size > 0 && h.size < ((uint64_t)1 << 32) &&
      (kbuf = malloc(klen + 1)) && fread(kbuf, 1, klen, f) == klen && !memcmp(kbuf, key, klen) &&
      (obj = malloc(h.size)) && fread(obj, 1, h.size, f) == h.size &&
      kfnv64(obj, h.size, kfnv64(key, klen, KFNV64_SEED)) == h.sum) {
    *size = h.size;
  } else {
    free(obj);
    obj = NULL;
  }
  free(kbuf);
  fclose(f);
  return obj;
}

void rt_disk_store(const rt_disk *d, const char *key, const void *obj, size_t size) {
  if (!d->enabled || !size) return;
  char path[1200], tmp[1300];
  file_name(d, key, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) return;
  size_t klen = strlen(key);
  header h;
  memcpy(h.magic, magic, sizeof magic);
  h.format = DISK_FORMAT;
  h.keylen = (uint32_t)klen;
  h.size = size;
  h.sum = kfnv64(obj, size, kfnv64(key, klen, KFNV64_SEED));
  FILE *f = fdopen(fd, "wb");
  int ok = f && fwrite(&h, sizeof h, 1, f) == 1 && fwrite(key, 1, klen, f) == klen &&
           fwrite(obj, 1, size, f) == size;
  if (f) ok &= fclose(f) == 0;
  else close(fd);
  if (!ok || rename(tmp, path)) unlink(tmp);
}
