#!/usr/bin/env python3
"""ONNX Runtime side of the ONNX checks (notes/onnx.md).

  python scripts/onnx/check_ort.py logits DIR
      For every DIR/NAME.onnx with a DIR/NAME.json ({"input_shape", "input",
      "logits"}: cardc's own logits, written by the ignored test
      `write_ort_check_set` in tests/onnx.rs), runs the file in ONNX Runtime
      and reports the largest relative logit error (max |ort - cardc| over
      max |cardc|). Exits 1 if any file fails to load/run or exceeds --tol.

  python scripts/onnx/check_ort.py accuracy MODEL.onnx CIFAR10_DIR [--mean m,m,m --std s,s,s]
      Accuracy of MODEL.onnx in ONNX Runtime on CIFAR10_DIR/test_batch.bin
      (binary CIFAR-10: 10,000 records of 1 label byte + 3,072 CHW bytes),
      preprocessed as cardc does: (byte / 255 - mean[c]) / std[c] in float32.
      Mean/std come from the flags, else from cardc's metadata in the file,
      else CIFAR-10's. Prints a JSON line with the accuracy.

Needs: pip install onnxruntime numpy
"""

import argparse
import glob
import json
import os
import sys

import numpy as np
import onnxruntime as ort

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def check_logits(args):
    failures = 0
    rows = []
    for path in sorted(glob.glob(os.path.join(args.dir, "*.onnx"))):
        name = os.path.basename(path)[:-5]
        ref_path = path[:-5] + ".json"
        if not os.path.exists(ref_path):
            continue
        with open(ref_path) as f:
            ref = json.load(f)
        x = np.array(ref["input"], dtype=np.float32).reshape(ref["input_shape"])
        want = np.array(ref["logits"], dtype=np.float32).reshape(x.shape[0], -1)
        try:
            sess = session(path)
            inp = sess.get_inputs()[0].name
            (got,) = sess.run(None, {inp: x})
            err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))
            ok = err <= args.tol
        except Exception as e:  # noqa: BLE001 -- report any load/run failure
            err, ok = float("nan"), False
            print(f"{name}: ONNX Runtime failed: {e}", file=sys.stderr)
        failures += not ok
        rows.append((name, err, ok))
        print(f"{name:40s} max rel err {err:.2e} {'ok' if ok else 'FAIL'}")
    print(json.dumps({"files": len(rows), "failures": failures,
                      "max_rel_err": max((r[1] for r in rows), default=0.0),
                      "onnxruntime": ort.__version__}))
    return 1 if failures or not rows else 0


def read_cifar_test(root):
    raw = np.fromfile(os.path.join(root, "test_batch.bin"), dtype=np.uint8)
    rec = raw.reshape(-1, 3073)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def floats(s):
    return [float(v) for v in s.split(",")]


def check_accuracy(args):
    sess = session(args.model)
    meta = sess.get_modelmeta().custom_metadata_map
    mean = floats(args.mean) if args.mean else json.loads(meta.get("cardc.normalization.mean", "null")) or CIFAR_MEAN
    std = floats(args.std) if args.std else json.loads(meta.get("cardc.normalization.std", "null")) or CIFAR_STD
    images, labels = read_cifar_test(args.data)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    # The same float32 arithmetic as cardc's lookup tables: byte/255 - mean, / std.
    m = np.array(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.array(std, np.float32).reshape(1, 3, 1, 1)
    inp = sess.get_inputs()[0].name
    correct = 0
    for i in range(0, len(labels), args.batch):
        x = ((images[i:i + args.batch].astype(np.float32) / np.float32(255.0)) - m) / s
        (logits,) = sess.run(None, {inp: x.astype(np.float32)})
        correct += int((logits.argmax(axis=1) == labels[i:i + args.batch]).sum())
    print(json.dumps({"model": args.model, "images": len(labels), "accuracy": correct / len(labels),
                      "mean": mean, "std": std, "onnxruntime": ort.__version__}))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("logits")
    a.add_argument("dir")
    a.add_argument("--tol", type=float, default=1e-4)
    b = sub.add_parser("accuracy")
    b.add_argument("model")
    b.add_argument("data")
    b.add_argument("--mean")
    b.add_argument("--std")
    b.add_argument("--batch", type=int, default=500)
    b.add_argument("--limit", type=int)
    args = p.parse_args()
    sys.exit(check_logits(args) if args.cmd == "logits" else check_accuracy(args))


if __name__ == "__main__":
    main()
