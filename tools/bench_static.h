/* keops-bench's static figure of a GPU kernel (bench_static.c): the CUDA toolkit's ptxas
 * assembles the kernel's PTX (registers, spills), nvdisasm disassembles the cubin, and the
 * instructions of the j loop are counted, as the sass-stats script does. The parsers are
 * separate from the running of the tools, so that tests feed them canned text. */
#ifndef KEOPS_BENCH_STATIC_H
#define KEOPS_BENCH_STATIC_H

#include <stddef.h>

/* What `ptxas -v` says of one entry function; -1 where it says nothing. */
typedef struct bs_ptxas {
  int regs, spill_stores, spill_loads; /* registers; bytes of spill stores and loads */
} bs_ptxas;

/* Reads `ptxas -v`'s report (its stderr) for the entry function `kernel`. 0 when the function
 * and its register count were found, else -1. */
int bs_parse_ptxas(const char *text, const char *kernel, bs_ptxas *out);

/* The j loop in nvdisasm's SASS of `kernel`: the innermost loop (a backward BRA to a label at
 * or before it) that holds no barrier (no instruction containing "BAR"), the longest if there
 * are several. Instruction indices count from the kernel's first instruction. */
typedef struct bs_loop {
  int ninstr, nloops; /* the kernel's instructions and backward branches */
  int first, last;    /* the loop's first and last (its BRA) instruction; -1: none found */
} bs_loop;

/* 0 when the kernel's text was found (out->first < 0 if it has no barrier-free loop), else
 * -1. */
int bs_parse_sass(const char *sass, const char *kernel, bs_loop *out);

/* The static line of the kernel `keops_kernel` in ptx (len bytes) for sm ("sm_90"): registers,
 * spills, SASS instructions of the j loop per pair (pairs: the pairs one iteration handles)
 * and the throughput that projects at BS_ISSUE_RATE; or why some of it is missing. Never
 * fails: the line says what went wrong. */
#define BS_ISSUE_RATE 3.3e13 /* SASS instructions per second an H100/H200 issues, all SMs */
void bs_static_line(const char *ptx, size_t len, const char *sm, int pairs, char *buf, size_t n);

#endif
