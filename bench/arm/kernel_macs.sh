#!/usr/bin/env bash
# MACs per executed aarch64 instruction of one of cardc's matrix kernels,
# counted under qemu-aarch64 with the instruction-counting plugin
# insn_count.c (instructions executed inside each named function's
# address range, one image).
#   bench/arm/kernel_macs.sh CARDC M.card FORMAT "FUNC..." [WORKDIR]
#   FORMAT: the CARDC_* format constant of the layers counted (BINARY, XNOR)
#   FUNC:   kernel functions in targets/common/cardc_kernels.c; the first is
#           the kernel's entry, the others its non-inlined helpers
# e.g. bench/arm/kernel_macs.sh cardc bnn.card XNOR "xnor xnor_block xnor_pack_input"
#      bench/arm/kernel_macs.sh cardc bp50.card BINARY binary
set -euo pipefail
cardc=$1 card=$2 format=$3 funcs=$4 work=${5:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
cc -shared -fPIC -O2 -o "$work/insn_count.so" "$here/insn_count.c"
"$cardc" compile --model "$card" --target arm --out "$work/art" >/dev/null 2>&1
cd "$work/art"
# Static and not position-independent, so the kernels' addresses are nm's.
aarch64-linux-gnu-gcc -std=c99 -O3 -ffp-contract=fast -march=armv8-a -static -no-pie \
  -o model-static main.c model.c cardc_kernels.c -lm
head -c "$(python3 -c 'import json;print(json.load(open("report.json"))["input_bytes"])')" /dev/urandom > one.bin
counts=""
for f in $funcs; do
  read -r lo size < <(aarch64-linux-gnu-nm -S model-static | awk -v f="$f" '$4 == f {print $1, $2}') || true
  if [ -z "${lo:-}" ]; then echo "no function $f in the artifact" >&2; exit 1; fi
  n=$(qemu-aarch64 -plugin "$work/insn_count.so,lo=0x$lo,hi=$((0x$lo + 0x$size))" -d plugin \
    ./model-static one.bin 2>&1 | grep -o 'insns_in_range [0-9]*' | awk '{print $2}')
  counts="$counts $f=$n"
  lo=""
done
python3 - "CARDC_$format" $counts <<'PY'
import json, re, sys
fmt, counts = sys.argv[1], dict(a.split("=") for a in sys.argv[2:])
counts = {k: int(v) for k, v in counts.items()}
rep = json.load(open("report.json"))
# The layers that run this kernel: their format constant in model.c, in order.
fmts = re.findall(r"\.format = (CARDC_[A-Z0-9_]+)", open("model.c").read())
dense = kept = 0
for layer, f in zip(rep["layers"], fmts):
    if f == fmt:
        dense += layer["macs"]
        kept += layer["macs"] * (1 - layer["zero_fraction"])
total = sum(counts.values())
print(json.dumps({
    "format": fmt,
    "instructions": counts,
    "kernel_instructions": total,
    "binary_macs": dense,
    "kept_binary_macs": round(kept),
    "binary_macs_per_instruction": round(dense / total, 3),
    "kept_macs_per_instruction": round(kept / total, 3),
}))
PY
