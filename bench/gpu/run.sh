#!/usr/bin/env bash
# GPU benchmarks of the wgpu backend against PyTorch on the same GPU, in one
# run (issue: GPU training backend). Runs on the lent H100/H200 machine from
# the repository root, with the release binary (xz) and a CIFAR-10 subset in
# .dev/ and the Vulkan loader's .deb files in .gl/ (see BENCHMARKS.md, "GPU
# training"). Results go to $OUT (or ./gpu-out).
#
#   bash bench/gpu/run.sh [quick]    (quick: fp32 throughput only)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
xz -dc .dev/cardc.xz >/tmp/cardc && chmod +x /tmp/cardc
C=/tmp/cardc
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__)' | tee -a "$OUT/gpu.txt"

steps=${STEPS:-20}
for arch in resnet20 conv8 resnet18; do
  echo "== $arch batch 256"
  timeout 60 $C bench train --arch "$arch" --batch 256 --backend wgpu --steps "$steps" --repeats 3 --json \
    >"$OUT/cardc_$arch.json" 2>"$OUT/cardc_$arch.err"
  tail -2 "$OUT/cardc_$arch.err"
  timeout 120 python3 bench/gpu/torch_bench.py throughput --arch "$arch" --batch 256 --steps "$steps" \
    | tee "$OUT/torch_$arch.json"
  [ "${1:-}" = quick ] && continue
  timeout 120 python3 bench/gpu/torch_bench.py throughput --arch "$arch" --batch 256 --steps "$steps" --bf16 \
    | tee "$OUT/torch_bf16_$arch.json"
done
echo "== where a ResNet-20 step goes (one dispatch at a time)"
CARDC_GPU_PROFILE=1 timeout 60 $C bench train --arch resnet20 --batch 256 --backend wgpu --steps 1 --repeats 1 \
  2>&1 | grep -v XDG_RUNTIME | tee "$OUT/profile_resnet20.txt" | tail -14
[ "${1:-}" = quick ] && exit 0

echo "== end to end: ResNet-20, 30 epochs on .dev/c10 (10,000 train / 5,000 test)"
t0=$(date +%s.%N)
timeout 400 $C train --arch resnet20 --data cifar10:.dev/c10 --epochs 30 --batch 128 --lr 0.1 \
  --backend wgpu --out /tmp/r20.card --json >"$OUT/cardc_train.json" 2>"$OUT/cardc_train.err"
t1=$(date +%s.%N)
echo "cardc wall $(python3 -c "print(round($t1 - $t0, 1))") s" | tee "$OUT/cardc_train_wall.txt"
tail -3 "$OUT/cardc_train.err"
t0=$(date +%s.%N)
timeout 300 python3 bench/gpu/torch_bench.py train --data .dev/c10 --epochs 30 --batch 128 \
  | tee "$OUT/torch_train.json"
t1=$(date +%s.%N)
echo "pytorch wall $(python3 -c "print(round($t1 - $t0, 1))") s" | tee "$OUT/torch_train_wall.txt"
