/* keops-dump: shows what the front end makes of a formula - the expression tree, the
 * canonical text and kernel key, or a Graphviz picture of the DAG.
 *
 * The kernel is built through keops_kernel_create, so that every error message (and every
 * result) is exactly the API's; the program is then read through the internal runtime
 * interface. Exit status: 0 success, 1 bad input (the API's message on stderr), 2 bad
 * command line (usage on stderr). */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "gpu.h"
#include "runtime.h"

enum emit { EMIT_TREE, EMIT_SIMPLIFIED, EMIT_DOT, EMIT_LLVM, EMIT_LLVM_OPT, EMIT_ASM, EMIT_PTX, EMIT_NVVM };

static const char usage_text[] =
    "usage: keops-dump [options] [--] FORMULA [ALIAS...]\n"
    "\n"
    "Builds the reduction as keops_kernel_create does and prints one view of it:\n"
    "  --emit=tree        the formula as an indented tree, one node per line (op, dim,\n"
    "                     integer parameters; variables with their alias names), after\n"
    "                     autodiff and simplification (the parser builds through simplifying\n"
    "                     constructors, so no unsimplified tree exists); a node used more\n"
    "                     than once is marked [#id] and printed in full only the first time\n"
    "  --emit=simplified  (default) the canonical text of the simplified formula (the cache\n"
    "                     key's formula part), the same with alias names, the reduction,\n"
    "                     axis, options, inputs, outputs, the formula the backends reduce\n"
    "                     (\"reduced\": categories swapped for axis 0, LogSumExp-type\n"
    "                     reductions concatenate their weights) and the kernel key\n"
    "  --emit=dot         the DAG of the simplified formula as a Graphviz digraph\n"
    "  --emit=llvm        the CPU kernel's LLVM IR as generated\n"
    "  --emit=llvm-opt    the CPU kernel's LLVM IR after the optimisation pipeline\n"
    "  --emit=asm         the CPU kernel's assembly for the target\n"
    "  --target=T         CPU target of llvm/llvm-opt/asm: host (default, or $KEOPS_TARGET),\n"
    "                     avx512, avx2, generic; or gpuemu, the GPU kernel as the GPU\n"
    "                     emulator runs it (KEOPS_GPU=emulator) on this host\n"
    "  --emit=ptx         the GPU kernel's PTX (no GPU or CUDA toolkit needed)\n"
    "  --emit=nvvm        the GPU kernel's LLVM IR (nvptx64) as generated\n"
    "  --gpu-arch=sm_XY   GPU architecture of ptx/nvvm (default sm_80), with --ptx=N.M the PTX\n"
    "                     ISA version (default 8.0)\n"
    "\n"
    "Reduction options (as in keops_kernel_desc):\n"
    "  --reduction=R      Sum (default), Max, Min, ArgMax, ArgMin, Max_ArgMax, Min_ArgMin,\n"
    "                     KMin, ArgKMin, KMin_ArgKMin, LogSumExp, SumSoftMaxWeight,\n"
    "                     Max_SumShiftExp, Max_SumShiftExpWeight\n"
    "  --axis=1|0         required: 1 (or j) reduces over j, one output row per i;\n"
    "                     0 (or i) over i, one row per j (KeOps's numbering)\n"
    "  --k=K              K of KMin, ArgKMin, KMin_ArgKMin\n"
    "  --formula2=F       weight formula of LogSumExp, SumSoftMaxWeight, ...\n"
    "  --dtype=float32|float64   (default float32)\n"
    "  --fast-math        fast_math = 1: float32 Exp on the GPU as ex2.approx alone\n"
    "  --help             this text\n"
    "\n"
    "Example:\n"
    "  keops-dump --axis=1 'Square(p-a)*Exp(x+y)' 'x = Vi(3)' 'y = Vj(3)' 'a = Vj(1)' "
    "'p = Pm(1)'\n"
    "\n"
    "Exit status: 0 success, 1 bad formula or reduction (the library's message on stderr),\n"
    "2 bad command line.\n";

typedef struct dump_opts {
  enum emit emit;
  const char *target;
  const char *gpu_arch, *ptx;
  keops_kernel_desc desc;
} dump_opts;

/* ---- command line ------------------------------------------------------------------------ */

/* Strict decimal integer: the whole text, in int range. */
static int parse_int(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < -2147483647L - 1 || v > 2147483647L) return -1;
  *out = (int)v;
  return 0;
}

static int parse_emit(const char *s, enum emit *out) {
  static const char *const names[] = {"tree", "simplified", "dot", "llvm", "llvm-opt", "asm", "ptx", "nvvm"};
  for (int k = 0; k < (int)(sizeof names / sizeof *names); k++)
    if (strcmp(s, names[k]) == 0) {
      *out = (enum emit)k;
      return 0;
    }
  return -1;
}

static int parse_dtype(const char *s, keops_dtype *out) {
  if (strcmp(s, "float32") == 0)
    *out = KEOPS_FLOAT32;
  else if (strcmp(s, "float64") == 0)
    *out = KEOPS_FLOAT64;
  else
    return -1;
  return 0;
}

/* Prints "keops-dump: <message>" and the usage on stderr; returns the exit status 2. */
__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("keops-dump: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n", stderr);
  fputs(usage_text, stderr);
  return 2;
}

/* Fills o from argv. Returns -1 to go on, else the exit status (0 after --help). */
static int parse_args(int argc, char **argv, dump_opts *o) {
  static const struct option long_opts[] = {
      {"emit", required_argument, NULL, 'e'},     {"reduction", required_argument, NULL, 'r'},
      {"axis", required_argument, NULL, 'a'},     {"k", required_argument, NULL, 'k'},
      {"formula2", required_argument, NULL, 'f'}, {"dtype", required_argument, NULL, 'd'},
      {"target", required_argument, NULL, 't'},   {"gpu-arch", required_argument, NULL, 'g'},
      {"ptx", required_argument, NULL, 'p'},      {"help", no_argument, NULL, 'h'},
      {"fast-math", no_argument, NULL, 'F'},
      {NULL, 0, NULL, 0}};
  /* A formula that starts with '-' looks like a cluster of short options to getopt, whose
   * message would then blame the option before it: name it, and the way out. */
  for (int i = 1; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--"); i++) {
    if (!strcmp(argv[i], "-h")) continue;
    if (argv[i][1] != '-')
      return bad_usage("'%s' is not an option: a formula that starts with '-' goes after '--' "
                       "(keops-dump [options] -- FORMULA [ALIAS...])", argv[i]);
    size_t n = strcspn(argv[i] + 2, "=");
    for (const struct option *lo = long_opts; lo->name; lo++)
      if (lo->has_arg == required_argument && !argv[i][2 + n] && strlen(lo->name) == n &&
          !strncmp(lo->name, argv[i] + 2, n))
        i++; /* "--emit tree": the value is the next argument */
  }
  int c;
  opterr = 0; /* we print our own message */
  /* '+': stop at the first operand, so formulas and aliases are never taken for options */
  while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
    switch (c) {
    case 'e':
      if (parse_emit(optarg, &o->emit)) return bad_usage("unknown --emit '%s'", optarg);
      break;
    case 'r': o->desc.reduction = optarg; break;
    case 'a':
      if (!strcmp(optarg, "1") || !strcmp(optarg, "j")) o->desc.axis = KEOPS_AXIS_J;
      else if (!strcmp(optarg, "0") || !strcmp(optarg, "i")) o->desc.axis = KEOPS_AXIS_I;
      else return bad_usage("--axis '%s' is not 1 (or j) or 0 (or i)", optarg);
      break;
    case 'k':
      if (parse_int(optarg, &o->desc.k)) return bad_usage("--k '%s' is not an integer", optarg);
      break;
    case 'f': o->desc.formula2 = optarg; break;
    case 'd':
      if (parse_dtype(optarg, &o->desc.dtype)) return bad_usage("unknown --dtype '%s'", optarg);
      break;
    case 't': o->target = optarg; break;
    case 'g': o->gpu_arch = optarg; break;
    case 'p': o->ptx = optarg; break;
    case 'F': o->desc.fast_math = 1; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: return bad_usage("bad option '%s'", argv[optind - 1 < argc ? optind - 1 : argc - 1]);
    }
  }
  if (optind >= argc) return bad_usage("missing FORMULA");
  if (o->desc.axis == KEOPS_AXIS_UNSET)
    return bad_usage("missing --axis: 1 (or j) reduces over j, one output row per i; 0 (or i) "
                     "over i, one row per j");
  o->desc.formula = argv[optind];
  o->desc.aliases = (const char *const *)(argv + optind + 1);
  o->desc.n_aliases = argc - optind - 1;
  return -1;
}

/* ---- names ------------------------------------------------------------------------------- */

static const char *cat_name(int cat) {
  static const char *const names[] = {"Vi", "Vj", "Pm"};
  return cat >= 0 && cat < 3 ? names[cat] : "?";
}

static const char *dtype_name(keops_dtype dt) {
  return dt == KEOPS_FLOAT32 ? "float32" : dt == KEOPS_FLOAT64 ? "float64" : "int64";
}

/* names[pos]: the alias of position pos or NULL, as dag_print wants them. */
static const char *const *alias_names(const fe_program *p) {
  return (const char *const *)p->args.name;
}

/* ---- --emit=tree ------------------------------------------------------------------------- */

typedef struct tree {
  const dag *d;
  const fe_args *args;
  uint32_t *uses; /* parents of each node in the tree's DAG */
  uint8_t *shown; /* already printed in full */
} tree;

/* Parent counts of the nodes below root: children have smaller ids, so one sweep down. */
static void count_uses(const dag *d, uint32_t root, uint32_t *uses) {
  uses[root] = 1;
  for (uint32_t id = root; id > 0; id--) {
    if (!uses[id]) continue;
    const dag_node *n = dag_get(d, id);
    for (int c = 0; c < n->nk; c++) uses[n->k[c]]++;
  }
}

static void print_label(const tree *t, uint32_t id) {
  const dag_node *n = dag_get(t->d, id);
  const int64_t *p = dag_params(t->d, id);
  const char *name = dag_ops[n->op].name;
  if (n->op == OP_Var) {
    int pos = (int)p[0];
    const char *alias = pos >= 0 && pos < t->args->n ? t->args->name[pos] : NULL;
    printf("Var%s%s pos=%d cat=%s", alias ? " " : "", alias ? alias : "", pos, cat_name((int)p[1]));
  } else if (n->op == OP_RatCst) {
    printf(p[1] == 1 ? "RatCst %lld" : "RatCst %lld/%lld", (long long)p[0], (long long)p[1]);
  } else if (n->op == OP_Cst) {
    double v;
    memcpy(&v, p, sizeof v);
    printf("Cst %.17g", v);
  } else {
    fputs(name, stdout);
    for (int k = 0; k < n->np; k++) printf(k ? ",%lld" : " params=[%lld", (long long)p[k]);
    if (n->np) putchar(']');
  }
  printf(" dim=%d", (int)n->dim);
}

static void print_tree(tree *t, uint32_t id, int depth) {
  printf("%*s", 2 * depth, "");
  print_label(t, id);
  int shared = t->uses[id] > 1;
  if (shared && t->shown[id]) {
    printf(" [#%u, shown above]\n", (unsigned)id);
    return;
  }
  printf(shared ? " [#%u]\n" : "\n", (unsigned)id);
  t->shown[id] = 1;
  const dag_node *n = dag_get(t->d, id);
  for (int c = 0; c < n->nk; c++) print_tree(t, n->k[c], depth + 1);
}

static int emit_tree_of(const fe_program *p, uint32_t root, const char *title) {
  uint32_t n = dag_count(p->d);
  tree t = {p->d, &p->args, calloc(n, sizeof(uint32_t)), calloc(n, 1)};
  if (!t.uses || !t.shown) {
    free(t.uses);
    free(t.shown);
    fputs("keops-dump: out of memory\n", stderr);
    return 1;
  }
  printf("%s:\n", title);
  count_uses(p->d, root, t.uses);
  print_tree(&t, root, 1);
  free(t.uses);
  free(t.shown);
  return 0;
}

static int emit_tree(const fe_program *p) {
  int rc = emit_tree_of(p, p->user_f, "formula");
  if (!rc && p->user_f2) rc = emit_tree_of(p, p->user_f2, "formula2");
  return rc;
}

/* ---- --emit=simplified ------------------------------------------------------------------- */

/* Prints "label: text" for a malloc'ed text (freed here); NULL means out of memory. */
static int print_owned(const char *label, char *text) {
  if (!text) {
    fputs("keops-dump: out of memory\n", stderr);
    return 1;
  }
  printf("%-10s %s\n", label, text);
  free(text);
  return 0;
}

static int print_formula(const fe_program *p, uint32_t root, const char *canon, const char *named) {
  if (print_owned(canon, dag_print(p->d, root, NULL, 0))) return 1;
  return print_owned(named, dag_print(p->d, root, alias_names(p), p->args.n));
}

static void print_inputs(const fe_program *p) {
  printf("%-10s", "inputs:");
  for (int k = 0; k < p->args.n; k++) {
    const char *name = p->args.name[k];
    if (p->args.dim[k] == 0)
      printf(" %d: (unused)", k);
    else
      printf(" %d: %s%s%s(%d)", k, name ? name : "", name ? " = " : "", cat_name(p->args.cat[k]),
             p->args.dim[k]);
    if (k + 1 < p->args.n) putchar(',');
  }
  putchar('\n');
}

static void print_outputs(const fe_program *p) {
  printf("%-10s", "outputs:");
  for (int k = 0; k < p->nout; k++)
    printf(" %d: %s rows x %d %s%s", k, p->axis == 1 ? "M" : "N", p->out_dim[k],
           dtype_name(p->out_dtype[k]), k + 1 < p->nout ? "," : "");
  putchar('\n');
}

static int emit_simplified(const fe_program *p) {
  if (print_formula(p, p->user_f, "formula:", "named:")) return 1;
  if (p->user_f2 && print_formula(p, p->user_f2, "formula2:", "named2:")) return 1;
  printf("%-10s %s", "reduction:", p->red->name);
  if (p->k) printf(" K=%d", p->k);
  printf(", axis %d (one output row per %s, reduced over %s)%s\n", p->axis,
         p->axis == 1 ? "i" : "j", p->axis == 1 ? "j" : "i",
         p->zero ? "; the formula is zero: no pair is evaluated" : "");
  static const char *const schemes[] = {"AUTO", "DIRECT", "BLOCK", "KAHAN"};
  printf("%-10s dtype %s, sum scheme %s%s%s\n", "options:", dtype_name(p->dtype),
         (unsigned)p->scheme < 4 ? schemes[p->scheme] : "?",
         p->double_acc ? ", float64 accumulation" : "", p->fast_math ? ", fast math" : "");
  print_inputs(p);
  print_outputs(p);
  if (print_owned("reduced:", dag_print(p->d, p->f, NULL, 0))) return 1;
  printf("%-10s %s\n", "key:", p->key);
  return 0;
}

/* ---- --emit=dot -------------------------------------------------------------------------- */

static int emit_dot(const fe_program *p) {
  char *text = dag_dot(p->d, p->user_f, alias_names(p), p->args.n);
  if (!text) {
    fputs("keops-dump: out of memory\n", stderr);
    return 1;
  }
  fputs(text, stdout);
  if (text[0] && text[strlen(text) - 1] != '\n') putchar('\n');
  free(text);
  return 0;
}

/* ---- --emit=llvm, llvm-opt, asm ---------------------------------------------------------- */

static int emit_code(const fe_program *p, enum emit e, const char *target) {
  kerr err;
  kerr_clear(&err);
  kt_target t;
  char *code = NULL;
  size_t n = 0;
  kc_out out = e == EMIT_ASM ? KC_ASM : e == EMIT_LLVM ? KC_IR : KC_IR_OPT;
  /* gpuemu: the GPU kernel as the emulator runs it (gpu.c's, for this host) */
  int emu = target && !strcmp(target, "gpuemu");
  if (!kt_pick(&t, emu ? "host" : target, &err)) {
    kt_target host = t;
    if (emu) kt_set(&t, &kt_gpuemu, host.cpu, host.features);
    code = kt_compile(p, &t, "keops_kernel", out, &n, &err);
  }
  if (code)
    fwrite(code, 1, n, stdout);
  free(code);
  if (err.status == KEOPS_OK) return 0;
  fprintf(stderr, "%s\n", err.msg);
  return 1;
}

static int emit_gpu(const fe_program *p, const dump_opts *o) {
  kt_target t;
  int major = 8, minor = 0;
  const char *arch = o->gpu_arch ? o->gpu_arch : "sm_80";
  if (strncmp(arch, "sm_", 3) || strlen(arch) > 8 || (o->ptx && sscanf(o->ptx, "%d.%d", &major, &minor) != 2)) {
    fprintf(stderr, "keops-dump: --gpu-arch must look like sm_80 and --ptx like 8.0\n");
    return 2;
  }
  char ptx[16];
  snprintf(ptx, sizeof ptx, "+ptx%d%d", major, minor);
  kt_set(&t, &kt_nvptx, arch, ptx);
  kerr err;
  kerr_clear(&err);
  size_t len;
  char *text = kt_compile(p, &t, "keops_kernel", o->emit == EMIT_NVVM ? KC_IR : KC_ASM, &len, &err);
  if (!text) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  fputs(text, stdout);
  free(text);
  return 0;
}

/* ---- main -------------------------------------------------------------------------------- */

static int emit(const dump_opts *o, const fe_program *p) {
  switch (o->emit) {
  case EMIT_TREE: return emit_tree(p);
  case EMIT_DOT: return emit_dot(p);
  case EMIT_LLVM: case EMIT_LLVM_OPT: case EMIT_ASM: return emit_code(p, o->emit, o->target);
  case EMIT_PTX: case EMIT_NVVM: return emit_gpu(p, o);
  case EMIT_SIMPLIFIED: break;
  }
  return emit_simplified(p);
}

int main(int argc, char **argv) {
  dump_opts o = {EMIT_SIMPLIFIED, NULL, NULL, NULL, keops_kernel_desc_init()};
  int rc = parse_args(argc, argv, &o);
  if (rc >= 0) return rc;

  keops_context *ctx = NULL;
  keops_kernel *k = NULL;
  if (keops_context_create(&ctx) != KEOPS_OK || keops_kernel_create(ctx, &o.desc, &k) != KEOPS_OK) {
    fprintf(stderr, "%s\n", keops_last_error());
    keops_context_destroy(ctx);
    return 1;
  }
  rc = emit(&o, rt_kernel_program(k));
  if (fflush(stdout) != 0 && rc == 0) {
    perror("keops-dump: stdout");
    rc = 1;
  }
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
  return rc;
}
