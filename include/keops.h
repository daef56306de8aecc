/* keops: JIT-compiled formula reductions over all pairs (i, j) of two point sets.
 *
 * One public header. Handles are opaque. Every function that can fail returns a
 * keops_status; on failure keops_last_error() holds a message naming the problem and,
 * for formula and alias text, its position ("formula:1:9: error: ...", the text and a
 * caret line). The library never prints, aborts or exits.
 *
 * Threads: a context may be used from many threads at once; a kernel is immutable after
 * creation and keops_kernel_run may be called on it concurrently. keops_last_error() is
 * per thread.
 *
 * Arrays are row-major and contiguous. A Vi input is M x dim, a Vj input N x dim, a Pm
 * input dim values, all in the kernel's dtype. Outputs have M rows when axis = 1 and N
 * rows when axis = 0; index outputs are int64 (0-based, -1 where no index exists). */
#ifndef KEOPS_H
#define KEOPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef KEOPS_API
#define KEOPS_API __attribute__((visibility("default")))
#endif

typedef struct keops_context keops_context; /* opaque: cache, options, devices, worker pool */
typedef struct keops_kernel keops_kernel;   /* opaque: one compiled reduction */

typedef enum keops_status {
  KEOPS_OK = 0,
  KEOPS_ERROR_SYNTAX,      /* formula or alias text does not parse */
  KEOPS_ERROR_DIMENSION,   /* dims, categories or positions do not fit */
  KEOPS_ERROR_ARGUMENT,    /* bad call: NULL, unknown reduction, bad axis/K, sizes, counts */
  KEOPS_ERROR_UNSUPPORTED, /* a valid request this build or backend cannot run */
  KEOPS_ERROR_NO_DEVICE,   /* GPU asked for, none usable */
  KEOPS_ERROR_DEVICE,      /* CUDA driver failure */
  KEOPS_ERROR_COMPILE,     /* LLVM failed: always a bug, message says what */
  KEOPS_ERROR_OUT_OF_MEMORY,
  KEOPS_ERROR_IO,           /* disk cache trouble that could not be ignored */
  KEOPS_ERROR_NOT_CONVERGED /* keops_kernel_solve reached its iteration cap */
} keops_status;

typedef enum keops_dtype { KEOPS_FLOAT32 = 0, KEOPS_FLOAT64 = 1, KEOPS_INT64 = 2 } keops_dtype;

typedef enum keops_backend {
  KEOPS_BACKEND_AUTO = 0,
  KEOPS_BACKEND_CPU = 1,
  KEOPS_BACKEND_GPU = 2,
  KEOPS_BACKEND_REFERENCE = 3 /* slow exact interpreter */
} keops_backend;

typedef enum keops_sum_scheme {
  KEOPS_SUM_AUTO = 0, /* = BLOCK */
  KEOPS_SUM_DIRECT = 1,
  KEOPS_SUM_BLOCK = 2,
  KEOPS_SUM_KAHAN = 3
} keops_sum_scheme;

/* Which index a reduction runs over. There is no default: a descriptor whose axis is
 * KEOPS_AXIS_UNSET is refused, since with M == N a wrong axis runs and gives wrong numbers. */
typedef enum keops_axis {
  KEOPS_AXIS_UNSET = 0,
  KEOPS_AXIS_J = 1, /* reduce over j: one output row per i (KeOps axis=1) */
  KEOPS_AXIS_I = 2  /* reduce over i: one output row per j (KeOps axis=0) */
} keops_axis;

/* Both structs below start with their size, so that later versions can add fields at the end
 * without breaking programs built against this header: initialise them with
 * keops_kernel_desc_init() / keops_run_options_init() (C and C++), or in C with a designated
 * initialiser that sets .size = sizeof(keops_kernel_desc) first. A size of 0 (a struct
 * zero-initialised by hand) is refused with KEOPS_ERROR_ARGUMENT. A size larger than this
 * library knows (a program built against a newer header) is accepted when every byte past
 * the known fields is zero, else refused with KEOPS_ERROR_UNSUPPORTED. Every field added
 * later means "as before" when zero. */
typedef struct keops_kernel_desc {
  size_t size;                /* sizeof(keops_kernel_desc), set by keops_kernel_desc_init() */
  const char *formula;        /* required, e.g. "Square(p-a)*Exp(x+y)" */
  const char *const *aliases; /* e.g. {"x = Vi(3)", "y = Vj(3)", "a = Vj(1)", "p = Pm(1)"} */
  int n_aliases;
  keops_axis axis;       /* required: KEOPS_AXIS_J or KEOPS_AXIS_I */
  const char *reduction; /* NULL means "Sum"; KeOps names: Sum, Max, Min, ArgMax, ArgMin,
                            Max_ArgMax, Min_ArgMin, KMin, ArgKMin, KMin_ArgKMin, LogSumExp,
                            SumSoftMaxWeight, Max_SumShiftExp, ... */
  int k;                 /* K of KMin, ArgKMin, KMin_ArgKMin */
  const char *formula2;  /* weight formula of LogSumExp / SumSoftMaxWeight, else NULL */
  keops_dtype dtype;     /* KEOPS_FLOAT32 (default) or KEOPS_FLOAT64 */
  keops_sum_scheme sum_scheme;
  int double_accumulator; /* nonzero: accumulate float32 sums in float64 */
  int fast_math;          /* 1: on the GPU, float32 Exp (also inside LogSumExp-type reductions)
                             is ex2.approx(x log2 e), CUDA's __expf: 2 + 1.17|x| ulp instead of
                             about 3 ulp, for fewer instructions; other backends and float64
                             ignore it. 0 (default) or 1 */
} keops_kernel_desc;

/* A block-sparse reduction, as KeOps's `ranges` six-tuple: output rows are grouped in blocks,
 * and each block reduces over a list of index ranges only. All arrays are int64 in host
 * memory (also for device_pointers runs), read during keops_kernel_run only; a range is a
 * [start, end) pair. A kernel of axis KEOPS_AXIS_J uses the first four fields, one of axis
 * KEOPS_AXIS_I the last four (the others may be NULL and 0). For KEOPS_AXIS_J:
 *   ranges_i     n_ranges_i x 2: blocks of rows i within [0, M], ascending and disjoint;
 *   slices_i     n_ranges_i cumulative ends into redranges_j: block b reduces over the j in
 *                redranges_j[slices_i[b-1]] ... redranges_j[slices_i[b] - 1] (slices_i[-1]
 *                is 0), so slices_i is non-decreasing and ends at n_redranges_j;
 *   redranges_j  n_redranges_j x 2: ranges of j within [0, N], ascending and disjoint within
 *                each block (a pair is never reduced twice).
 * Rows in no block get the reduction of nothing, finalised (Sum 0, Min +inf, ArgMin -1...).
 * Unlike KeOps, every entry is checked; a bad one is a KEOPS_ERROR_ARGUMENT naming it. */
typedef struct keops_ranges {
  const int64_t *ranges_i, *slices_i, *redranges_j;
  int64_t n_ranges_i, n_redranges_j;
  const int64_t *ranges_j, *slices_j, *redranges_i;
  int64_t n_ranges_j, n_redranges_i;
} keops_ranges;

/* Batch dimensions, as KeOps's: every input has the same number k of leading batch
 * dimensions, numpy-style. Input a is a contiguous array (e_a[0], ..., e_a[k-1], rows, dim)
 * (a Pm input: (e_a[0], ..., e_a[k-1], dim)) whose extents are each the batch's or 1 (then
 * broadcast); outputs are (B_0, ..., B_{k-1}, rows, dim), B_d the largest e_a[d]. Each batch
 * element is a reduction of its own: Arg indices count from its first row, and ranges, when
 * given, apply within every element. An extent that is neither B_d nor 1 is a
 * KEOPS_ERROR_DIMENSION naming the input and the dimension (KeOps does not check). */
#define KEOPS_MAX_BATCH_DIMS 8
typedef struct keops_batch {
  int ndim;               /* k, in [1, KEOPS_MAX_BATCH_DIMS] */
  const int64_t *extents; /* keops_kernel_arg_count(k) x ndim, row-major: e_a[d] at
                             extents[a * ndim + d]; positions no alias declares are ignored */
} keops_batch;

typedef struct keops_run_options { /* NULL options mean keops_run_options_init()'s defaults */
  size_t size;                     /* sizeof(keops_run_options), set by keops_run_options_init() */
  keops_backend backend;           /* AUTO: GPU when one is usable, else CPU */
  int device_id;                   /* GPU ordinal */
  int num_threads;                 /* CPU threads; 0: all online cores */
  int device_pointers; /* nonzero: args and outs are CUdeviceptr values (cast to pointers) on
                          device_id, and the run is asynchronous on `stream` (GPU backend) */
  void *stream;        /* a CUstream for the GPU backend; NULL: the default stream */
  const keops_ranges *ranges; /* NULL: every pair; else a block-sparse reduction (read during
                                 the run only) */
  const keops_batch *batch;   /* NULL: no batch dimensions (read during the run only) */
} keops_run_options;

/* TYPE_init(): a TYPE with every field zero but its size (compiled into the caller, so the
 * size is that of the caller's header). Defined for keops_kernel_desc (then set formula,
 * aliases and axis), keops_run_options (the defaults: AUTO backend, device 0, all cores, host
 * arrays), keops_solve_options and keops_solve_info. */
#define KEOPS_SIZED_INIT(TYPE)                                                                     \
  static inline TYPE TYPE##_init(void) {                                                           \
    TYPE v;                                                                                        \
    memset(&v, 0, sizeof v);                                                                       \
    v.size = sizeof v;                                                                             \
    return v;                                                                                      \
  }
KEOPS_SIZED_INIT(keops_kernel_desc)
KEOPS_SIZED_INIT(keops_run_options)

/* Creates a context. On success *out owns it; release with keops_context_destroy.
 * On failure *out is set to NULL (when out is not NULL). */
KEOPS_API keops_status keops_context_create(keops_context **out);
/* Releases the caller's handle to a context (NULL is fine); the handle must not be used
 * afterwards. Kernels still alive keep what they need (compiled code, worker threads, GPU
 * modules, the device buffers GPU runs on host arrays reuse): the context's resources are
 * freed with the last of its kernels. */
KEOPS_API void keops_context_destroy(keops_context *ctx);

/* Parses, checks, differentiates and simplifies desc and prepares a kernel for it.
 * desc and the strings it points to are only read during the call. On success *out owns
 * a kernel (release with keops_kernel_destroy, before or after the context); on failure *out is
 * set to NULL and keops_last_error() says why. */
KEOPS_API keops_status keops_kernel_create(keops_context *ctx, const keops_kernel_desc *desc,
                                 keops_kernel **out);
KEOPS_API void keops_kernel_destroy(keops_kernel *kernel); /* NULL is fine */

/* Queries; a NULL kernel or an index out of range gives -1. */
KEOPS_API int keops_kernel_arg_count(const keops_kernel *k);             /* input arrays run() expects */
KEOPS_API int keops_kernel_arg_dim(const keops_kernel *k, int arg);      /* columns of input `arg` */
KEOPS_API int keops_kernel_arg_category(const keops_kernel *k, int arg); /* 0: Vi (M rows), 1: Vj (N rows), 2: Pm */
KEOPS_API int keops_kernel_output_count(const keops_kernel *k);        /* 1, or 2 for Min_ArgMin, Max_ArgMax, KMin_ArgKMin */
KEOPS_API int keops_kernel_output_dim(const keops_kernel *k, int out); /* values per output row */
/* Rows of every output of a run on M x N: M for KEOPS_AXIS_J, N for KEOPS_AXIS_I, 1 for a
 * gradient with respect to a parameter (keops_kernel_grad); -1 for a NULL k or a negative size. */
KEOPS_API int64_t keops_kernel_output_rows(const keops_kernel *k, int64_t M, int64_t N);
/* dtype of output `out`; KEOPS_FLOAT32 for a NULL kernel or an index out of range. */
KEOPS_API keops_dtype keops_kernel_output_dtype(const keops_kernel *k, int out);

/* Runs the reduction. args: arg_count arrays in position order (the caller keeps
 * ownership; they are only read). outs: output_count arrays, written in full. On failure
 * the outputs may have been partly written. opts may be NULL. */
KEOPS_API keops_status keops_kernel_run(keops_kernel *k, int64_t M, int64_t N, const void *const *args,
                              void *const *outs, const keops_run_options *opts);

/* The backend keops_kernel_run(k, ..., opts) runs on, AUTO resolved (the GPU when one is
 * usable, else the compiled CPU kernel). opts may be NULL. KEOPS_BACKEND_AUTO for a NULL k or
 * options keops_kernel_run would refuse for their size. */
KEOPS_API keops_backend keops_kernel_backend(const keops_kernel *k, const keops_run_options *opts);
/* What backend b means in ctx, for logs: e.g. "CPU JIT (avx512, sapphirerapids, 2 threads)";
 * for AUTO, the backend it resolves to, and on the CPU why the GPU is not used (no driver, a
 * compute capability or driver keops cannot generate code for, no primary context...).
 * The string belongs to ctx; "" for a NULL ctx or an unknown b. */
KEOPS_API const char *keops_backend_describe(const keops_context *ctx, keops_backend b);

/* Derives the kernel of the gradient of k's reduction with respect to its input `var`, as
 * KeOps's autograd layer does: for a loss with gradient G with respect to k's output, the new
 * kernel computes the gradient with respect to input var, shaped like var (a Vi input: M
 * rows, a Vj input: N rows, a Pm input: one row, the sum over rows done after the run; host
 * arrays only). Its inputs are k's, in their positions, then, at position
 * keops_kernel_arg_count(k): G (k's output's shape), then for LogSumExp-type and
 * SumSoftMaxWeight reductions R, k's output, then for SumSoftMaxWeight with respect to an
 * input indexed like the reduced index L, the LogSumExp of k's formula (a kernel of the same
 * description with reduction LogSumExp and no formula2); for Min, Max, KMin and their _Arg
 * forms A, the int64 indices the forward selected (its index output, or that of the Arg
 * reduction of the same formula: ArgMin, ArgMax, ArgKMin), through which alone the gradient
 * flows (K at most 64; host arrays, no batch dimensions). keops_kernel_arg_* say which.
 * The Arg reductions give zeros; the raw Max_SumShiftExp outputs KEOPS_ERROR_UNSUPPORTED. The new
 * kernel is a kernel like any other, so its own gradients follow (second derivatives); R and
 * L are inputs of their own there, so a derivative through them is the caller's chain rule.
 * On success *out owns the new kernel (keops_kernel_destroy); on failure *out is NULL. */
KEOPS_API keops_status keops_kernel_grad(keops_kernel *k, int var, keops_kernel **out);

/* keops_kernel_solve's options; initialise with keops_solve_options_init(). */
typedef struct keops_solve_options {
  size_t size;    /* sizeof(keops_solve_options) */
  double alpha;   /* solves (alpha Id + K) x = b; KeOps's default is 1e-10, here 0 unless set */
  double tol;     /* stop when |b - (alpha x + K x)| <= tol |b| (2-norms over all entries);
                     0: 1e-5 for float32 kernels, 1e-10 for float64 */
  int max_iter;   /* at most this many products with K; 0: twice the number of unknowns,
                     within [100, 10000] */
  const keops_run_options *run; /* how each product runs (backend, threads, ranges...); NULL:
                                   defaults. device_pointers is refused. */
} keops_solve_options;

/* What a solve did; initialise .size with keops_solve_info_init() or sizeof. */
typedef struct keops_solve_info {
  size_t size;
  int iterations;  /* products with K */
  double residual; /* |b - (alpha x + K x)| / |b| at the end (0 when b = 0) */
} keops_solve_info;

KEOPS_SIZED_INIT(keops_solve_options)
KEOPS_SIZED_INIT(keops_solve_info)

/* Solves (alpha Id + K) x = b by conjugate gradients, as KeOps's KernelSolve, where K is
 * kernel k (a Sum) seen as a linear map of its input `var`: args holds every input as for
 * keops_kernel_run, args[var] being b, and x (laid out like b: rows x dim in the kernel's
 * dtype, the caller's) receives the solution. The formula must be linear in var (checked
 * symbolically: KEOPS_ERROR_DIMENSION "formula is not linear in b" otherwise), var must be a
 * Vi or Vj input with as many rows and columns as the output (with var a Vj of a
 * KEOPS_AXIS_J kernel, M == N), and alpha Id + K must be symmetric positive definite, which
 * CG cannot check in full: a direction of non-positive curvature is KEOPS_ERROR_ARGUMENT.
 * With batch dimensions (opts->run->batch) b and x carry them, the unknown with every batch
 * extent in full, and the block-diagonal system of all elements is solved as one.
 * Iterations run in double on the host, each product on the chosen backend. Reaching max_iter
 * returns KEOPS_ERROR_NOT_CONVERGED with the last iterate in x. opts and info may be NULL;
 * info, when given, is filled whatever the status (once the arguments are checked). */
KEOPS_API keops_status keops_kernel_solve(keops_kernel *k, int var, int64_t M, int64_t N,
                                          const void *const *args, void *x,
                                          const keops_solve_options *opts,
                                          keops_solve_info *info);

/* Builds the ranges of a block-sparse reduction from clusters and a keep mask, as KeOps's
 * from_matrix: clusters_i (nci x 2) and clusters_j (ncj x 2) are [start, end) ranges of rows i
 * and j, keep is nci x ncj bytes, row-major, nonzero where cluster ci interacts with cluster
 * cj. The result serves both axes: ranges_i = clusters_i with the kept clusters_j of each row
 * in order, ranges_j = clusters_j with the kept clusters_i of each column. The arrays are only
 * read; on success *out owns a new keops_ranges (release with keops_ranges_destroy), on
 * failure *out is NULL. Cluster ranges are not checked here but by each run. */
KEOPS_API keops_status keops_ranges_from_matrix(const int64_t *clusters_i, int64_t nci,
                                                const int64_t *clusters_j, int64_t ncj,
                                                const unsigned char *keep, keops_ranges **out);
/* The same from cluster labels of points sorted by cluster: labels_i (M entries) and labels_j
 * (N entries) are non-decreasing, in [0, nci) and [0, ncj); cluster c is the rows labelled c
 * (possibly none). Unsorted or out-of-range labels are a KEOPS_ERROR_ARGUMENT naming the
 * entry. */
KEOPS_API keops_status keops_ranges_from_labels(const int64_t *labels_i, int64_t M, int64_t nci,
                                                const int64_t *labels_j, int64_t N, int64_t ncj,
                                                const unsigned char *keep, keops_ranges **out);
/* Releases ranges made by keops_ranges_from_*; NULL is fine. Never pass one of your own. */
KEOPS_API void keops_ranges_destroy(keops_ranges *ranges);

/* This thread's last failure message; "" if none. The string belongs to the library and
 * stays valid until the next failing call on this thread. */
KEOPS_API const char *keops_last_error(void);
/* A static name for s, e.g. "KEOPS_ERROR_SYNTAX"; "unknown status" for other values. */
KEOPS_API const char *keops_status_string(keops_status s);

#ifdef __cplusplus
}
#endif
#endif
