#!/usr/bin/env python3
"""Same-run batch-1 latency of cardc's compiled host artifacts against ONNX
Runtime and tract on the same model (issue 7).

    /work/onnxenv/bin/python scripts/bench/latency.py \
        --cardc target/release/cardc \
        --card dense=/work/main/runs/resnet20-cifar10.card \
        --card sparse90=/work/runs4/ft90.card \
        --card binary90=/tmp/biprop90.card \
        --data /work/shared/data/cifar10 --out /tmp/bench

What runs, all single-threaded, batch 1, on one machine in one run:
* ONNX Runtime (pip onnxruntime, intra_op_num_threads=1, all graph
  optimizations) on `cardc export` of the FIRST card (the dense baseline);
* tract's optimized plan of the same ONNX (`cardc bench infer`);
* every card compiled with `cardc compile --target host` (its own C harness
  times `cardc_infer` per image).
Each round runs every runtime once (order rotated per round) and records its
median per-image latency; the report gives the median over rounds and the
ratio to ONNX Runtime's. Before timing, `cardc run` checks every artifact
against cardc's reference forward pass on a few test images.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def cifar_images(data_dir, n):
    """The first n CIFAR-10 test images as raw CHW bytes (the harness input)."""
    raw = open(os.path.join(data_dir, "test_batch.bin"), "rb").read()
    rec = 1 + 3 * 32 * 32
    n = min(n, len(raw) // rec)
    return b"".join(raw[i * rec + 1 : (i + 1) * rec] for i in range(n))


def ort_session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_median_ms(sess, x, iters):
    name = sess.get_inputs()[0].name
    for _ in range(max(1, iters // 10)):
        sess.run(None, {name: x})
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cardc", required=True)
    ap.add_argument("--tract-cardc", help="cardc used for `bench infer` (default --cardc); use a release build: "
                    "the dev profile keeps tract's debug assertions")
    ap.add_argument("--card", action="append", required=True, help="NAME=PATH; the first is the dense baseline")
    ap.add_argument("--data", required=True, help="CIFAR-10 binary directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tract-python", metavar="DIR",
                    help="also time tract through its Python bindings (pip install --target DIR tract==0.23.9, "
                         "the crate's version, release-built)")
    ap.add_argument("--no-tract-cardc", action="store_true", help="skip `cardc bench infer`")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--images", type=int, default=200, help="images per artifact run")
    ap.add_argument("--iters", type=int, default=200, help="ORT/tract runs per round")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cards = [c.split("=", 1) for c in a.card]
    onnx = os.path.join(a.out, cards[0][0] + ".onnx")
    sh([a.cardc, "export", "--model", cards[0][1], "--out", onnx])
    images = os.path.join(a.out, "images.bin")
    open(images, "wb").write(cifar_images(a.data, a.images))
    arts = {}
    checks = {}
    for name, path in cards:
        d = os.path.join(a.out, "art-" + name)
        rep = json.loads(sh([a.cardc, "compile", "--model", path, "--target", "host", "--out", d, "--json"]))
        run = json.loads(sh([a.cardc, "run", d, "--data", "cifar10:" + a.data, "--limit", "100", "--json"]))
        formats = sorted({l["format"] for l in rep["layers"]})
        checks[name] = {
            "flash_bytes": rep["flash_bytes"],
            "ram_bytes": rep["ram_bytes"],
            "formats": formats,
            "argmax_agreement": run["argmax_agreement"],
            "max_abs_logit_error": run["max_abs_logit_error"],
        }
        arts[name] = d
        print(f"{name}: formats {formats}, flash {rep['flash_bytes']} B, RAM {rep['ram_bytes']} B, "
              f"agreement {run['argmax_agreement']:.3f}, max err {run['max_abs_logit_error']:.2e}", file=sys.stderr)
    sess = ort_session(onnx)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)

    def ort_run():
        return ort_median_ms(sess, x, a.iters)

    def tract_run():
        out = sh([a.tract_cardc or a.cardc, "bench", "infer", "--onnx", onnx, "--iters", str(a.iters), "--json"])
        return json.loads(out)["latency_ms"]["median"]

    def art_run(d):
        def f():
            out = sh(["./model", os.path.abspath(images)], cwd=d)
            last = out.strip().splitlines()[-1]
            assert last.startswith("# median_ms"), last
            return float(last.split()[-1])
        return f

    runners = [("onnxruntime", ort_run)]
    if not a.no_tract_cardc:
        runners.append(("tract", tract_run))
    if a.tract_python:
        sys.path.append(a.tract_python)
        import tract

        m = tract.onnx().load(onnx)
        m.set_input_fact(0, "1,3,32,32,f32")
        trun = m.into_model().into_runnable()

        def tract_py_run():
            for _ in range(max(1, a.iters // 10)):
                trun.run([x])
            t = []
            for _ in range(a.iters):
                t0 = time.perf_counter()
                trun.run([x])
                t.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(t)

        runners.append(("tract-python", tract_py_run))
    runners += [(n, art_run(d)) for n, d in arts.items()]
    rounds = {n: [] for n, _ in runners}
    for r in range(a.rounds):
        k = r % len(runners)
        for n, f in runners[k:] + runners[:k]:
            rounds[n].append(f())
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rounds.items()), file=sys.stderr)
    base = statistics.median(rounds["onnxruntime"])
    result = {
        "machine": os.uname().nodename,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg": os.getloadavg(),
        "rounds": a.rounds,
        "onnxruntime_version": ort.__version__,
        "latency_ms": {n: {"median": statistics.median(v), "min": min(v), "rounds": v} for n, v in rounds.items()},
        "ratio_to_onnxruntime": {n: statistics.median(v) / base for n, v in rounds.items()},
        "artifacts": checks,
    }
    json.dump(result, open(os.path.join(a.out, "latency.json"), "w"), indent=2)
    print("| runtime | median ms | min ms | × ORT |")
    print("|---|---|---|---|")
    for n, v in rounds.items():
        print(f"| {n} | {statistics.median(v):.3f} | {min(v):.3f} | {statistics.median(v) / base:.2f} |")


if __name__ == "__main__":
    main()
