#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds keops (Release, into build/) with keops-dump
# (build/tools/keops-dump, which the README shows) and runs the seed example: the KeOps
# sum-reduction tutorial and its gradient, checked against plain loops.
# Arguments go to the example (auto, cpu or reference: the backend). Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/common.sh

keops_install_packages
keops_log "configuring build/ (Release)"
keops_configure build -DCMAKE_BUILD_TYPE=Release
keops_log "building the seed example and keops-dump"
keops_build build --target seed keops-dump
keops_log "running build/examples/seed $*"
build/examples/seed "$@"
