/* TensorDot index tables, shared by the interpreter and the lowering so both read the
 * parameters the same way. */
#include <stdlib.h>

#include "dag.h"

/* TensorDot(a, b, dima, dimb, conta, contb[, perm]) follows KeOps (TensorDot.py) and numpy:
 * T = np.tensordot(a.reshape(dima), b.reshape(dimb), (conta, contb)), whose axes are the
 * kept axes of a then those of b, in order; then out = T.transpose(argsort(perm)), i.e.
 * kept axis q becomes output axis perm[q] (KeOps's strides are those of
 * permutation(perm, keepdims) = keepdims[argsort(perm)]). No perm: identity. The contracted
 * index runs row-major over conta's order, pairing axis conta[c] of a with contb[c] of b.
 *
 * Tables: out[o] = sum_c a[abase[o] + aoff[c]] * b[bbase[o] + boff[c]], because flat indices
 * are linear in the per-axis indices. Layout of tab: abase[dim], bbase[dim], aoff[nc],
 * boff[nc], with nc the number of contracted combinations. */

int dag_tdot_unpack(const int64_t *p, int np, dag_tdot *t) {
  int at = 0;
  *t = (dag_tdot){0};
  while (at < np && t->nl < 5) {
    int64_t len = p[at];
    if (len < 0 || len > DAG_TDOT_MAX_AXES || len > np - at - 1) return -1;
    t->n[t->nl] = (int)len;
    t->l[t->nl++] = p + at + 1;
    at += 1 + (int)len;
  }
  return t->nl < 4 || at != np ? -2 : 0;
}

/* Row-major strides of a shape. */
static void strides_of(const int64_t *shape, int64_t n, int64_t *st) {
  int64_t s = 1;
  for (int64_t q = n - 1; q >= 0; q--) st[q] = s, s *= shape[q];
}

/* Steps the mixed-radix counter c over shape; returns 0 after the last combination. */
static int counter_next(int64_t *c, const int64_t *shape, int64_t n) {
  for (int64_t q = n - 1; q >= 0; q--) {
    if (++c[q] < shape[q]) return 1;
    c[q] = 0;
  }
  return 0;
}

/* Checks the lists against the operand dims (the builder did too; an oracle stays safe). */
static int td_valid(const dag_tdot *t, int da, int db, int dim) {
  int64_t nc = t->n[2], nkeep = t->n[0] + t->n[1] - 2 * nc, pa = 1, pb = 1, pc = 1;
  if (t->n[3] != nc) return 0;
  for (int side = 0; side < 2; side++)
    for (int64_t q = 0; q < t->n[side]; q++) {
      if (t->l[side][q] < 1) return 0;
      *(side ? &pb : &pa) *= t->l[side][q];
    }
  if (pa != da || pb != db || nkeep < 0 || (t->n[4] && t->n[4] != nkeep)) return 0;
  for (int64_t c = 0; c < nc; c++) {
    int64_t ca = t->l[2][c], cb = t->l[3][c];
    if (ca < 0 || ca >= t->n[0] || cb < 0 || cb >= t->n[1] || t->l[0][ca] != t->l[1][cb]) return 0;
    for (int64_t c2 = 0; c2 < c; c2++)
      if (t->l[2][c2] == ca || t->l[3][c2] == cb) return 0;
    pc *= t->l[0][ca];
  }
  for (int64_t q = 0; q < t->n[4]; q++) {
    if (t->l[4][q] < 0 || t->l[4][q] >= nkeep) return 0;
    for (int64_t q2 = 0; q2 < q; q2++)
      if (t->l[4][q2] == t->l[4][q]) return 0;
  }
  return pa / pc * (pb / pc) == dim;
}

/* Validates again (cheap) so that a malformed node can never index out of bounds. */
int dag_tdot_tables(const int64_t *p, int np, int da, int db, int dim, int64_t **tab,
                       int64_t *nco) {
  dag_tdot t;
  *tab = NULL;
  if (dag_tdot_unpack(p, np, &t) || !td_valid(&t, da, db, dim)) return -1;
  int64_t ra = t.n[0], rb = t.n[1], nc = t.n[2], nkeep = ra + rb - 2 * nc, r = ra + rb + 1;
  /* per kept axis: shape, stride in the output, stride in its operand; per contracted
   * axis: shape and strides in a and b; operand strides; one counter */
  int64_t *w = calloc((size_t)(10 * r), sizeof *w);
  if (!w) return -2;
  int64_t *kshape = w, *kout = w + r, *kop = w + 2 * r, *cshape = w + 3 * r, *ca = w + 4 * r,
          *cb = w + 5 * r, *sa = w + 6 * r, *sb = w + 7 * r, *oshape = w + 8 * r, *cnt = w + 9 * r;
  strides_of(t.l[0], ra, sa);
  strides_of(t.l[1], rb, sb);
  int64_t q = 0, kept_a = 0;
  for (int side = 0; side < 2; side++) { /* kept axes: a's, then b's, in order */
    const int64_t *shape = t.l[side], *cont = t.l[2 + side], *str = side ? sb : sa;
    for (int64_t ax = 0; ax < t.n[side]; ax++) {
      int contracted = 0;
      for (int64_t c = 0; c < nc; c++) contracted |= cont[c] == ax;
      if (!contracted) kshape[q] = shape[ax], kop[q++] = str[ax];
    }
    if (!side) kept_a = q;
  }
  for (q = 0; q < nkeep; q++) oshape[t.n[4] ? t.l[4][q] : q] = kshape[q];
  int64_t *ostr = ca; /* scratch until the contracted strides are set */
  strides_of(oshape, nkeep, ostr);
  for (q = 0; q < nkeep; q++) kout[q] = ostr[t.n[4] ? t.l[4][q] : q];
  *nco = 1;
  for (int64_t c = 0; c < nc; c++) {
    cshape[c] = t.l[0][t.l[2][c]];
    ca[c] = sa[t.l[2][c]];
    cb[c] = sb[t.l[3][c]];
    *nco *= cshape[c];
  }
  *tab = malloc(sizeof(int64_t) * (size_t)(2 * dim + 2 * *nco));
  if (!*tab) {
    free(w);
    return -2;
  }
  int64_t *abase = *tab, *bbase = abase + dim, *aoff = bbase + dim, *boff = aoff + *nco;
  do {
    int64_t o = 0, ab = 0, bb = 0;
    for (q = 0; q < nkeep; q++) {
      o += cnt[q] * kout[q];
      *(q < kept_a ? &ab : &bb) += cnt[q] * kop[q];
    }
    abase[o] = ab;
    bbase[o] = bb;
  } while (counter_next(cnt, kshape, nkeep));
  int64_t k = 0; /* cnt is all zeros again */
  do {
    int64_t ao = 0, bo = 0;
    for (int64_t c = 0; c < nc; c++) ao += cnt[c] * ca[c], bo += cnt[c] * cb[c];
    aoff[k] = ao;
    boff[k++] = bo;
  } while (counter_next(cnt, cshape, nc));
  free(w);
  return 0;
}

