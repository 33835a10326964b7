#!/usr/bin/env bash
# Installs what building and testing raftq needs and a fresh Debian/Ubuntu
# machine may lack: a C++ compiler and libclang (RocksDB's build uses
# bindgen), libfaketime (the clock-jump fault test moves one node's
# wall clock with it) and Chromium (the web console's tests drive it).
# Safe to run again: it installs only what is missing.
set -euo pipefail

# libclang itself (libclang.so / libclang-14.so), not libclang-cpp, which
# some images ship alone and which bindgen cannot use.
have_libclang() {
  ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so' && return 0
  compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null
}

missing=()
have_libclang || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
compgen -G '/usr/lib/*/faketime/libfaketimeMT.so.1' >/dev/null || missing+=(faketime)
[ -n "${RAFTQ_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
