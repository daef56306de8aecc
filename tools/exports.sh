#!/bin/sh
# What the libraries users link define globally: keops_* only, so that an embedder's own
# symbols cannot clash with keops's internal ones (dag_new...). Usage: tools/exports.sh
# LIBKEOPS_A LIBKEOPS_SO. Exit status 0 when both hold, 1 otherwise (offenders on stderr).
set -eu
rc=0
# nm -g --defined-only: "ADDR TYPE NAME" lines, plus "member.o:" headers for an archive
bad=$(nm -g --defined-only "$1" | awk 'NF == 3 && $3 !~ /^keops_/ { print $3 }')
if [ -n "$bad" ]; then
  echo "exports: $1 defines non-keops_ global symbols:" >&2
  echo "$bad" >&2
  rc=1
fi
n=$(nm -g --defined-only "$1" | awk 'NF == 3' | wc -l)
if [ "$n" -eq 0 ]; then
  echo "exports: $1 defines no global symbol" >&2
  rc=1
fi
# the linker's own markers (_edata, _end, __bss_start, _init, _fini) are in every shared object
bad=$(nm -D --defined-only "$2" |
  awk 'NF == 3 && $3 !~ /^keops_/ && $3 !~ /^(_edata|_end|__bss_start|_init|_fini)$/ { print $3 }')
if [ -n "$bad" ]; then
  echo "exports: $2 exports non-keops_ symbols:" >&2
  echo "$bad" >&2
  rc=1
fi
[ "$rc" -ne 0 ] || echo "exports: $n keops_* symbols, nothing else"
exit "$rc"
