/* The public functions of keops.h: argument checks, error messages, ownership. The real work
 * happens in the front end (fe_build) and in a backend (interp_run for now). */
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "runtime.h"

/* Sizes at or above 2^62 cannot describe arrays in memory and would overflow index
 * arithmetic in the backends. */
#define RT_MAX_ROWS ((int64_t)1 << 62)

/* ---- context ----------------------------------------------------------------------------- */

keops_status keops_context_create(keops_context **out) {
  if (!out) return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_context_create: out is NULL");
  keops_context *ctx = calloc(1, sizeof *ctx);
  *out = NULL;
  if (!ctx) return rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, "keops_context_create: out of memory");
  ctx->defaults = keops_run_options_init();
  kerr e;
  kerr_clear(&e);
  if (rt_context_init(ctx, &e) != KEOPS_OK) {
    rt_cache_destroy(ctx->cache);
    free(ctx);
    return rt_fail_kerr(&e, "keops_context_create");
  }
  atomic_init(&ctx->refs, 1); /* the user's handle */
  *out = ctx;
  return KEOPS_OK;
}

/* The user's handle and every kernel hold a reference: kernels outliving their context
 * keep its JIT (their code), pool and cache alive. */
static void context_release(keops_context *ctx) {
  if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1) return;
  rt_context_fini(ctx);
  free(ctx);
}

void keops_context_destroy(keops_context *ctx) {
  if (ctx) context_release(ctx);
}

/* ---- sized structs ----------------------------------------------------------------------- */

/* Larger than any struct of ours will grow: a size above it is garbage, not a newer header. */
#define RT_MAX_STRUCT_SIZE 4096

/* Copies the caller's struct `in` (its first member its size) into `out`, which has this
 * library's layout (`ours` bytes): what an older caller lacks reads as zero, and what a newer
 * caller has beyond our fields must be zero, since we cannot honour it. Every version before
 * the first with a size field had none, so today a smaller size is wrong too. */
keops_status rt_copy_sized(const void *in, void *out, size_t ours, const char *who,
                           const char *name, const char *type) {
  size_t size;
  memcpy(&size, in, sizeof size);
  if (size == 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "%s: %s->size is 0: initialise the %s with %s_init() (or set .size = "
                   "sizeof(%s))", who, name, type, type, type);
  if (size < ours || size > RT_MAX_STRUCT_SIZE)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "%s: %s->size = %zu is not the size of a %s (%zu in keops " KEOPS_VERSION
                   "): initialise it with %s_init()", who, name, size, type, ours, type);
  const unsigned char *extra = (const unsigned char *)in + ours;
  for (size_t b = 0; b < size - ours; b++)
    if (extra[b])
      return rt_fail(KEOPS_ERROR_UNSUPPORTED,
                     "%s: %s sets a field this library (keops " KEOPS_VERSION ") does not know: "
                     "byte %zu of %zu is not zero (built against a newer keops.h?)", who, name,
                     ours + b, size);
  memcpy(out, in, ours);
  return KEOPS_OK;
}

/* The caller's run options in this library's layout; NULL means the context's defaults. */
static keops_status read_options(const keops_context *ctx, const keops_run_options *opts,
                                 keops_run_options *o, const char *who) {
  if (!opts) {
    *o = ctx->defaults;
    return KEOPS_OK;
  }
  return rt_copy_sized(opts, o, sizeof *o, who, "opts", "keops_run_options");
}

/* ---- kernels ----------------------------------------------------------------------------- */

static keops_status check_desc(const keops_context *ctx, const keops_kernel_desc *desc,
                               keops_kernel **out) {
  if (!ctx) return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_create: ctx is NULL");
  if (!desc) return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_create: desc is NULL");
  if (!out) return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_create: out is NULL");
  if (!desc->formula)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_create: desc->formula is NULL");
  if (desc->n_aliases < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_create: desc->n_aliases = %d is negative",
                   desc->n_aliases);
  if (desc->n_aliases > 0 && !desc->aliases)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_create: desc->aliases is NULL but desc->n_aliases = %d",
                   desc->n_aliases);
  for (int a = 0; a < desc->n_aliases; a++)
    if (!desc->aliases[a])
      return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_create: desc->aliases[%d] is NULL", a);
  return KEOPS_OK;
}

keops_status keops_kernel_create(keops_context *ctx, const keops_kernel_desc *user_desc,
                                 keops_kernel **out) {
  if (out) *out = NULL;
  keops_kernel_desc copy, *desc = &copy;
  keops_status st = user_desc ? rt_copy_sized(user_desc, desc, sizeof *desc, "keops_kernel_create",
                                           "desc", "keops_kernel_desc")
                              : KEOPS_OK;
  if (st != KEOPS_OK || (st = check_desc(ctx, user_desc ? desc : NULL, out)) != KEOPS_OK) return st;

  /* fe_build checks everything else (formula, aliases, reduction, axis, K, formula2, dtype,
   * sum scheme) with positioned messages. */
  kerr e;
  kerr_clear(&e);
  fe_program *prog = fe_build(desc, &e);
  if (!prog) return rt_fail_kerr(&e, "keops_kernel_create");

  keops_kernel *k = malloc(sizeof *k);
  if (!k) {
    fe_free(prog);
    return rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, "keops_kernel_create: out of memory");
  }
  k->ctx = ctx;
  k->prog = prog;
  k->cpu_key = NULL;
  k->sum_rows = 0;
  k->index_in = k->index_pos = -1;
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
  if (rt_kernel_init(k, &e) != KEOPS_OK) {
    keops_kernel_destroy(k);
    return rt_fail_kerr(&e, "keops_kernel_create");
  }
  *out = k;
  return KEOPS_OK;
}

void keops_kernel_destroy(keops_kernel *kernel) {
  if (!kernel) return;
  fe_free(kernel->prog);
  free(kernel->cpu_key);
  keops_context *ctx = kernel->ctx;
  free(kernel);
  context_release(ctx);
}

const fe_program *rt_kernel_program(const keops_kernel *k) { return k ? k->prog : NULL; }

/* ---- queries ----------------------------------------------------------------------------- */

static int arg_ok(const keops_kernel *k, int arg) { return k && arg >= 0 && arg < keops_kernel_arg_count(k); }

static int out_ok(const keops_kernel *k, int out) { return k && out >= 0 && out < k->prog->nout; }

/* the reduced index a Min/Max gradient makes itself is not the caller's (the last position) */
int keops_kernel_arg_count(const keops_kernel *k) {
  return k ? k->prog->args.n - (k->index_pos >= 0) : -1;
}

int keops_kernel_arg_dim(const keops_kernel *k, int arg) {
  return arg_ok(k, arg) ? k->prog->args.dim[arg] : -1;
}

int keops_kernel_arg_category(const keops_kernel *k, int arg) {
  if (!arg_ok(k, arg)) return -1;
  return k->prog->args.cat[arg];
}

int keops_kernel_output_count(const keops_kernel *k) { return k ? k->prog->nout : -1; }

int keops_kernel_output_dim(const keops_kernel *k, int out) {
  return out_ok(k, out) ? k->prog->out_dim[out] : -1;
}

int64_t keops_kernel_output_rows(const keops_kernel *k, int64_t M, int64_t N) {
  if (!k || M < 0 || N < 0) return -1;
  return k->sum_rows ? 1 : fe_rows(k->prog, M, N);
}

keops_dtype keops_kernel_output_dtype(const keops_kernel *k, int out) {
  return out_ok(k, out) ? k->prog->out_dtype[out] : KEOPS_FLOAT32;
}

/* ---- run: checks ------------------------------------------------------------------------- */

static const char *cat_name(int cat) {
  static const char *const names[] = {"Vi", "Vj", "Pm"};
  return cat >= 0 && cat < 3 ? names[cat] : "?";
}

static int64_t elem_size(keops_dtype dt) { return dt == KEOPS_FLOAT32 ? 4 : 8; }

/* Rows of an input of user category cat; a parameter is one row of dim values. */
static int64_t input_rows(int cat, int64_t M, int64_t N) {
  return cat == CAT_I ? M : cat == CAT_J ? N : 1;
}

/* Whether rows x dim entries of elem bytes fit in the address space (a larger "array" can
 * only come from a wrong M or N, and its byte count would overflow). */
static int fits(int64_t rows, int dim, int64_t elem) {
  return dim <= 0 || rows <= PTRDIFF_MAX / elem / dim;
}

static keops_status check_sizes(int64_t M, int64_t N) {
  if (M < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: M = %lld is negative", (long long)M);
  if (N < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: N = %lld is negative", (long long)N);
  if (M >= RT_MAX_ROWS)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: M = %lld is too large (limit 2^62)",
                   (long long)M);
  if (N >= RT_MAX_ROWS)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: N = %lld is too large (limit 2^62)",
                   (long long)N);
  return KEOPS_OK;
}

static keops_status check_options(const keops_run_options *o) {
  int backend = (int)o->backend; /* any int may arrive through the enum */
  if (backend < KEOPS_BACKEND_AUTO || backend > KEOPS_BACKEND_REFERENCE)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: backend = %d is not a keops_backend",
                   backend);
  if (o->num_threads < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: num_threads = %d is negative (0 means all online cores)",
                   o->num_threads);
  if (o->device_id < 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: device_id = %d is negative",
                   o->device_id);
  return KEOPS_OK;
}

static keops_status check_inputs(const fe_program *p, int64_t M, int64_t N,
                                 const void *const *args) {
  const fe_args *a = &p->args;
  if (a->n > 0 && !args)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: args is NULL but the kernel has %d inputs", a->n);
  for (int k = 0; k < a->n; k++) {
    int64_t rows = input_rows(a->cat[k], M, N);
    /* "a = Vj(1)", or "Vj(1)" for an inline Var */
    const char *name = a->name[k] ? a->name[k] : "", *eq = a->name[k] ? " = " : "";
    if (!fits(rows, a->dim[k], elem_size(p->dtype)))
      return rt_fail(KEOPS_ERROR_ARGUMENT,
                     "keops_kernel_run: input %d (%s%s%s(%d)) with %lld rows is too large", k, name,
                     eq, cat_name(a->cat[k]), a->dim[k], (long long)rows);
    if (!args[k] && rows > 0)
      return rt_fail(KEOPS_ERROR_ARGUMENT,
                     "keops_kernel_run: args[%d] is NULL but input %d (%s%s%s(%d)) has %lld rows",
                     k, k, name, eq, cat_name(a->cat[k]), a->dim[k], (long long)rows);
  }
  return KEOPS_OK;
}

static keops_status check_outputs(const fe_program *p, int64_t rows, void *const *outs) {
  if (!outs)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: outs is NULL but the kernel has %d output%s", p->nout,
                   p->nout > 1 ? "s" : "");
  for (int k = 0; k < p->nout; k++) {
    if (!fits(rows, p->out_dim[k], elem_size(p->out_dtype[k])))
      return rt_fail(KEOPS_ERROR_ARGUMENT,
                     "keops_kernel_run: output %d (dim %d) with %lld rows is too large", k,
                     p->out_dim[k], (long long)rows);
    /* Like an input, an empty output need not exist. */
    if (!outs[k] && rows > 0 && p->out_dim[k] > 0)
      return rt_fail(KEOPS_ERROR_ARGUMENT,
                     "keops_kernel_run: outs[%d] is NULL but output %d has %lld rows of dim %d", k,
                     k, (long long)rows, p->out_dim[k]);
  }
  return KEOPS_OK;
}

/* ---- run --------------------------------------------------------------------------------- */

/* A Sum whose formula simplified to Zero: its outputs are zeros (all-zero bytes are 0.0 in
 * IEEE formats), on every backend, without evaluating a single pair. */
static keops_status fill_zero(const fe_program *p, int64_t rows, void *const *outs) {
  for (int k = 0; k < p->nout; k++)
    if (outs[k]) memset(outs[k], 0, (size_t)(rows * p->out_dim[k] * elem_size(p->out_dtype[k])));
  return KEOPS_OK;
}

/* The run on backend be, its failure recorded. */
static keops_status dispatch(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                             void *const *outs, const keops_run_options *o, keops_backend be,
                             const fe_ranges *rg) {
  const fe_program *p = k->prog;
  kerr e;
  kerr_clear(&e);
  keops_status st;
  if (p->zero) st = rt_gpu_fill_zero(k, M, N, outs, o, &e);
  else if (be == KEOPS_BACKEND_GPU) st = rt_run_gpu(k, M, N, args, outs, o, rg, &e);
  else if (be == KEOPS_BACKEND_CPU) st = rt_run_cpu(k, M, N, args, outs, o, rg, &e);
  else st = interp_run(p, M, N, args, outs, rg, &e);
  if (st != KEOPS_OK && e.status == KEOPS_OK)
    return rt_fail(st, "keops_kernel_run: %s", keops_status_string(st));
  return st == KEOPS_OK ? KEOPS_OK : rt_fail_kerr(&e, "keops_kernel_run");
}

/* ---- batch dimensions ---------------------------------------------------------------------- */

static keops_status run_one(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                            void *const *outs, const keops_run_options *o, keops_backend be,
                            const fe_ranges *rg);

/* Each batch element is a run of its own on offset pointers (also device pointers, which
 * are addresses too): an input's batch strides skip its broadcast (extent 1) dimensions. */
keops_status rt_batch_shape(const fe_program *p, const keops_batch *b, int64_t *B, int64_t *total_out) {
  int nd = b->ndim, n = p->args.n;
  if (nd < 1 || nd > KEOPS_MAX_BATCH_DIMS)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: batch->ndim = %d is not in [1, %d]",
                   nd, KEOPS_MAX_BATCH_DIMS);
  if (!b->extents && n > 0)
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: batch->extents is NULL");
  int64_t total = 1;
  int from[KEOPS_MAX_BATCH_DIMS];
  for (int d = 0; d < nd; d++) {
    B[d] = 1, from[d] = -1;
    for (int a = 0; a < n; a++) {
      int64_t e = b->extents[a * nd + d];
      if (!p->args.dim[a]) continue;
      if (e < 1 || e >= RT_MAX_ROWS)
        return rt_fail(KEOPS_ERROR_DIMENSION, "keops_kernel_run: batch extent %lld of input %d "
                       "in dimension %d is not in [1, 2^62)", (long long)e, a, d);
      if (e > 1 && B[d] > 1 && e != B[d])
        return rt_fail(KEOPS_ERROR_DIMENSION, "keops_kernel_run: input %d has batch extent %lld in "
                       "dimension %d where input %d has %lld (each must be the same or 1)", a,
                       (long long)e, d, from[d], (long long)B[d]);
      if (e > 1 && B[d] == 1) B[d] = e, from[d] = a;
    }
    if (B[d] > RT_MAX_ROWS / total)
      return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: the batch has too many elements");
    total *= B[d];
  }
  *total_out = total;
  return KEOPS_OK;
}

static keops_status run_batch(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                              void *const *outs, const keops_run_options *o, keops_backend be,
                              const fe_ranges *rg) {
  const fe_program *p = k->prog;
  const keops_batch *b = o->batch;
  int nd = b->ndim, n = p->args.n;
  int64_t B[KEOPS_MAX_BATCH_DIMS], total;
  keops_status bs = rt_batch_shape(p, b, B, &total);
  if (bs) return bs;
  /* byte strides: in[a][d] per index of dimension d of input a (0 where it broadcasts) */
  int64_t in[FE_MAX_ARGS][KEOPS_MAX_BATCH_DIMS], ostride[2], orows = keops_kernel_output_rows(k, M, N);
  for (int a = 0; a < n; a++) {
    int64_t s = input_rows(p->args.cat[a], M, N) * p->args.dim[a] * elem_size(p->dtype);
    for (int d = nd - 1; d >= 0; d--) {
      int64_t e = p->args.dim[a] ? b->extents[a * nd + d] : 1;
      if (s > PTRDIFF_MAX / e) /* the whole input must fit in memory */
        return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: input %d with its batch is too large", a);
      in[a][d] = e == 1 ? 0 : s;
      s *= e;
    }
  }
  for (int q = 0; q < p->nout; q++) {
    ostride[q] = orows * p->out_dim[q] * elem_size(p->out_dtype[q]);
    if (!fits(total, 1, ostride[q]))
      return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: output %d with its batch is too large", q);
  }
  const void *bargs[FE_MAX_ARGS];
  void *bouts[2];
  keops_status st = KEOPS_OK;
  for (int64_t t = 0; t < total && !st; t++) {
    for (int a = 0; a < n; a++) {
      int64_t off = 0, r = t;
      for (int d = nd - 1; d >= 0; d--) off += (r % B[d]) * in[a][d], r /= B[d];
      bargs[a] = args && args[a] ? (const char *)args[a] + off : NULL;
    }
    for (int q = 0; q < p->nout; q++) bouts[q] = outs[q] ? (char *)outs[q] + t * ostride[q] : NULL;
    st = run_one(k, M, N, bargs, bouts, o, be, rg);
  }
  return st;
}

static keops_status run_checked(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                                void *const *outs, const keops_run_options *o);

/* A Min/Max gradient's run (grad.c): the forward's int64 indices in the kernel's dtype, and
 * the reduced index made here, then the run as any other. The values are exact below 2^24
 * (float32) and 2^53 (float64). */
static keops_status run_with_index(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                                   void *const *outs, const keops_run_options *o) {
  const fe_program *p = k->prog;
  int a = k->index_in, j = k->index_pos;
  if (o->device_pointers || o->batch)
    return rt_fail(KEOPS_ERROR_UNSUPPORTED, "keops_kernel_run: the gradient of a Min/Max "
                                            "reduction runs on host arrays without batch dimensions");
  int64_t na = input_rows(p->args.cat[a], M, N) * p->args.dim[a], nj = input_rows(p->args.cat[j], M, N);
  if (nj > (p->dtype == KEOPS_FLOAT32 ? (int64_t)1 << 24 : (int64_t)1 << 53))
    return rt_fail(KEOPS_ERROR_UNSUPPORTED, "keops_kernel_run: %lld reduced indices are not exact "
                   "in %s", (long long)nj, p->dtype == KEOPS_FLOAT32 ? "float32" : "float64");
  if (!args || (!args[a] && na > 0))
    return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: args[%d] (the forward's indices) is NULL", a);
  int64_t esz = elem_size(p->dtype);
  char *buf = malloc((size_t)((na + nj) * esz) + 1);
  const void **all = malloc(sizeof(void *) * (size_t)p->args.n);
  keops_status st = KEOPS_OK;
  if (!buf || !all) {
    st = rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, "keops_kernel_run: out of memory for the indices");
  } else {
    memcpy(all, args, sizeof(void *) * (size_t)j);
    all[a] = buf, all[j] = buf + na * esz;
    for (int64_t q = 0; q < na + nj; q++) {
      double v = q < na ? (double)((const int64_t *)args[a])[q] : (double)(q - na);
      if (p->dtype == KEOPS_FLOAT32) ((float *)buf)[q] = (float)v;
      else ((double *)buf)[q] = v;
    }
    st = run_checked(k, M, N, all, outs, o);
  }
  free(buf), free(all);
  return st;
}

keops_status keops_kernel_run(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                              void *const *outs, const keops_run_options *opts) {
  if (!k) return rt_fail(KEOPS_ERROR_ARGUMENT, "keops_kernel_run: kernel is NULL");
  keops_run_options copy, *o = &copy;
  keops_status st;
  if ((st = read_options(k->ctx, opts, o, "keops_kernel_run")) != KEOPS_OK ||
      (st = check_sizes(M, N)) != KEOPS_OK)
    return st;
  return k->index_pos >= 0 ? run_with_index(k, M, N, args, outs, o) : run_checked(k, M, N, args, outs, o);
}

/* keops_kernel_run once the options are read and the sizes checked. */
static keops_status run_checked(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                                void *const *outs, const keops_run_options *o) {
  const fe_program *p = k->prog;
  keops_status st;
  if ((st = check_options(o)) != KEOPS_OK || (st = check_inputs(p, M, N, args)) != KEOPS_OK ||
      (st = check_outputs(p, keops_kernel_output_rows(k, M, N), outs)) != KEOPS_OK)
    return st;

  keops_backend be = rt_backend(k->ctx, o);
  if (o->device_pointers && be != KEOPS_BACKEND_GPU)
    return rt_fail(KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: device_pointers needs the GPU backend (backend = %d)",
                   (int)o->backend);
  fe_ranges ranges, *rg = NULL;
  if (o->ranges && (st = rt_ranges_read(p, o->ranges, M, N, rg = &ranges)) != KEOPS_OK) return st;
  if (o->batch) return run_batch(k, M, N, args, outs, o, be, rg);
  return run_one(k, M, N, args, outs, o, be, rg);
}

/* One reduction (a whole run, or one batch element). */
static keops_status run_one(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                            void *const *outs, const keops_run_options *o, keops_backend be,
                            const fe_ranges *rg) {
  const fe_program *p = k->prog;
  keops_status st;
  /* a Sum of Zero is 0 on every row, in a block or not */
  if (p->zero && !o->device_pointers) return fill_zero(p, keops_kernel_output_rows(k, M, N), outs);
  if (!k->sum_rows) return dispatch(k, M, N, args, outs, o, be, rg);
  if (o->device_pointers)
    return rt_fail(KEOPS_ERROR_UNSUPPORTED, "keops_kernel_run: the gradient of a parameter sums "
                                            "its rows on the host: device_pointers is not supported");
  /* a parameter's gradient: one row per output row, then their sum in double */
  int64_t rows = fe_rows(p, M, N);
  int dim = p->out_dim[0];
  size_t esz = (size_t)elem_size(p->dtype);
  void *tmp = malloc((size_t)rows * (size_t)dim * esz + 1);
  if (!tmp) return rt_fail(KEOPS_ERROR_OUT_OF_MEMORY, "keops_kernel_run: out of memory for %lld "
                                                      "rows of the gradient", (long long)rows);
  if ((st = dispatch(k, M, N, args, (void *[]){tmp}, o, be, rg)) == KEOPS_OK)
    for (int c = 0; c < dim; c++) {
      double s = 0;
      for (int64_t r = 0; r < rows; r++)
        s += p->dtype == KEOPS_FLOAT32 ? ((float *)tmp)[r * dim + c] : ((double *)tmp)[r * dim + c];
      if (p->dtype == KEOPS_FLOAT32) ((float *)outs[0])[c] = (float)s;
      else ((double *)outs[0])[c] = s;
    }
  free(tmp);
  return st;
}

keops_status rt_kernel_prepare(keops_kernel *k, const keops_run_options *opts) {
  if (!k) return rt_fail(KEOPS_ERROR_ARGUMENT, "rt_kernel_prepare: kernel is NULL");
  keops_run_options o;
  keops_status st = read_options(k->ctx, opts, &o, "rt_kernel_prepare");
  if (st != KEOPS_OK) return st;
  if (rt_backend(k->ctx, &o) != KEOPS_BACKEND_CPU || k->prog->zero) return KEOPS_OK;
  kerr e;
  kerr_clear(&e);
  return rt_kernel_cpu(k, &e) ? KEOPS_OK : rt_fail_kerr(&e, "rt_kernel_prepare");
}

keops_backend keops_kernel_backend(const keops_kernel *k, const keops_run_options *opts) {
  keops_run_options o;
  if (!k || read_options(k->ctx, opts, &o, "keops_kernel_backend") != KEOPS_OK)
    return KEOPS_BACKEND_AUTO;
  return rt_backend(k->ctx, &o);
}

const char *keops_backend_describe(const keops_context *ctx, keops_backend b) {
  if (!ctx || (unsigned)b > KEOPS_BACKEND_REFERENCE) return "";
  if (b == KEOPS_BACKEND_AUTO || b == KEOPS_BACKEND_GPU) rt_gpu_probe(ctx);
  return ctx->describe[b];
}
