#!/usr/bin/env bash
# The test command of cardc (README, CI): formatting, lints, then the whole
# test suite. Installs what the suite needs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the suite needs, installed when missing and running as root.
# (The GPU backend's lavapipe and the compiler's cross toolchains join this
# list when those milestones land.)
PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
fi

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
