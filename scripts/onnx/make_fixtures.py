#!/usr/bin/env python3
"""Writes the ONNX import fixtures under tests/fixtures/onnx/.

Each fixture is a small ResNet in the shape that PyTorch's exporter gives
(`torch.onnx.export(model.eval(), x, f, opset_version=N,
dynamic_axes={"input": {0: "batch_size"}, ...})`): node names like
`/layer1/layer1.0/conv1/Conv`, initializers as `raw_data`, a symbolic batch
dimension, and the operator patterns of the common exports:

* resnet_gemm_op13   -- Conv (BN folded into its bias, as torch does in eval
                        mode) + Relu + Add + GlobalAveragePool + Flatten + Gemm;
                        a strided basic block with a 1x1 projection shortcut.
* resnet_matmul_op17 -- torchvision-style stem (7x7/2 conv, BatchNormalization,
                        ReLU, 3x3/2 padded MaxPool), BatchNormalization kept,
                        Clip(0, 6) from Constant nodes, GlobalAveragePool,
                        Reshape(Constant [0, -1]) + MatMul + Add,
                        initializers in float_data.
* resnet_misc_op15   -- depthwise (grouped) conv, Identity, Dropout, padded
                        AveragePool with count_include_pad=1, Flatten, and a Gemm
                        with transB=0, alpha and beta.

Next to each `NAME.onnx` goes `NAME.json`: a batch-2 input and the logits
ONNX Runtime computes for it (the reference `tests/onnx.rs` checks cardc
against). The fixtures are built with the `onnx` package's helpers (no torch
needed), and each is validated with `onnx.checker`.

Usage (any venv):  pip install onnx onnxruntime numpy
                   python scripts/onnx/make_fixtures.py
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "onnx")
rng = np.random.default_rng(2024)


class Builder:
    """Accumulates nodes and initializers with torch-like names."""

    def __init__(self, raw=True):
        self.nodes, self.inits, self.raw, self.k = [], [], raw, 100

    def init(self, name, array):
        array = np.asarray(array, dtype=np.float32)
        if self.raw:
            t = numpy_helper.from_array(array, name)
        else:
            t = helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.flatten().tolist())
        self.inits.append(t)
        return name

    def anon(self, op):
        self.k += 1
        return f"onnx::{op}_{self.k}"

    def node(self, op, name, inputs, **attrs):
        out = f"/{name}/{op}_output_0" if name else self.anon(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/{name}/{op}", **attrs))
        return out

    def conv(self, name, x, cin, cout, k, stride=1, pad=None, groups=1, bias=True):
        pad = k // 2 if pad is None else pad
        w = rng.normal(0, (2.0 / (cin // groups * k * k)) ** 0.5, (cout, cin // groups, k, k))
        ins = [x, self.init(self.anon("Conv"), w)]
        if bias:
            ins.append(self.init(self.anon("Conv"), rng.normal(0, 0.1, cout)))
        return self.node("Conv", name, ins, dilations=[1, 1], group=groups,
                         kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])

    def bn(self, name, x, c):
        ins = [x,
               self.init(f"{name}.weight", rng.uniform(0.5, 1.5, c)),
               self.init(f"{name}.bias", rng.normal(0, 0.2, c)),
               self.init(f"{name}.running_mean", rng.normal(0, 0.2, c)),
               self.init(f"{name}.running_var", rng.uniform(0.5, 2.0, c))]
        return self.node("BatchNormalization", name, ins, epsilon=1e-5, momentum=0.9)

    def relu(self, name, x):
        return self.node("Relu", name, [x])

    def block(self, name, x, cin, cout, stride, keep_bn=False):
        """A basic block: conv-(bn)-relu-conv-(bn) + shortcut, relu."""
        y = self.conv(f"{name}/conv1", x, cin, cout, 3, stride, bias=not keep_bn)
        if keep_bn:
            y = self.bn(f"{name}/bn1", y, cout)
        y = self.relu(f"{name}/relu", y)
        y = self.conv(f"{name}/conv2", y, cout, cout, 3, 1, bias=not keep_bn)
        if keep_bn:
            y = self.bn(f"{name}/bn2", y, cout)
        s = x
        if stride != 1 or cin != cout:
            s = self.conv(f"{name}/downsample/downsample.0", x, cin, cout, 1, stride, bias=not keep_bn)
            if keep_bn:
                s = self.bn(f"{name}/downsample/downsample.1", s, cout)
        y = self.node("Add", f"{name}", [y, s])
        return self.relu(f"{name}/relu_1", y)

    def model(self, out, hw, classes, opset):
        graph = helper.make_graph(
            self.nodes, "main_graph",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, hw, hw])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch_size", classes])],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="pytorch", producer_version="2.15.0")
        m.ir_version = 7 if opset <= 14 else 8
        onnx.checker.check_model(m, full_check=True)
        return m


def resnet_gemm_op13():
    b = Builder()
    x = b.relu("relu", b.conv("conv1", "input", 3, 8, 3))
    x = b.block("layer1/layer1.0", x, 8, 8, 1)
    x = b.block("layer2/layer2.0", x, 8, 16, 2)
    x = b.node("GlobalAveragePool", "avgpool", [x])
    x = b.node("Flatten", "", [x], axis=1)
    fc = b.node("Gemm", "fc", [x, b.init("fc.weight", rng.normal(0, 0.3, (10, 16))),
                               b.init("fc.bias", rng.normal(0, 0.1, 10))],
                alpha=1.0, beta=1.0, transB=1)
    b.nodes[-1].output[0] = "output"
    return b.model("output", 16, 10, 13)


def resnet_matmul_op17():
    b = Builder(raw=False)
    x = b.conv("conv1", "input", 3, 8, 7, stride=2, pad=3, bias=False)
    x = b.relu("relu", b.bn("bn1", x, 8))
    x = b.node("MaxPool", "maxpool", [x], ceil_mode=0, kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2])
    x = b.block("layer1/layer1.0", x, 8, 8, 1, keep_bn=True)
    x = b.block("layer2/layer2.0", x, 8, 12, 2, keep_bn=True)
    lo = b.node("Constant", "Constant", [], value=numpy_helper.from_array(np.array(0, np.float32)))
    hi = b.node("Constant", "Constant_1", [], value=numpy_helper.from_array(np.array(6, np.float32)))
    x = b.node("Clip", "act/Clip6", [x, lo, hi])
    x = b.node("GlobalAveragePool", "avgpool", [x])
    shape = b.node("Constant", "Constant_2", [], value=numpy_helper.from_array(np.array([0, -1], np.int64)))
    x = b.node("Reshape", "Reshape", [x, shape])
    x = b.node("MatMul", "fc/MatMul", [x, b.init("onnx::MatMul_300", rng.normal(0, 0.3, (12, 7)))])
    b.node("Add", "fc/Add", [b.init("fc.bias", rng.normal(0, 0.1, 7)), x])
    b.nodes[-1].output[0] = "logits"
    return b.model("logits", 32, 7, 17)


def resnet_misc_op15():
    b = Builder()
    x = b.relu("relu", b.conv("conv1", "input", 3, 6, 3, stride=1))
    x = b.node("Identity", "Identity", [x])
    x = b.relu("dw/relu", b.conv("dw/conv", x, 6, 6, 3, groups=6))
    x = b.node("Add", "add", [x, b.conv("pw/conv", x, 6, 6, 1)])
    x = b.node("AveragePool", "pool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4,
               count_include_pad=1)
    x = b.node("Dropout", "dropout", [x])
    x = b.node("AveragePool", "pool2", [x], kernel_shape=[4, 4], strides=[4, 4])
    x = b.node("Flatten", "flatten", [x], axis=1)
    b.node("Gemm", "fc", [x, b.init("fc.weight_t", rng.normal(0, 0.3, (6, 5))),
                          b.init("fc.bias", rng.normal(0, 0.1, (1, 5)))],
           alpha=0.5, beta=2.0, transB=0)
    b.nodes[-1].output[0] = "output"
    return b.model("output", 8, 5, 15)


def main():
    os.makedirs(OUT, exist_ok=True)
    for make in (resnet_gemm_op13, resnet_matmul_op17, resnet_misc_op15):
        m = make()
        path = os.path.join(OUT, make.__name__ + ".onnx")
        onnx.save(m, path)
        hw = m.graph.input[0].type.tensor_type.shape.dim[2].dim_value
        x = rng.normal(0, 1, (2, 3, hw, hw)).astype(np.float32)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (logits,) = sess.run(None, {"input": x})
        ref = {
            "description": make.__doc__ or make.__name__,
            "onnxruntime": ort.__version__,
            "input_shape": list(x.shape),
            "input": [float(v) for v in x.flatten()],
            "logits": [float(v) for v in logits.flatten()],
        }
        with open(path[:-5] + ".json", "w") as f:
            json.dump(ref, f)
        print(path, os.path.getsize(path), "bytes; logits", logits.shape)


if __name__ == "__main__":
    main()
