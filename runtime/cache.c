/* The keyed kernel cache: a chained hash table under one mutex; a key being built has an
 * entry in state BUILDING and later callers wait on the condition variable, so one compile
 * happens per key however many threads ask at once. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fnv.h"
#include "jit.h"

enum { BUILDING, READY };

typedef struct entry {
  struct entry *next;
  char *key;
  uint64_t hash;
  int state;
  void *code;
  void (*drop)(void *code); /* frees code with the cache; NULL: someone else owns it */
} entry;

struct rt_cache {
  pthread_mutex_t lock;
  pthread_cond_t done;
  entry **slot;
  size_t nslot, count;
  rt_cache_stats stats;
};

rt_cache *rt_cache_create(void) {
  rt_cache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->nslot = 64;
  if (!(c->slot = calloc(c->nslot, sizeof *c->slot))) {
    free(c);
    return NULL;
  }
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->done, NULL);
  return c;
}

void rt_cache_destroy(rt_cache *c) {
  if (!c) return;
  for (size_t s = 0; s < c->nslot; s++)
    for (entry *e = c->slot[s], *n; e; e = n) {
      n = e->next;
      if (e->drop && e->code) e->drop(e->code);
      free(e->key);
      free(e);
    }
  free(c->slot);
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->done);
  free(c);
}

static entry **find(rt_cache *c, const char *key, uint64_t h) {
  entry **p = &c->slot[h % c->nslot];
  while (*p && ((*p)->hash != h || strcmp((*p)->key, key))) p = &(*p)->next;
  return p;
}

static void grow(rt_cache *c) {
  size_t n = c->nslot * 2;
  entry **s = calloc(n, sizeof *s);
  if (!s) return; /* a fuller table is only slower */
  for (size_t i = 0; i < c->nslot; i++)
    for (entry *e = c->slot[i], *next; e; e = next) {
      next = e->next;
      e->next = s[e->hash % n];
      s[e->hash % n] = e;
    }
  free(c->slot);
  c->slot = s;
  c->nslot = n;
}

void *rt_cache_get(rt_cache *c, const char *key, rt_build_fn build, void *ctx, kerr *err) {
  return rt_cache_get_owned(c, key, build, ctx, NULL, err);
}

void *rt_cache_get_owned(rt_cache *c, const char *key, rt_build_fn build, void *ctx,
                         void (*drop)(void *), kerr *err) {
  uint64_t h = kfnv64_str(key);
  pthread_mutex_lock(&c->lock);
  for (;;) {
    entry *e = *find(c, key, h);
    if (!e) break;
    if (e->state == READY) {
      c->stats.hits++;
      void *code = e->code;
      pthread_mutex_unlock(&c->lock);
      return code;
    }
    c->stats.waits++;
    pthread_cond_wait(&c->done, &c->lock); /* the builder may also fail and remove it */
  }
  entry *e = calloc(1, sizeof *e);
  if (!e || !(e->key = strdup(key))) {
    free(e);
    pthread_mutex_unlock(&c->lock);
    kerr_set(err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory in the kernel cache");
    return NULL;
  }
  e->hash = h;
  e->state = BUILDING;
  entry **p = find(c, key, h);
  *p = e;
  c->count++;
  c->stats.builds++;
  pthread_mutex_unlock(&c->lock);

  void *code = build(ctx, err);

  pthread_mutex_lock(&c->lock);
  if (code) {
    e->code = code;
    e->drop = drop;
    e->state = READY;
    if (c->count > 2 * c->nslot) grow(c);
  } else {
    *find(c, key, h) = e->next;
    c->count--;
    free(e->key);
    free(e);
  }
  pthread_cond_broadcast(&c->done);
  pthread_mutex_unlock(&c->lock);
  return code;
}

rt_cache_stats rt_cache_get_stats(rt_cache *c) {
  pthread_mutex_lock(&c->lock);
  rt_cache_stats s = c->stats;
  pthread_mutex_unlock(&c->lock);
  return s;
}
