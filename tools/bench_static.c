/* keops-bench's static figure of a GPU kernel (bench_static.h): ptxas and nvdisasm run as
 * child processes (posix_spawn, no shell) on files in a private mkdtemp directory, removed
 * afterwards. The counting rule is the sass-stats script's (the innermost barrier-free loop of
 * the kernel): keep the two in step. */
#include "bench_static.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- parsers ------------------------------------------------------------------------------- */

/* The integer just before `what` (blanks between) in [from, end), or -1. */
static int number_before(const char *from, const char *end, const char *what) {
  size_t n = strlen(what);
  for (const char *q = from; q + n <= end; q++)
    if (!strncmp(q, what, n)) {
      const char *d = q;
      while (d > from && d[-1] == ' ') d--;
      while (d > from && d[-1] >= '0' && d[-1] <= '9') d--;
      return d[0] >= '0' && d[0] <= '9' ? atoi(d) : -1;
    }
  return -1;
}

int bs_parse_ptxas(const char *text, const char *kernel, bs_ptxas *out) {
  char head[300];
  snprintf(head, sizeof head, "Compiling entry function '%s'", kernel);
  const char *p = strstr(text, head);
  /* the function's report runs to the next function's */
  const char *end = p ? strstr(p + 1, "Compiling entry function") : NULL;
  if (p && !end) end = p + strlen(p);
  out->regs = p ? number_before(p, end, " registers") : -1;
  out->spill_stores = p ? number_before(p, end, " bytes spill stores") : -1;
  out->spill_loads = p ? number_before(p, end, " bytes spill loads") : -1;
  return out->regs >= 0 ? 0 : -1;
}

/* A label definition ".L_x_<digits>:" (leading blanks allowed): its name's length, else 0. */
static size_t label_def(const char *l) {
  while (*l == ' ' || *l == '\t') l++;
  if (strncmp(l, ".L_x_", 5)) return 0;
  size_t n = 5;
  while (l[n] >= '0' && l[n] <= '9') n++;
  return n > 5 && l[n] == ':' ? n : 0;
}

/* An instruction line "/ *XXXX* /  TEXT ;" (an address of 4 or more hex digits): TEXT, trimmed,
 * copied into buf; 0 if the line is none. (sass-stats takes exactly 4 digits, which is the
 * same for kernels under 64 KiB of code.) */
static int instr_text(const char *l, const char *end, char *buf, size_t n) {
  const char *a = strstr(l, "/*");
  if (!a || a >= end) return 0;
  const char *h = a + 2;
  while (h < end && ((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f'))) h++;
  if (h - (a + 2) < 4 || h + 2 > end || strncmp(h, "*/", 2)) return 0;
  const char *s = h + 2;
  if (s >= end || (*s != ' ' && *s != '\t')) return 0;
  while (s < end && (*s == ' ' || *s == '\t')) s++;
  const char *semi = memchr(s, ';', (size_t)(end - s));
  if (!semi) return 0;
  const char *z = semi;
  while (z > s && (z[-1] == ' ' || z[-1] == '\t')) z--;
  snprintf(buf, n, "%.*s", (int)(z - s), s);
  return 1;
}

/* The label a "BRA `(.L_x_N)" in ins jumps to, copied into buf; 0 if none. */
static int bra_target(const char *ins, char *buf, size_t n) {
  for (const char *b = strstr(ins, "BRA"); b; b = strstr(b + 1, "BRA")) {
    const char *s = b + 3;
    if (*s != ' ' && *s != '\t') continue;
    while (*s == ' ' || *s == '\t') s++;
    if (strncmp(s, "`(.L_x_", 7)) continue;
    size_t k = 7;
    while (s[k] >= '0' && s[k] <= '9') k++;
    if (k == 7 || s[k] != ')') continue;
    snprintf(buf, n, "%.*s", (int)(k - 2), s + 2);
    return 1;
  }
  return 0;
}

typedef struct span {
  int a, z;
} span;

int bs_parse_sass(const char *sass, const char *kernel, bs_loop *out) {
  out->ninstr = out->nloops = 0;
  out->first = out->last = -1;
  char head[300];
  snprintf(head, sizeof head, ".text.%s:", kernel);
  size_t hl = strlen(head);
  const char *p = sass;
  while (p && strncmp(p, head, hl)) p = (p = strchr(p, '\n')) ? p + 1 : NULL;
  if (!p) return -1;
  /* the kernel's instructions (bra: their branch targets) and labels, up to the next section */
  int cap = 256, nl = 0, lcap = 64;
  char(*bra)[32] = malloc(sizeof *bra * (size_t)cap);
  int *has_bar = malloc(sizeof *has_bar * (size_t)cap);
  struct {
    char name[32];
    int at;
  } *labels = malloc(sizeof *labels * (size_t)lcap);
  for (p = strchr(p, '\n'); p && *++p;) {
    const char *end = strchr(p, '\n');
    if (!end) end = p + strlen(p);
    const char *t = p;
    while (t < end && (*t == ' ' || *t == '\t')) t++;
    if (!strncmp(p, ".text.", 6) || !strncmp(t, ".section", 8)) break;
    size_t ll = label_def(p);
    char ins[512];
    if (ll) {
      if (nl == lcap) labels = realloc(labels, sizeof *labels * (size_t)(lcap *= 2));
      snprintf(labels[nl].name, sizeof labels[nl].name, "%.*s", (int)ll, t);
      labels[nl++].at = out->ninstr;
    } else if (instr_text(p, end, ins, sizeof ins)) {
      if (out->ninstr == cap) {
        bra = realloc(bra, sizeof *bra * (size_t)(cap *= 2));
        has_bar = realloc(has_bar, sizeof *has_bar * (size_t)cap);
      }
      if (!bra_target(ins, bra[out->ninstr], sizeof bra[0])) bra[out->ninstr][0] = 0;
      has_bar[out->ninstr++] = strstr(ins, "BAR") != NULL;
    }
    p = *end ? end : NULL;
  }
  /* loops: a branch back to a label at or before it; candidates hold no barrier */
  span *cand = malloc(sizeof *cand * (size_t)(out->ninstr + 1));
  int nc = 0;
  for (int k = 0; k < out->ninstr; k++) {
    int at = -1;
    for (int q = 0; q < nl && bra[k][0] && at < 0; q++)
      if (!strcmp(labels[q].name, bra[k])) at = labels[q].at;
    if (at < 0 || at > k) continue;
    out->nloops++;
    int bar = 0;
    for (int s = at; s <= k; s++) bar |= has_bar[s];
    if (!bar) cand[nc++] = (span){at, k};
  }
  /* innermost: a candidate containing no other; of those the longest (the first on ties) */
  for (int c = 0; c < nc; c++) {
    int inner = 1;
    for (int o = 0; o < nc && inner; o++)
      if (o != c && cand[c].a <= cand[o].a && cand[o].z <= cand[c].z) inner = 0;
    if (inner && (out->first < 0 || cand[c].z - cand[c].a > out->last - out->first))
      out->first = cand[c].a, out->last = cand[c].z;
  }
  free(cand);
  free(labels);
  free(has_bar);
  free(bra);
  return 0;
}

/* ---- running the tools ----------------------------------------------------------------------- */

static int executable(const char *path) {
  struct stat st;
  return path[0] && access(path, X_OK) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The tool's path into buf: $env if set (even if not executable: then not found), else the
 * first `name` on PATH, else fallback (NULL: none). 0 when found. */
static int find_tool(const char *env, const char *name, const char *fallback, char *buf, size_t n) {
  const char *e = getenv(env);
  if (e && *e) return snprintf(buf, n, "%s", e), executable(buf) ? 0 : -1;
  const char *path = getenv("PATH");
  while (path && *path) {
    size_t len = strcspn(path, ":");
    snprintf(buf, n, "%.*s/%s", (int)len, len ? path : ".", name);
    if (executable(buf)) return 0;
    path += len + (path[len] == ':');
  }
  if (!fallback) return -1;
  snprintf(buf, n, "%s", fallback);
  return executable(buf) ? 0 : -1;
}

/* Runs argv (argv[0] a path) with stdin /dev/null, stdout and stderr into the files out and
 * err. Its exit status, or -1 when it did not start or exit. */
static int run_tool(char *const argv[], const char *out, const char *err) {
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa)) return -1;
  pid_t pid;
  int rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
           posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600) ||
           posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600) ||
           posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) return -1;
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The whole file, NUL-terminated (*len: its size); NULL on failure. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0, got;
  char *b = malloc(cap);
  while ((got = fread(b + n, 1, cap - n - 1, f)) > 0)
    if ((n += got) + 1 == cap) b = realloc(b, cap *= 2);
  fclose(f);
  b[n] = 0;
  if (len) *len = n;
  return b;
}

static int write_file(const char *path, const void *p, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int bad = fwrite(p, 1, len, f) != len;
  return fclose(f) || bad ? -1 : 0;
}

/* The first line of a tool's stderr, for a one-line report. */
static void first_line(const char *path, char *buf, size_t n) {
  char *t = read_file(path, NULL);
  const char *s = t ? t : "(no message)";
  while (*s == '\n') s++;
  snprintf(buf, n, "%.*s", (int)strcspn(s, "\n"), s);
  free(t);
}

/* ptxas writes ELF headers in CUDA 12's layout (EI_ABIVERSION 8, e_flags with the sm in bits
 * 8-15 and a version at 0x600...); CUDA 11.8's nvdisasm - the one sass-stats caches, as CUDA
 * 13 ships none - reads only the older layout (ABI version 7, e_flags = sm | 0x500 | sm << 16)
 * and refuses the cubin ("does not contain Cuda architecture information"). This rewrites the
 * header in the old layout; the instructions are untouched. Applied only after the
 * disassembler refused the cubin as it is. 0 when patched. */
static int patch_cubin(const char *path, int sm) {
  size_t len;
  unsigned char *b = (unsigned char *)read_file(path, &len);
  int ok = b && len >= 0x34 && !memcmp(b, "\177ELF", 4) && b[4] == 2 /* ELFCLASS64 */ && b[8] != 7;
  if (ok) {
    uint32_t flags = (uint32_t)sm | 0x500u | ((uint32_t)sm << 16);
    b[8] = 7;
    for (int k = 0; k < 4; k++) b[0x30 + k] = (unsigned char)(flags >> (8 * k)); /* little-endian */
    ok = write_file(path, b, len) == 0;
  }
  free(b);
  return ok ? 0 : -1;
}

/* The counting part of the line (after ptxas succeeded), appended at buf. */
static void sass_part(const char *dir, const char *cubin, int sm, int pairs, char *buf, size_t n) {
  char nvd[4096], fb[4096], sass[4200], err[4200], msg[256];
  const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (cache && *cache)
    snprintf(fb, sizeof fb, "%s/keops-tools/nvdisasm", cache);
  else
    snprintf(fb, sizeof fb, "%s/.cache/keops-tools/nvdisasm", home ? home : "");
  if (find_tool("KEOPS_NVDISASM", "nvdisasm", fb, nvd, sizeof nvd)) {
    snprintf(buf, n, "; no nvdisasm for the SASS count (KEOPS_NVDISASM, PATH, %s)", fb);
    return;
  }
  snprintf(sass, sizeof sass, "%s/k.sass", dir);
  snprintf(err, sizeof err, "%s/nvdisasm.err", dir);
  char *argv[] = {nvd, (char *)cubin, NULL};
  int rc = run_tool(argv, sass, err);
  if (rc != 0 && patch_cubin(cubin, sm) == 0) rc = run_tool(argv, sass, err);
  if (rc != 0) {
    first_line(err, msg, sizeof msg);
    snprintf(buf, n, "; nvdisasm failed (%s)", msg);
    return;
  }
  char *text = read_file(sass, NULL);
  bs_loop lp;
  if (!text || bs_parse_sass(text, "keops_kernel", &lp) || lp.first < 0) {
    snprintf(buf, n, "; no barrier-free loop in keops_kernel's SASS");
  } else {
    int per_iter = lp.last - lp.first + 1;
    double per_pair = (double)per_iter / pairs;
    snprintf(buf, n,
             ", %.1f SASS instr/pair (%d per j-loop iteration of %d pairs; projected %.2g pairs/s "
             "at %.2g instr/s)",
             per_pair, per_iter, pairs, BS_ISSUE_RATE / per_pair, BS_ISSUE_RATE);
  }
  free(text);
}

void bs_static_line(const char *ptx, size_t len, const char *sm, int pairs, char *buf, size_t n) {
  char ptxas[4096];
  if (find_tool("KEOPS_PTXAS", "ptxas", "/usr/local/cuda/bin/ptxas", ptxas, sizeof ptxas)) {
    snprintf(buf, n, "static: no ptxas (KEOPS_PTXAS, PATH, /usr/local/cuda/bin/ptxas)");
    return;
  }
  const char *tmp = getenv("TMPDIR");
  char dir[4096], pfile[4200], cubin[4200], out[4200], err[4200], arch[64], msg[256];
  snprintf(dir, sizeof dir, "%s/keops-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    snprintf(buf, n, "static %s: no temporary directory (%s)", sm, strerror(errno));
    return;
  }
  snprintf(pfile, sizeof pfile, "%s/k.ptx", dir);
  snprintf(cubin, sizeof cubin, "%s/k.cubin", dir);
  snprintf(out, sizeof out, "%s/ptxas.out", dir);
  snprintf(err, sizeof err, "%s/ptxas.err", dir);
  snprintf(arch, sizeof arch, "-arch=%s", sm);
  char *argv[] = {ptxas, arch, "-v", pfile, "-o", cubin, NULL};
  bs_ptxas r;
  char *report = NULL;
  if (write_file(pfile, ptx, len)) {
    snprintf(buf, n, "static %s: cannot write %s", sm, pfile);
  } else if (run_tool(argv, out, err) != 0) {
    first_line(err, msg, sizeof msg);
    snprintf(buf, n, "static %s: ptxas failed (%s)", sm, msg);
  } else if (!(report = read_file(err, NULL)) || bs_parse_ptxas(report, "keops_kernel", &r)) {
    snprintf(buf, n, "static %s: no register count for keops_kernel in ptxas -v's report", sm);
  } else {
    int w;
    if (r.spill_stores <= 0 && r.spill_loads <= 0)
      w = snprintf(buf, n, "static %s: %d regs, 0 spills", sm, r.regs);
    else
      w = snprintf(buf, n, "static %s: %d regs, spills %d B stored, %d B loaded", sm, r.regs,
                   r.spill_stores, r.spill_loads);
    int smn = atoi(sm + (strncmp(sm, "sm_", 3) ? 0 : 3)); /* "sm_90a": 90 */
    if (w >= 0 && (size_t)w < n) sass_part(dir, cubin, smn, pairs, buf + w, n - (size_t)w);
  }
  free(report);
  const char *files[] = {"k.ptx", "k.cubin", "k.sass", "ptxas.out", "ptxas.err", "nvdisasm.err"};
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    snprintf(out, sizeof out, "%s/%s", dir, files[f]);
    unlink(out);
  }
  rmdir(dir);
}
