#!/bin/sh
# The module graph of the library's object files: "A B" when A.o uses a symbol B.o defines.
# Checks that it has no cycles (tsort) and that runtime/cuda.o, the driver layer, uses
# nothing from compiler/. Usage: tools/modgraph.sh OBJDIR [--print]
# (OBJDIR: the keops_obj object directory, e.g. build/CMakeFiles/keops_obj.dir). Exit status
# 0 when both hold, 1 otherwise (with the cycle or the offending edges on stderr).
set -eu
dir=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# module name = the object's path below OBJDIR without .c.o (compiler/dag, runtime/cuda ...)
find "$dir" -name '*.c.o' | sort | while read -r o; do
  m=${o#"$dir"/}
  m=${m%.c.o}
  nm --defined-only -g "$o" | awk -v m="$m" 'NF == 3 { print $3, m }' >>"$tmp/defs"
  nm -u "$o" | awk -v m="$m" '{ print $2, m }' >>"$tmp/uses"
done
sort -k1,1 "$tmp/defs" >"$tmp/defs.s"
sort -k1,1 "$tmp/uses" >"$tmp/uses.s"
# join on the symbol: "symbol definer user" -> "user definer"
join "$tmp/defs.s" "$tmp/uses.s" | awk '$2 != $3 { print $3, $2 }' | sort -u >"$tmp/edges"
[ "${2:-}" = --print ] && cat "$tmp/edges"
rc=0
if ! tsort "$tmp/edges" >/dev/null 2>"$tmp/loop"; then
  echo "modgraph: the module graph has a cycle:" >&2
  cat "$tmp/loop" >&2
  rc=1
fi
if grep -E '^runtime/cuda compiler/' "$tmp/edges" >"$tmp/bad"; then
  echo "modgraph: the driver layer (runtime/cuda) uses compiler/ modules:" >&2
  cat "$tmp/bad" >&2
  rc=1
fi
exit $rc
