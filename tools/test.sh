#!/usr/bin/env bash
# Installs what is missing (Debian 12), then builds and runs every test twice: a Release build
# in build/, and a Debug build with AddressSanitizer + UndefinedBehaviorSanitizer in
# build-asan/; then the concurrency suite(s) once more under ThreadSanitizer in build-tsan/
# (only those are built there, to keep CI short); then the libFuzzer harness (clang-19,
# build-fuzz/) for KEOPS_FUZZ_SECONDS (default 60; 0 skips it) over tests/fuzz/corpus. Ends
# with one summary line; the exit status is 0 only when everything passed. Safe to run again
# (incremental). After the Release tests, the consumer projects of tests/consumers/ build
# against build/'s installed tree; `tools/test.sh --consumers` runs that step alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/common.sh

step="setup"
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "test.sh: FAIL during: $step (exit status $rc)"' EXIT

# Runs the suite of a configured, built tree; prints the number of tests into $2.
run_tests() {
  local dir=$1
  # compiled kernels go to the build tree's own disk cache, not the user's ~/.cache
  KEOPS_CACHE_DIR="$PWD/$dir/kernel-cache" ctest --test-dir "$dir" --output-on-failure -j "$(nproc)"
  printf -v "$2" '%s' "$(ctest --test-dir "$dir" -N | sed -n 's/^Total Tests: //p')"
}

# LeakSanitizer stops the process with ptrace-like calls that some containers forbid; it then
# fails every test with "LeakSanitizer has encountered a fatal error". Probe once, so that
# leaks are checked wherever they can be and a restricted machine still runs the rest.
leak_check_works() {
  local tmp ok=1
  tmp=$(mktemp -d)
  printf '#include <stdlib.h>\nvoid *p;\nint main(void) { p = malloc(7); p = 0; return 0; }\n' \
    >"$tmp/p.c"
  if cc -fsanitize=address -o "$tmp/p" "$tmp/p.c" 2>/dev/null; then
    # a working LeakSanitizer reports the leak; a restricted one dies with a fatal error
    ASAN_OPTIONS=detect_leaks=1 "$tmp/p" >/dev/null 2>"$tmp/err" || true
    grep -q 'LeakSanitizer: detected memory leaks' "$tmp/err" || ok=0
  else
    ok=0
  fi
  rm -rf "$tmp"
  [ "$ok" -eq 1 ]
}

# ThreadSanitizer needs the address-space layout it was built for; on kernels with more mmap
# randomisation it dies at start ("FATAL: ThreadSanitizer: unexpected memory mapping"). Prints
# the command prefix that makes a TSan program run here: nothing, or setarch -R (no ASLR);
# fails when neither works.
tsan_prefix() {
  local tmp ok=1 prefix
  tmp=$(mktemp -d)
  printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) {\n  pthread_t t;\n  return pthread_create(&t, 0, f, 0) || pthread_join(t, 0);\n}\n' \
    >"$tmp/p.c"
  if cc -fsanitize=thread -pthread -o "$tmp/p" "$tmp/p.c" 2>/dev/null; then
    if "$tmp/p" >/dev/null 2>&1; then
      prefix=""
    elif setarch "$(uname -m)" -R "$tmp/p" >/dev/null 2>&1; then
      prefix="setarch $(uname -m) -R"
    else
      ok=0
    fi
  else
    ok=0
  fi
  rm -rf "$tmp"
  [ "$ok" -eq 1 ] && printf '%s' "$prefix"
}

# Installs build/ into build/consumers/prefix and builds and runs, against it, the consumer
# projects of tests/consumers/: a C program through pkg-config, a C++17 project through
# find_package(keops 0.3 CONFIG) (shared and static), and one through add_subdirectory (which
# compiles the library once more, in Release). Each checks a small Gaussian sum against a loop;
# the find_package project also builds and runs examples/nbody.cpp (forces, neighbours and
# energy drift checked against double loops).
consumer_tests() {
  local dir=$PWD/build/consumers prefix=$PWD/build/consumers/prefix
  rm -rf "$dir"
  mkdir -p "$dir/c-pkgconfig"
  cmake --install build --prefix "$prefix" >"$dir/install.log"
  export KEOPS_CACHE_DIR=off
  # shellcheck disable=SC2046 # pkg-config's output is a list of arguments
  cc -std=c11 -O2 -Wall -Wextra -Werror -Itests/consumers -o "$dir/c-pkgconfig/consumer" \
    tests/consumers/c-pkgconfig/main.c \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs keops) -lm
  LD_LIBRARY_PATH="$prefix/lib" "$dir/c-pkgconfig/consumer"
  cmake -S tests/consumers/cxx-cmake -B "$dir/cxx-cmake" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" >"$dir/cxx-cmake.log"
  keops_build "$dir/cxx-cmake" >>"$dir/cxx-cmake.log"
  "$dir/cxx-cmake/consumer" cxx-cmake
  "$dir/cxx-cmake/consumer_static" cxx-cmake-static
  "$dir/cxx-cmake/nbody"
  cmake -S tests/consumers/subdir -B "$dir/subdir" -DCMAKE_BUILD_TYPE=Release \
    -DKEOPS_SOURCE_DIR="$PWD" >"$dir/subdir.log"
  keops_build "$dir/subdir" >>"$dir/subdir.log"
  "$dir/subdir/consumer" subdir
  unset KEOPS_CACHE_DIR
}

# tools/test.sh --consumers: the Release build and the consumer step alone.
KEOPS_PACKAGES+=("${KEOPS_CONSUMER_PACKAGES[@]}")
if [ "${1:-}" = --consumers ]; then
  step="Release build (build/)"
  keops_install_packages
  keops_configure build -DCMAKE_BUILD_TYPE=Release
  keops_build build
  step="consumer projects"
  keops_log "$step"
  consumer_tests
  step="done"
  echo "test.sh: PASS (consumer projects)"
  exit 0
fi

fuzz_secs=${KEOPS_FUZZ_SECONDS:-60}
step="installing packages"
[ "$fuzz_secs" -eq 0 ] || KEOPS_PACKAGES+=("${KEOPS_FUZZ_PACKAGES[@]}")
keops_install_packages

step="Release build (build/)"
keops_log "$step"
keops_configure build -DCMAKE_BUILD_TYPE=Release
keops_build build
step="Release tests"
keops_log "$step"
run_tests build release_count
step="consumer projects"
keops_log "$step (install, pkg-config, find_package, add_subdirectory)"
consumer_tests

step="ASan+UBSan build (build-asan/)"
keops_log "$step"
keops_configure build-asan -DCMAKE_BUILD_TYPE=Debug -DKEOPS_SANITIZE=ON
keops_build build-asan
step="ASan+UBSan tests"
leaks=1
if ! leak_check_works; then
  leaks=0
  keops_log "warning: LeakSanitizer cannot run here (ptrace restricted): leak checks are off"
fi
keops_log "$step (detect_leaks=$leaks)"
export ASAN_OPTIONS="detect_leaks=$leaks:halt_on_error=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
run_tests build-asan asan_count
unset ASAN_OPTIONS UBSAN_OPTIONS

# ThreadSanitizer: only the suites named *concurrency* (test name = target name) are built and
# run; libLLVM is not instrumented, and tests/tsan.supp lists the reports inside LLVM that are
# not ours (never our own code).
step="TSan build (build-tsan/)"
keops_log "$step"
if ! prefix=$(tsan_prefix); then
  echo "error: ThreadSanitizer programs cannot run on this machine (even with ASLR off)" >&2
  exit 1
fi
keops_configure build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEOPS_TSAN=ON
mapfile -t tsan_targets < <(ctest --test-dir build-tsan -N -R concurrency |
  sed -n 's/^ *Test *#[0-9]*: *//p')
if [ "${#tsan_targets[@]}" -eq 0 ]; then
  echo "error: no concurrency test in build-tsan/" >&2
  exit 1
fi
keops_build build-tsan --target "${tsan_targets[@]}"
step="TSan tests"
keops_log "$step (${tsan_targets[*]}${prefix:+, under $prefix})"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
# shellcheck disable=SC2086 # the prefix is a command and its arguments
KEOPS_CACHE_DIR="$PWD/build-tsan/kernel-cache" $prefix ctest --test-dir build-tsan --output-on-failure -R concurrency
tsan_count=$(ctest --test-dir build-tsan -N -R concurrency | sed -n 's/^Total Tests: //p')

# libFuzzer: the harness tests/fuzz/fuzz_keops.c over the committed seed corpus and dictionary;
# new inputs go to a temporary directory (the committed corpus stays as it is), a crash input
# is kept there and the script fails. Compile time is report-only here: a create + first run
# over the bound (1 s uninstrumented, times the harness's slowdown factor; see fuzz_keops.c)
# is listed, not failed, so that a slow or loaded machine cannot fail CI for time alone
# (KEOPS_FUZZ_COMPILE_REPORT=0 makes it fatal).
fuzz_note=""
if [ "$fuzz_secs" -gt 0 ]; then
  step="fuzz build (build-fuzz/)"
  keops_log "$step"
  keops_configure build-fuzz -DCMAKE_C_COMPILER=clang-19 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEOPS_FUZZ=ON
  keops_build build-fuzz --target keops_fuzz
  step="fuzzing"
  fuzz_dir=$(mktemp -d)
  mkdir "$fuzz_dir/new"
  keops_log "$step ($fuzz_secs s, new inputs in $fuzz_dir/new)"
  if ! KEOPS_FUZZ_COMPILE_REPORT=${KEOPS_FUZZ_COMPILE_REPORT:-1} \
    ASAN_OPTIONS="detect_leaks=$leaks:halt_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    build-fuzz/tests/keops_fuzz -dict=tests/fuzz/keops.dict -max_total_time="$fuzz_secs" -timeout=60 \
    -rss_limit_mb=4096 -max_len=2048 -print_final_stats=1 -artifact_prefix="$fuzz_dir/" \
    "$fuzz_dir/new" tests/fuzz/corpus >"$fuzz_dir/log" 2>&1; then
    tail -n 100 "$fuzz_dir/log"
    echo "error: the fuzzer found a crash; the input and the log are in $fuzz_dir" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$fuzz_dir/log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$fuzz_dir/log")
  grep -A1 '^keops_fuzz: slow compile' "$fuzz_dir/log" || true
  grep '^keops_fuzz: [0-9]* inputs' "$fuzz_dir/log" || true
  slow=$(grep -c '^keops_fuzz: slow compile' "$fuzz_dir/log" || true)
  keops_log "fuzzing: $execs inputs, $rate exec/s, no crash, $slow slow compiles"
  fuzz_note=", fuzzed ${fuzz_secs} s: $execs inputs at $rate exec/s, $slow slow compiles"
  rm -rf "$fuzz_dir"
fi

step="done"
leak_note=""
[ "$leaks" -eq 1 ] || leak_note=", leak checks off"
echo "test.sh: PASS ($release_count tests in Release, 5 consumer programs, $asan_count under ASan+UBSan$leak_note," \
  "$tsan_count under TSan$fuzz_note)"
