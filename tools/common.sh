# Shared by tools/demo.sh and tools/test.sh (sourced, not run): installs what a fresh Debian 12
# machine lacks and configures/builds a tree. Callers use `set -euo pipefail`.

# What the build needs. libc6-dev is listed because gcc only recommends it and we install
# without recommends; llvm-19-dev is in Debian 12 main (12.10 and later) and pulls libz3-dev,
# libxml2-dev and libffi-dev itself. LLVM's cmake config looks for zstd without requiring it;
# libzstd-dev is listed because linking LLVM statically (llvm-config --link-static) needs it.
KEOPS_PACKAGES=(cmake gcc libc6-dev make pkg-config llvm-19-dev check libzstd-dev zlib1g-dev)
# What tools/test.sh's fuzzing step adds: clang (libFuzzer is part of it) and its runtime
# libraries (libFuzzer, ASan, UBSan), from the same Debian 12 LLVM 19 packages.
# shellcheck disable=SC2034 # used by tools/test.sh
KEOPS_FUZZ_PACKAGES=(clang-19 libclang-rt-19-dev)
# What tools/test.sh's consumer projects add: a C++ compiler (tests/consumers/ holds C++17
# projects; the library itself is C).
# shellcheck disable=SC2034 # used by tools/test.sh
KEOPS_CONSUMER_PACKAGES=(g++)

keops_log() { printf '==> %s\n' "$*"; }

# The packages of KEOPS_PACKAGES that are not installed, one per line.
keops_missing_packages() {
  local p
  for p in "${KEOPS_PACKAGES[@]}"; do
    # dpkg -s also succeeds for removed-but-configured packages: ask for the real state.
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
  done
}

keops_install_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    keops_log "not a Debian system: make sure these (or equivalents) are installed: ${KEOPS_PACKAGES[*]}"
    return 0
  fi
  local missing
  mapfile -t missing < <(keops_missing_packages)
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "error: missing packages: ${missing[*]}" >&2
      echo "install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
      return 1
    fi
  fi
  keops_log "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
}

# keops_configure DIR CMAKE_ARGS...: configures the repository (the cwd) into DIR. A DIR
# configured from another source tree (a copied checkout) is started afresh.
keops_configure() {
  local dir=$1
  shift
  if [ -f "$dir/CMakeCache.txt" ] &&
    ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$PWD" "$dir/CMakeCache.txt"; then
    keops_log "$dir was configured for another source tree: removing it"
    rm -rf "$dir"
  fi
  cmake -S . -B "$dir" "$@"
}

keops_build() { cmake --build "$1" -j "$(nproc)" "${@:2}"; }
