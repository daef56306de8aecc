/* Reductions: the table (reductions.def) and the generic steps, which call the row's family
 * (red_<family>.c).
 *
 * Every backend runs, per output row:  init; accumulate(f(row, j), j) for the reduced indices
 * in increasing j; possibly combine with states of other index ranges; finalize. The
 * families' definitions are the contract; the interpreter computes them in double precision.
 * What the families share (the (value, index) slots of MINMAX and KMIN) is in red_shared.c. */
#include "red.h"

#include <string.h>

static const red_row red_rows[] = {
#define X(name, family, dir, outputs, f2, weight1, fin)                                            \
  {#name, RF_##family, &red_##family, dir, outputs, f2, weight1, fin},
#include "reductions.def"
#undef X
};

/* "Sum, Max, ..., " from the same rows, so that messages list exactly what red_find knows. */
static const char red_name_list[] =
#define X(name, ...) #name ", "
#include "reductions.def"
#undef X
    ;

const char *red_known_names(int *len) {
  *len = (int)sizeof red_name_list - 3; /* without the last ", " and the NUL */
  return red_name_list;
}

const red_row *red_find(const char *name) {
  if (!name) return NULL;
  for (size_t r = 0; r < sizeof red_rows / sizeof red_rows[0]; r++)
    if (strcmp(red_rows[r].name, name) == 0) return &red_rows[r];
  return NULL;
}

int red_outputs(const red_row *r, int fdim, int k, int out_dim[2], int out_idx[2]) {
  int width = r->fam->width(r, fdim, k), o = 0;
  if (r->outputs & RO_VAL) out_dim[o] = width, out_idx[o++] = 0;
  if (r->outputs & RO_IDX) out_dim[o] = width, out_idx[o++] = 1;
  return o;
}

int red_spec_init(red_spec *s, const red_row *row, int fdim, int k, keops_sum_scheme scheme,
                  int64_t nred, kerr *e) {
  memset(s, 0, sizeof *s);
  s->row = row;
  s->fdim = s->dim = fdim;
  if (!row || fdim < 1) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "internal: reduction without row or formula dim %d", fdim);
    return -1;
  }
  if (row->fam->spec(s, k, scheme, nred, e)) return -1;
  s->state = red_layout_doubles(row->fam->layout(fdim, s->k, s->scheme));
  s->nout = red_outputs(row, fdim, s->k, s->out_dim, s->out_idx);
  return 0;
}

void red_init(const red_spec *s, double *st) { s->row->fam->init(s, st); }

void red_accumulate(const red_spec *s, double *st, const double *f, int64_t j) {
  s->row->fam->accumulate(s, st, f, j);
}

void red_combine(const red_spec *s, double *st, const double *other) {
  s->row->fam->combine(s, st, other);
}

void red_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                  int64_t row) {
  s->row->fam->finalize(s, st, dt, outs, row);
}
