#!/usr/bin/env bash
# Binary MACs per executed aarch64 instruction of cardc's binary conv
# kernel (`binary` in targets/common/cardc_kernels.c), counted under
# qemu-aarch64 with the instruction-counting plugin insn_count.c.
#   bench/arm/binary_macs.sh CARDC M.card [WORKDIR]
# M.card should have binary layers dense enough for the bit kernel (sparse
# binary layers go to the offset-list kernel and are left out of the count).
set -euo pipefail
cardc=$1 card=$2 work=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
cc -shared -fPIC -O2 -o "$work/insn_count.so" "$here/insn_count.c"
"$cardc" compile --model "$card" --target arm --out "$work/art" >/dev/null 2>&1
cd "$work/art"
# Static and not position-independent, so the kernel's address is nm's.
aarch64-linux-gnu-gcc -std=c99 -O3 -ffp-contract=fast -march=armv8-a -static -no-pie \
  -o model-static main.c model.c cardc_kernels.c -lm
read -r lo size < <(aarch64-linux-gnu-nm -S model-static | awk '$4 == "binary" {print $1, $2}')
head -c "$(python3 -c 'import json;print(json.load(open("report.json"))["input_bytes"])')" /dev/urandom > one.bin
count=$(qemu-aarch64 -plugin "$work/insn_count.so,lo=0x$lo,hi=$((0x$lo + 0x$size))" -d plugin \
  ./model-static one.bin 2>&1 | grep -o 'insns_in_range [0-9]*' | awk '{print $2}')
python3 - "$count" <<'PY'
import json, re, sys
insns = int(sys.argv[1])
rep = json.load(open("report.json"))
# Layers the bit kernel runs: format CARDC_BINARY in model.c, in order.
fmts = re.findall(r"\.format = (CARDC_[A-Z0-9_]+)", open("model.c").read())
dense = kept = 0
for layer, f in zip(rep["layers"], fmts):
    if f == "CARDC_BINARY":
        dense += layer["macs"]
        kept += layer["macs"] * (1 - layer["zero_fraction"])
print(json.dumps({
    "binary_kernel_instructions": insns,
    "binary_macs": dense,
    "kept_binary_macs": round(kept),
    "binary_macs_per_instruction": round(dense / insns, 3),
    "kept_macs_per_instruction": round(kept / insns, 3),
}))
PY
