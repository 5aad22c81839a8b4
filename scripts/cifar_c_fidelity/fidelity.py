#!/usr/bin/env python3
"""Fidelity and speed of `cardc corrupt` against the reference CIFAR-10-C
generator (make_cifar_c.py of hendrycks/robustness, which is NOT part of
cardc: pass the path of your own copy).

For the first N CIFAR-10 test images (binary version) it runs the reference
corruptions (timed), optionally runs `cardc corrupt` on the same images in
the same run (timed), and prints the mean PSNR (vs clean) of every
(corruption, severity) cell for both, with the difference.

The reference is old code; it is patched in memory for current libraries
(scipy.ndimage imports, skimage channel_axis, numpy 2), its torch driver is
dropped, and frost reads the textures in --frost-dir (e.g. cardc's
procedural ones: `cardc corrupt --write-frost-textures DIR`), without the
reference's 0.2 resize when --frost-no-resize is given (cardc's procedural
textures are already at their final scale).

Needs: numpy scipy scikit-image opencv-python-headless wand Pillow and the
ImageMagick 6 library (Debian: libmagickwand-6.q16-6).

Example:
  python fidelity.py --reference make_cifar_c.py --cifar data/cifar10 \
      --cardc-out /tmp/cc --cardc-bin target/release/cardc \
      --frost-dir /tmp/frost --frost-no-resize --n 1000
"""
import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image

NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
         "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
         "elastic_transform", "pixelate", "jpeg_compression"]
# Tolerance per cell (dB): frost and snow carry more randomness per image.
TOL = {"frost": 2.0, "snow": 2.0}
# Corruptions without randomness: their bytes can be compared directly.
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


def load_cifar_test(cifar_dir, n):
    raw = np.fromfile(os.path.join(cifar_dir, "test_batch.bin"), dtype=np.uint8)
    rec = raw.reshape(-1, 3073)[:n]
    labels = rec[:, 0]
    imgs = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return imgs, labels


def load_reference(path, frost_files, no_resize):
    src = open(path).read()
    src = src.split("import collections\n\nprint('Using CIFAR-10 data')")[0]
    src = re.sub(r"^import torch.*$", "", src, flags=re.M)
    src = src.replace("from scipy.ndimage.interpolation import map_coordinates",
                      "from scipy.ndimage import map_coordinates")
    src = src.replace("multichannel=True", "channel_axis=-1")
    src = src.replace("np.float_", "np.float64")
    src = src.replace("np.fromstring(", "np.frombuffer(")
    src = re.sub(r"filename = \[.*?\]\[idx\]", "filename = FROST_FILES[idx % len(FROST_FILES)]", src)
    if no_resize:
        src = src.replace("frost = cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)", "pass")
    ns = {"FROST_FILES": frost_files, "__name__": "reference"}
    exec(compile(src, path, "exec"), ns)
    return ns


def psnr_mean(clean, bad):
    d = clean.astype(np.float64) - bad.astype(np.float64)
    mse = np.maximum((d ** 2).reshape(len(clean), -1).mean(axis=1), 1e-10)
    return float(np.mean(10 * np.log10(255.0 ** 2 / mse)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="path of make_cifar_c.py")
    ap.add_argument("--cifar", required=True, help="CIFAR-10 binary directory (test_batch.bin)")
    ap.add_argument("--cardc-out", required=True, help="cardc corrupt output directory")
    ap.add_argument("--cardc-bin", help="run this cardc binary first (timed) to make --cardc-out")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--frost-dir", required=True, help="frost textures for the reference")
    ap.add_argument("--frost-no-resize", action="store_true")
    ap.add_argument("--ref-out", help="save the reference's arrays here (npy, CIFAR-10-C layout)")
    args = ap.parse_args()

    imgs, _ = load_cifar_test(args.cifar, args.n)
    n = len(imgs)
    cardc_seconds = None
    if args.cardc_bin:
        t = time.time()
        subprocess.run([args.cardc_bin, "corrupt", "--data", "cifar10:" + args.cifar, "--out", args.cardc_out,
                        "--limit", str(n)], check=True)
        cardc_seconds = time.time() - t

    frost_files = sorted(os.path.join(args.frost_dir, f) for f in os.listdir(args.frost_dir)
                         if f.lower().endswith((".png", ".jpg", ".jpeg")))
    ref = load_reference(args.reference, frost_files, args.frost_no_resize)
    np.random.seed(0)
    rows = []
    t_ref = time.time()
    for name in NAMES:
        fn = ref[name]
        cells = []
        for sev in range(1, 6):
            out = np.stack([np.uint8(fn(Image.fromarray(im), sev)) for im in imgs])
            cells.append(out)
        ref_all = np.concatenate(cells)
        if args.ref_out:
            os.makedirs(args.ref_out, exist_ok=True)
            np.save(os.path.join(args.ref_out, name + ".npy"), ref_all)
        ours = np.load(os.path.join(args.cardc_out, name + ".npy"), mmap_mode="r")
        per = len(ours) // 5
        if per < n:
            sys.exit(f"{name}.npy has {per} images per severity, fewer than {n}")
        for sev in range(5):
            r = psnr_mean(imgs, cells[sev])
            c = psnr_mean(imgs, np.asarray(ours[sev * per: sev * per + n]))
            rows.append((name, sev + 1, r, c))
        if name in DETERMINISTIC:
            mine = np.asarray(ours[:]).reshape(5, per, 32, 32, 3)[:, :n].reshape(-1, 32, 32, 3)
            diff = np.abs(mine.astype(int) - ref_all.astype(int))
            print(f"{name}: same bytes {np.mean(diff == 0):.4f}, max |diff| {diff.max()}", flush=True)
    ref_seconds = time.time() - t_ref

    print(f"{'corruption':18} sev  ref PSNR  cardc PSNR   delta  ok")
    misses = 0
    for name, sev, r, c in rows:
        ok = abs(c - r) <= TOL.get(name, 1.0)
        misses += not ok
        print(f"{name:18} {sev:3} {r:9.2f} {c:11.2f} {c - r:+7.2f}  {'yes' if ok else 'NO'}")
    print(f"cells within tolerance: {len(rows) - misses}/{len(rows)}")
    print(f"reference: {ref_seconds:.1f} s for {n} images x 75 cells")
    if cardc_seconds is not None:
        print(f"cardc: {cardc_seconds:.1f} s (incl. loading), speed-up {ref_seconds / cardc_seconds:.1f}x")


if __name__ == "__main__":
    main()
