/* Block-sparse reductions: the check of a run's keops_ranges (every entry, with a message that
 * names it, where KeOps checks nothing) and the builders keops_ranges_from_matrix / _labels. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "runtime.h"

/* The three arrays an axis uses, with the names the messages give them. */
typedef struct side {
  const int64_t *blocks, *slices, *red;
  int64_t nblocks, nred;
  const char *bname, *sname, *rname, *nbname, *nrname; /* "ranges_i", ..., "n_redranges_j" */
  const char *rows, *cols;                             /* "M", "N" */
  int64_t nrows, ncols;
} side;

/* [s, e) must lie in [0, bound]. */
static keops_status check_range(const char *name, int64_t k, const int64_t *r, const char *bname,
                                int64_t bound) {
  if (r[0] < 0 || r[0] > r[1] || r[1] > bound)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: ranges->%s[%lld] = [%lld, %lld) is not a range within "
                   "[0, %s = %lld]", name, (long long)k, (long long)r[0], (long long)r[1], bname,
                   (long long)bound);
  return KEOPS_OK;
}

static keops_status check_side(const side *s) {
  if (s->nblocks < 0 || s->nred < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: ranges->%s = %lld is negative",
                   s->nblocks < 0 ? s->nbname : s->nrname,
                   (long long)(s->nblocks < 0 ? s->nblocks : s->nred));
  const char *null = s->nblocks && !s->blocks ? s->bname : s->nblocks && !s->slices ? s->sname
                     : s->nred && !s->red     ? s->rname : NULL;
  if (null)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: ranges->%s is NULL but ranges->%s = %lld",
                   null, null == s->rname ? s->nrname : s->nbname,
                   (long long)(null == s->rname ? s->nred : s->nblocks));
  int64_t last = s->nblocks ? s->slices[s->nblocks - 1] : 0;
  if (last != s->nred)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: ranges->%s = %lld, but the %s end at %lld (the last "
                   "entry of ranges->%s)", s->nrname, (long long)s->nred, s->sname,
                   (long long)last, s->sname);
  for (int64_t b = 0; b < s->nblocks; b++) {
    const int64_t *r = s->blocks + 2 * b;
    keops_status st = check_range(s->bname, b, r, s->rows, s->nrows);
    if (st) return st;
    if (b && r[0] < r[-1])
      return rt_fail(KEOPS_ERROR_ARGUMENT,
                     "keops_kernel_run: ranges->%s[%lld] = [%lld, %lld) starts before %s[%lld] "
                     "ends (%lld): blocks must be ascending and disjoint", s->bname, (long long)b,
                     (long long)r[0], (long long)r[1], s->bname, (long long)(b - 1),
                     (long long)r[-1]);
    int64_t first = b ? s->slices[b - 1] : 0;
    if (s->slices[b] < first || s->slices[b] > s->nred)
      return rt_fail(KEOPS_ERROR_ARGUMENT,
                     "keops_kernel_run: ranges->%s[%lld] = %lld is not in [%lld, %s = %lld] "
                     "(cumulative ends into %s)", s->sname, (long long)b, (long long)s->slices[b],
                     (long long)first, s->nrname, (long long)s->nred, s->rname);
    for (int64_t q = first; q < s->slices[b]; q++) {
      const int64_t *c = s->red + 2 * q;
      if ((st = check_range(s->rname, q, c, s->cols, s->ncols))) return st;
      if (q > first && c[0] < c[-1])
        return rt_fail(KEOPS_ERROR_ARGUMENT,
                       "keops_kernel_run: ranges->%s[%lld] = [%lld, %lld) starts before %s[%lld] "
                       "ends (%lld), both of block %lld: the ranges of a block must be ascending "
                       "and disjoint", s->rname, (long long)q, (long long)c[0], (long long)c[1],
                       s->rname, (long long)(q - 1), (long long)c[-1], (long long)b);
    }
  }
  return KEOPS_OK;
}

keops_status rt_ranges_read(const fe_program *p, const keops_ranges *r, int64_t M, int64_t N,
                            fe_ranges *out) {
  side j = {r->ranges_i, r->slices_i, r->redranges_j, r->n_ranges_i, r->n_redranges_j,
            "ranges_i", "slices_i", "redranges_j", "n_ranges_i", "n_redranges_j", "M", "N", M, N};
  side i = {r->ranges_j, r->slices_j, r->redranges_i, r->n_ranges_j, r->n_redranges_i,
            "ranges_j", "slices_j", "redranges_i", "n_ranges_j", "n_redranges_i", "N", "M", N, M};
  const side *s = p->axis == 1 ? &j : &i;
  keops_status st = check_side(s);
  if (st) return st;
  *out = (fe_ranges){s->nblocks, s->blocks, s->slices, s->red};
  return KEOPS_OK;
}

/* ---- builders ------------------------------------------------------------------------------ */

/* One allocation: the struct, then its six arrays. */
keops_status keops_ranges_from_matrix(const int64_t *clusters_i, int64_t nci,
                                      const int64_t *clusters_j, int64_t ncj,
                                      const unsigned char *keep, keops_ranges **out) {
  const char *who = "keops_ranges_from_matrix";
  if (!out) return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: out is NULL", who);
  *out = NULL;
  if (nci < 0 || ncj < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: %s = %lld is negative", who, nci < 0 ? "nci" : "ncj",
                   (long long)(nci < 0 ? nci : ncj));
  if ((nci && !clusters_i) || (ncj && !clusters_j) || (nci && ncj && !keep))
    return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: %s is NULL but nci = %lld, ncj = %lld", who,
                   nci && !clusters_i ? "clusters_i" : ncj && !clusters_j ? "clusters_j" : "keep",
                   (long long)nci, (long long)ncj);
  /* The arrays exist in memory, so real counts are far below these bounds, under which the
   * sizes below cannot overflow. */
  const int64_t big = INT64_MAX / 64;
  if (nci > big || ncj > big || (nci && ncj > big / nci))
    return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: nci x ncj = %lld x %lld is too large", who,
                   (long long)nci, (long long)ncj);
  int64_t nkeep = 0;
  for (int64_t c = 0; c < nci * ncj; c++) nkeep += keep[c] != 0;
  size_t n = (size_t)(3 * nci + 3 * ncj + 4 * nkeep);
  keops_ranges *r = malloc(sizeof *r + n * sizeof(int64_t));
  if (!r) return rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, "%s: out of memory", who);
  int64_t *a = (int64_t *)(r + 1);
  int64_t *ri = a, *si = ri + 2 * nci, *rj = si + nci, *sj = rj + 2 * nkeep,
          *rdj = sj + ncj, *rdi = rdj + 2 * ncj;
  /* rj: redranges_j (rows of keep in order); rdj: ranges_j; rdi: redranges_i */
  if (nci) memcpy(ri, clusters_i, sizeof(int64_t) * 2 * (size_t)nci);
  if (ncj) memcpy(rdj, clusters_j, sizeof(int64_t) * 2 * (size_t)ncj);
  int64_t q = 0;
  for (int64_t ci = 0; ci < nci; ci++) {
    for (int64_t cj = 0; cj < ncj; cj++)
      if (keep[ci * ncj + cj]) memcpy(rj + 2 * q++, clusters_j + 2 * cj, 2 * sizeof(int64_t));
    si[ci] = q;
  }
  q = 0;
  for (int64_t cj = 0; cj < ncj; cj++) {
    for (int64_t ci = 0; ci < nci; ci++)
      if (keep[ci * ncj + cj]) memcpy(rdi + 2 * q++, clusters_i + 2 * ci, 2 * sizeof(int64_t));
    sj[cj] = q;
  }
  *r = (keops_ranges){ri, si, rj, nci, nkeep, rdj, sj, rdi, ncj, nkeep};
  *out = r;
  return KEOPS_OK;
}

/* labels (n entries, non-decreasing, in [0, nc)) -> *out, nc cluster ranges (the caller
 * frees them). */
static keops_status clusters_of(const int64_t *labels, int64_t n, int64_t nc, const char *name,
                                const char *nname, const char *ncname, int64_t **out) {
  const char *who = "keops_ranges_from_labels";
  *out = NULL;
  if (n < 0 || nc < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: %s = %lld is negative", who, n < 0 ? nname : ncname,
                   (long long)(n < 0 ? n : nc));
  if (n && !labels)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: %s is NULL but %s = %lld", who, name, nname,
                   (long long)n);
  int64_t *c = (size_t)nc < SIZE_MAX / 32 ? malloc(sizeof(int64_t) * (2 * (size_t)nc + 1)) : NULL;
  if (!c) return rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, "%s: out of memory", who);
  int64_t k = 0; /* cluster c is [k at its first label, k past its last) */
  for (int64_t cl = 0; cl < nc; cl++) {
    c[2 * cl] = k;
    for (; k < n && labels[k] == cl; k++) {
    }
    c[2 * cl + 1] = k;
    if (k < n && labels[k] < cl) break;
  }
  if (k == n) {
    *out = c;
    return KEOPS_OK;
  }
  free(c);
  if (labels[k] < 0 || labels[k] >= nc)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "%s: %s[%lld] = %lld is not in [0, %s = %lld)", who, name,
                   (long long)k, (long long)labels[k], ncname, (long long)nc);
  return rt_fail(KEOPS_ERROR_ARGUMENT,
                 "%s: %s[%lld] = %lld is less than %s[%lld] = %lld: the points must be sorted by "
                 "cluster", who, name, (long long)k, (long long)labels[k], name, (long long)(k - 1),
                 (long long)labels[k - 1]);
}

keops_status keops_ranges_from_labels(const int64_t *labels_i, int64_t M, int64_t nci,
                                      const int64_t *labels_j, int64_t N, int64_t ncj,
                                      const unsigned char *keep, keops_ranges **out) {
  if (!out) return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_ranges_from_labels: out is NULL");
  *out = NULL;
  int64_t *ci, *cj = NULL;
  keops_status st = clusters_of(labels_i, M, nci, "labels_i", "M", "nci", &ci);
  if (!st) st = clusters_of(labels_j, N, ncj, "labels_j", "N", "ncj", &cj);
  if (!st) st = keops_ranges_from_matrix(ci, nci, cj, ncj, keep, out);
  free(ci);
  free(cj);
  return st;
}

void keops_ranges_destroy(keops_ranges *ranges) { free(ranges); }
