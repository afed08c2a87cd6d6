#!/usr/bin/env bash
# Installs what ringmaster's build, tests and demo need on a fresh Debian machine
# (idempotent: a machine that has everything is left untouched), then builds the
# pinned control plane into its cache. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

APT_PACKAGES=(postgresql redis-server python3 make gcc pkg-config ca-certificates procps iproute2)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # The packages start system-wide servers; ringmaster starts its own.
  for svc in redis-server postgresql; do
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

command -v go >/dev/null || { echo "Go >= 1.24 is required to build the control plane" >&2; exit 1; }
command -v cargo >/dev/null || { echo "Rust (cargo) >= 1.89 is required" >&2; exit 1; }
if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

log "control plane (built once, then cached)"
e2e/k8s/build.sh >/dev/null
