#!/usr/bin/env bash
# The test command of cardc (README, CI): formatting, lints, then the whole
# test suite. Installs what the suite needs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the suite needs, installed when missing and running as root:
# cross compilers and QEMU for the compiled artifacts, and the Vulkan loader
# with lavapipe (mesa-vulkan-drivers) for the wgpu backend's tests, which run
# on that CPU implementation of Vulkan where there is no GPU.
PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm libvulkan1 mesa-vulkan-drivers)
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

# The in-process GPU tests start Vulkan, whose libwayland prints "error:
# XDG_RUNTIME_DIR is invalid" when the variable is unset (as the cardc
# binary avoids in its main): give it the temporary directory.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}"

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets

# Fuzzing (RELIABILITY.md §3). On every run, the suite above replays the
# fuzz corpora and every crash the fuzzers found, and fuzzes each target's
# entry point for a bounded number of mutated inputs with a deterministic,
# stable-Rust mutator (tests/suite/fuzz_smoke.rs; ~10 s per target).
# A bounded libFuzzer run of each target is opt-in, because its cold cost
# (installing cargo-fuzz and an instrumented release build of cardc with
# tract) is over the CI budget:
#   CARDC_FUZZ_SECONDS=60 ./test.sh
# Only the stable toolchain is assumed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass its -Z flags. New inputs go to a scratch corpus, not the committed one.
if [ "${CARDC_FUZZ_SECONDS:-0}" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
  for t in card_decode cifar_reader deck_decode npy_reader onnx_import; do
    scratch=$(mktemp -d)
    RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$t" "$scratch" "fuzz/corpus/$t" -- \
      -max_total_time="$CARDC_FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 -max_len=65536
    rm -rf "$scratch"
  done
fi
