#!/usr/bin/env python3
"""Trains a CIFAR-style ResNet-20 in PyTorch (CPU) and exports it to ONNX,
for the import check in notes/onnx.md (`cardc import` of a real PyTorch
export, then `cardc eval` against ONNX Runtime on the same test images).

The network is cardc's `models/resnet20.toml`: 3x3 stem (16), three stages
of three basic blocks (16, 32, 64 channels; stride 1, 2, 2), 1x1-conv + BN
projection shortcuts where the shape changes, global average pooling, a
linear classifier. A short run (a few minutes on 2 cores) is enough: the
check compares two runtimes, not accuracy with the literature.

  python scripts/onnx/train_resnet20_torch.py --data /path/cifar10 \
      --out resnet20_torch.onnx [--steps 600 --batch 128 --opset 13]

Needs: pip install torch numpy (CPU is fine), and onnx + onnxscript for
the exporter.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for b in range(3):
                layers.append(Block(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def read_batches(root, names):
    recs = [np.fromfile(os.path.join(root, n), dtype=np.uint8).reshape(-1, 3073) for n in names]
    rec = np.concatenate(recs)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def normalize(images):
    return torch.from_numpy(((images.astype(np.float32) / np.float32(255.0)) - MEAN) / STD)


def augment(x, rng):
    """Random crop (4-pixel zero padding) and horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    out = torch.empty_like(x)
    dy, dx, flip = rng.integers(0, 9, n), rng.integers(0, 9, n), rng.random(n) < 0.5
    for i in range(n):
        img = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = img.flip(2) if flip[i] else img
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--opset", type=int, default=13)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=20.0,
                   help="stop training early (and still export) after this long")
    p.add_argument("--torch-eval", action="store_true", help="also report torch's own test accuracy")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)

    images, labels = read_batches(a.data, [f"data_batch_{i}.bin" for i in range(1, 6)])
    model = ResNet20()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=max(a.steps, 1))
    order = rng.permutation(len(labels))
    t0, pos = time.time(), 0
    model.train()
    step = 0
    for step in range(a.steps):
        if pos + a.batch > len(order):
            order, pos = rng.permutation(len(labels)), 0
        idx = order[pos:pos + a.batch]
        pos += a.batch
        x = augment(normalize(images[idx]), rng)
        loss = F.cross_entropy(model(x), torch.from_numpy(labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == a.steps - 1:
            print(f"step {step}/{a.steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
        if time.time() - t0 > 60 * a.max_minutes:
            print(f"time budget reached after {step + 1} steps", flush=True)
            break

    model.eval()
    if a.torch_eval:
        test_x, test_y = read_batches(a.data, ["test_batch.bin"])
        with torch.no_grad():
            correct = sum(int((model(normalize(test_x[i:i + 500])).argmax(1).numpy() == test_y[i:i + 500]).sum())
                          for i in range(0, len(test_y), 500))
        print(f"torch test accuracy {correct / len(test_y):.4f} after {a.steps} steps ({time.time() - t0:.0f} s)")

    dummy = torch.zeros(2, 3, 32, 32)
    kwargs = dict(opset_version=a.opset, input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    try:
        torch.onnx.export(model, dummy, a.out, dynamo=False, **kwargs)
    except TypeError:  # older torch without the `dynamo` switch
        torch.onnx.export(model, dummy, a.out, **kwargs)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
