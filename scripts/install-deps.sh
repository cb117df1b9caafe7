#!/usr/bin/env bash
# Install the Debian packages qwave needs. Idempotent: does nothing when
# everything is present.
#   scripts/install-deps.sh          build, unit/integration tests, fuzzing
#   scripts/install-deps.sh --bench  also what the benchmarks compare against
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libssl-dev libevent-dev libjansson-dev libsqlite3-dev
  libcurl4-openssl-dev libcmocka-dev libinih-dev
  curl openssl python3 jq
  clang libclang-rt-14-dev   # libFuzzer targets (tests/fuzz)
  chromium                   # headless dashboard test (tests/integration)
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(nginx-light)    # baseline of qwave bench etsi014
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
