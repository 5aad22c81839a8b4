#!/usr/bin/env python3
"""PyTorch side of the GPU benchmarks (issue: GPU training backend), run in
the same session as `cardc bench train --backend wgpu` by bench/gpu/run.sh.

The networks are cardc's built-in models (models/*.toml): ResNet-20 and
ResNet-18 with the CIFAR stem and 1x1-conv + BN projection shortcuts, and
Conv-8 (conv-BN-ReLU, 2x2 max-pools, fully connected 256, 256, 10).

  throughput --arch A --batch B [--steps N --repeats R] [--bf16]
      images/s of SGD steps on random data after warm-up, median of
      repeats; fp32 with TF32 off, or bf16 autocast with channels-last.
  train --data DIR --epochs E --batch B [--train-limit N --test-limit M]
      the end-to-end recipe of the comparison: SGD, Nesterov momentum 0.9,
      weight decay 5e-4, cosine schedule from lr 0.1 (per step), random
      crop (pad 4) + horizontal flip; prints test accuracy and wall time.

Each command prints one JSON line.
"""

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, stem, stages, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, cin = [], stem
        for cout, blocks, stride in stages:
            for b in range(blocks):
                layers.append(Block(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def conv8(classes=10):
    layers, cin = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, 1, 1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(512 * 2 * 2, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, classes),
    )


def build(arch):
    if arch == "resnet20":
        return ResNet(16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)])
    if arch == "resnet18":
        return ResNet(64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)])
    if arch == "conv8":
        return conv8()
    raise SystemExit(f"unknown arch {arch}")


def throughput(a):
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    model = build(a.arch).to(dev)
    fmt = torch.channels_last if a.bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, 32, 32, device=dev).to(memory_format=fmt)
    y = torch.randint(0, 10, (a.batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    runs = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        torch.cuda.synchronize()
        runs.append(a.batch * a.steps / (time.perf_counter() - t))
    print(json.dumps({
        "side": "pytorch", "arch": a.arch, "batch": a.batch,
        "precision": "bf16-autocast-channels-last" if a.bf16 else "fp32-no-tf32",
        "images_per_second": statistics.median(runs), "runs": runs,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
    }))


def read_cifar(path, limit):
    raw = np.fromfile(path, np.uint8).reshape(-1, 3073)[:limit]
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def train(a):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(a.seed)
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    xs, ys = [], []
    for f in sorted(os.listdir(a.data)):
        if f.startswith("data_batch_"):
            x, y = read_cifar(os.path.join(a.data, f), None)
            xs.append(x)
            ys.append(y)
    xtr = np.concatenate(xs)[: a.train_limit]
    ytr = np.concatenate(ys)[: a.train_limit]
    xte, yte = read_cifar(os.path.join(a.data, "test_batch.bin"), a.test_limit)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    xtr = torch.tensor(xtr, device=dev)
    ytr = torch.tensor(ytr, device=dev)
    xte = ((torch.tensor(xte, device=dev).float() / 255) - mean) / std
    yte = torch.tensor(yte, device=dev)
    model = build(a.arch).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(xtr) // a.batch
    total = steps_per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    g = torch.Generator(device=dev)
    g.manual_seed(a.seed)
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr), device=dev, generator=g)
        for s in range(steps_per_epoch):
            idx = perm[s * a.batch:(s + 1) * a.batch]
            xb = xtr[idx].float() / 255
            # random crop of the image zero-padded by 4 pixels, on the GPU
            xb = (xb - mean) / std
            xb = F.pad(xb, (4, 4, 4, 4))
            oy = torch.randint(0, 9, (len(idx),), device=dev, generator=g)
            ox = torch.randint(0, 9, (len(idx),), device=dev, generator=g)
            ar = torch.arange(32, device=dev)
            ry = oy[:, None] + ar[None, :]
            xb = xb.gather(2, ry[:, None, :, None].expand(-1, 3, 32, 40))
            rx = ox[:, None] + ar[None, :]
            xb = xb.gather(3, rx[:, None, None, :].expand(-1, 3, 32, 32))
            flip = torch.rand(len(idx), device=dev, generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xte), 500):
            correct += (model(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum().item()
    wall = time.perf_counter() - t0
    print(json.dumps({
        "side": "pytorch", "arch": a.arch, "epochs": a.epochs, "batch": a.batch,
        "train_images": len(xtr), "test_images": len(xte),
        "test_accuracy": correct / len(xte), "train_seconds": train_s, "wall_seconds": wall,
        "torch": torch.__version__,
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--arch", required=True)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--bf16", action="store_true")
    r = sub.add_parser("train")
    r.add_argument("--data", required=True)
    r.add_argument("--arch", default="resnet20")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--batch", type=int, default=128)
    r.add_argument("--lr", type=float, default=0.1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--train-limit", type=int, default=None)
    r.add_argument("--test-limit", type=int, default=None)
    a = p.parse_args()
    throughput(a) if a.cmd == "throughput" else train(a)


if __name__ == "__main__":
    main()
