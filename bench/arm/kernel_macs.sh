#!/usr/bin/env bash
# MACs per executed aarch64 instruction of one of cardc's matrix kernels,
# counted under qemu-aarch64 with the instruction-counting plugin
# insn_count.c (instructions executed inside each named function's
# address range, one image).
#   bench/arm/kernel_macs.sh CARDC M.card FORMAT "FUNC..." [WORKDIR]
#   FORMAT: the CARDC_* format constant of the layers counted (BINARY, XNOR)
#   FUNC:   kernel functions in targets/common/cardc_kernels.c (the entry and
#           its non-inlined helpers); a name also counts GCC's clones of it
#           (NAME.isra.0, ...), and NAME* counts every function whose name
#           starts with NAME
# e.g. bench/arm/kernel_macs.sh cardc bnn.card XNOR "xnor*"
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
syms=$(aarch64-linux-gnu-nm -S model-static | awk '$3 == "t" || $3 == "T" {print $4, $1, $2}')
for f in $funcs; do
  if [[ $f == *"*" ]]; then
    matched=$(awk -v p="${f%\*}" 'index($1, p) == 1' <<<"$syms")
  else
    matched=$(awk -v f="$f" '$1 == f || index($1, f ".") == 1' <<<"$syms")
  fi
  if [ -z "$matched" ]; then echo "no function $f in the artifact" >&2; exit 1; fi
  while read -r name lo size; do
    n=$(qemu-aarch64 -plugin "$work/insn_count.so,lo=0x$lo,hi=$((0x$lo + 0x$size))" -d plugin \
      ./model-static one.bin 2>&1 | grep -o 'insns_in_range [0-9]*' | awk '{print $2}')
    counts="$counts $name=$n"
  done <<<"$matched"
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
