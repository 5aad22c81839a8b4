//! Gradient checks of the CPU backend against central finite differences,
//! one tiny hand-built graph per operator, plus forward references
//! (naive direct convolution / pooling / BatchNorm), the loss, running
//! statistics, masks, binary weights and error handling.

use crate::common::{bn, conv, input, linear, node, pool};
use cardc::backend::cpu::{forward_backward, infer};
use cardc::ir::{Conv2d, Graph, Node, Op, ParamKind, Pool};
use cardc::model::{Model, WeightState};
use cardc::rng::Rng;
use cardc::tensor::Tensor;

fn model(nodes: Vec<Node>, seed: u64) -> Model {
    let g = Graph {
        name: "t".into(),
        nodes,
    };
    let mut m = Model::init(g, seed).expect("valid test graph");
    // Random (non-default) BN affine parameters exercise gamma/beta fully.
    let mut rng = Rng::new(seed ^ 0x5eed);
    for ts in &mut m.params {
        for t in ts.iter_mut() {
            if matches!(t.kind, ParamKind::Gamma | ParamKind::Beta | ParamKind::Bias) {
                t.data.iter_mut().for_each(|v| {
                    *v = rng.range(0.5, 1.5) * if rng.uniform() < 0.5 { -1.0 } else { 1.0 }
                });
            }
        }
    }
    m
}

fn images(m: &Model, b: usize, scale: f32, seed: u64) -> Tensor {
    let [c, h, w] = m.graph.input_shape();
    let mut rng = Rng::new(seed);
    Tensor::from_vec(
        &[b, c, h, w],
        (0..b * c * h * w).map(|_| rng.normal() * scale).collect(),
    )
}

fn labels(m: &Model, b: usize) -> Vec<u32> {
    let k = m.graph.classes() as u32;
    (0..b as u32).map(|i| (i * 7 + 1) % k).collect()
}

fn loss(m: &Model, x: &Tensor, y: &[u32]) -> f64 {
    let mut m = m.clone();
    forward_backward(&mut m, x, y, false).expect("forward").loss as f64
}

/// Relative L2 error of `ana` against `num`, with a floor on the scale
/// (finite differences of an f32 loss carry ~1e-4 of noise).
fn assert_close(what: &str, num: &[f64], ana: &[f32]) {
    assert_eq!(num.len(), ana.len(), "{what}: length");
    let diff: f64 = num
        .iter()
        .zip(ana)
        .map(|(n, &a)| (n - a as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let scale: f64 = num.iter().map(|n| n * n).sum::<f64>().sqrt().max(1e-2);
    assert!(
        diff / scale < 2e-2,
        "{what}: relative error {:.3e}\n numeric  {:?}\n analytic {:?}",
        diff / scale,
        &num[..num.len().min(12)],
        &ana[..ana.len().min(12)]
    );
}

/// Central difference of `f` at step `eps` around 0.
fn central(f: &mut dyn FnMut(f32) -> f64, eps: f32) -> f64 {
    (f(eps) - f(-eps)) / (2.0 * eps as f64)
}

/// Numeric derivatives of `f(coordinate, delta)` for `n` coordinates. A
/// ReLU or max-pool kink inside the step makes two step sizes disagree:
/// such coordinates take the analytic value instead, and at most a
/// quarter of them may be skipped.
fn numeric(what: &str, n: usize, ana: &[f32], f: &mut dyn FnMut(usize, f32) -> f64) -> Vec<f64> {
    let mut skipped = 0;
    let v = (0..n)
        .map(|e| {
            let a = central(&mut |d| f(e, d), 2e-3);
            let b = central(&mut |d| f(e, d), 1e-3);
            if (a - b).abs() > 1e-2 * a.abs().max(b.abs()) + 1e-3 {
                skipped += 1;
                ana[e] as f64
            } else {
                a
            }
        })
        .collect();
    assert!(
        skipped * 4 <= n,
        "{what}: {skipped} of {n} coordinates sit on kinks"
    );
    v
}

/// Checks every trainable parameter and the input gradient of `m` on `x`
/// against central differences of the train-mode loss.
fn gradcheck(m: &Model, x: &Tensor, y: &[u32]) {
    let mut mm = m.clone();
    let out = forward_backward(&mut mm, x, y, true).expect("forward_backward");
    assert!(out.loss.is_finite());
    for (i, ts) in m.params.iter().enumerate() {
        for (k, t) in ts.iter().enumerate() {
            let what = format!("{}.{}", m.graph.nodes[i].name, t.kind.suffix());
            let ana = &out.grads[i][k];
            assert_eq!(ana.len(), t.data.len(), "{what}: grad length");
            if !t.kind.trainable() {
                assert!(
                    ana.iter().all(|&g| g == 0.0),
                    "{what}: running stats get zero grads"
                );
                continue;
            }
            let num = numeric(&what, t.data.len(), ana, &mut |e, d| {
                let mut p = m.clone();
                p.params[i][k].data[e] += d;
                loss(&p, x, y)
            });
            assert_close(&what, &num, ana);
        }
    }
    let dx = out.input_grad.expect("input grad requested");
    assert_eq!(dx.shape, x.shape);
    let num = numeric("input", x.len(), &dx.data, &mut |e, d| {
        let mut xp = x.clone();
        xp.data[e] += d;
        loss(m, &xp, y)
    });
    assert_close("input", &num, &dx.data);
}

#[test]
fn conv_stride_padding_groups_bias() {
    let m = model(
        vec![
            input(4, 5, 5),
            node("conv", conv(4, 4, (3, 3), (2, 2), (1, 1), 2, true), &[0]),
            node("flatten", Op::Flatten, &[1]),
            node("fc", linear(36, 3, true), &[2]),
        ],
        1,
    );
    let x = images(&m, 2, 1.0, 11);
    gradcheck(&m, &x, &labels(&m, 2));
}

#[test]
fn conv_rectangular_kernel_and_pointwise() {
    let m = model(
        vec![
            input(2, 6, 5),
            node("conv", conv(2, 3, (3, 2), (1, 2), (1, 0), 1, false), &[0]),
            node("pw", conv(3, 2, (1, 1), (1, 1), (0, 0), 1, true), &[1]),
            node("flatten", Op::Flatten, &[2]),
            node("fc", linear(2 * 6 * 2, 3, false), &[3]),
        ],
        2,
    );
    let x = images(&m, 2, 1.0, 12);
    gradcheck(&m, &x, &labels(&m, 2));
}

#[test]
fn batchnorm_affine_train() {
    let m = model(
        vec![
            input(3, 3, 3),
            node("pw", conv(3, 3, (1, 1), (1, 1), (0, 0), 1, false), &[0]),
            node("bn", bn(3, true), &[1]),
            node("flatten", Op::Flatten, &[2]),
            node("fc", linear(27, 4, true), &[3]),
        ],
        3,
    );
    let x = images(&m, 3, 1.0, 13);
    gradcheck(&m, &x, &labels(&m, 3));
}

#[test]
fn batchnorm_non_affine_and_on_features() {
    let m = model(
        vec![
            input(2, 3, 3),
            node("conv", conv(2, 2, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
            node("bn", bn(2, false), &[1]),
            node("flatten", Op::Flatten, &[2]),
            node("fc1", linear(18, 5, true), &[3]),
            node("bn1d", bn(5, true), &[4]),
            node("fc2", linear(5, 3, true), &[5]),
        ],
        4,
    );
    let x = images(&m, 4, 1.0, 14);
    gradcheck(&m, &x, &labels(&m, 4));
}

#[test]
fn relu_and_relu6() {
    let m = model(
        vec![
            input(2, 3, 3),
            node("conv1", conv(2, 3, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
            node("relu", Op::Relu, &[1]),
            node("conv2", conv(3, 2, (3, 3), (1, 1), (1, 1), 1, true), &[2]),
            node("relu6", Op::Relu6, &[3]),
            node("flatten", Op::Flatten, &[4]),
            node("fc", linear(18, 3, true), &[5]),
        ],
        5,
    );
    // Large second-layer weights so that some activations exceed 6; a
    // small classifier keeps the loss moderate.
    let mut m = m;
    m.params[3][0].data.iter_mut().for_each(|w| *w *= 6.0);
    m.params[6][0].data.iter_mut().for_each(|w| *w *= 0.2);
    let x = images(&m, 2, 1.0, 15);
    // The graph cut after Flatten shows the ReLU6 output: both clamps occur.
    let mut head = m.clone();
    head.graph.nodes.truncate(6);
    head.params.truncate(6);
    let act = infer(&head, &x).expect("head");
    assert!(
        act.data.contains(&6.0) && act.data.contains(&0.0),
        "{:?}",
        act.data
    );
    gradcheck(&m, &x, &labels(&m, 2));
}

#[test]
fn maxpool_with_padding() {
    let m = model(
        vec![
            input(2, 5, 5),
            node("conv", conv(2, 2, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
            node("pool", Op::MaxPool(pool(3, 2, 1)), &[1]),
            node("pool2", Op::MaxPool(pool(2, 1, 0)), &[2]),
            node("flatten", Op::Flatten, &[3]),
            node("fc", linear(8, 3, true), &[4]),
        ],
        6,
    );
    let x = images(&m, 2, 1.0, 16);
    gradcheck(&m, &x, &labels(&m, 2));
}

#[test]
fn avgpool_with_padding() {
    let m = model(
        vec![
            input(2, 5, 5),
            node("pool", Op::AvgPool(pool(3, 2, 1)), &[0]),
            node("pool2", Op::AvgPool(pool(2, 1, 0)), &[1]),
            node("flatten", Op::Flatten, &[2]),
            node("fc", linear(8, 3, true), &[3]),
        ],
        7,
    );
    let x = images(&m, 2, 1.0, 17);
    gradcheck(&m, &x, &labels(&m, 2));
}

#[test]
fn residual_add_and_global_avg_pool() {
    let m = model(
        vec![
            input(2, 4, 4),
            node("conv1", conv(2, 3, (3, 3), (1, 1), (1, 1), 1, false), &[0]),
            node("bn1", bn(3, true), &[1]),
            node("relu1", Op::Relu, &[2]),
            node("conv2", conv(3, 3, (3, 3), (1, 1), (1, 1), 1, false), &[3]),
            node("add", Op::Add, &[4, 3]),
            node("double", Op::Add, &[5, 5]),
            node("gap", Op::GlobalAvgPool, &[6]),
            node("fc", linear(3, 3, true), &[7]),
        ],
        8,
    );
    let x = images(&m, 3, 1.0, 28);
    gradcheck(&m, &x, &labels(&m, 3));
}

/// A conv model whose weights carry `state`.
fn masked_model(binary: bool) -> (Model, Tensor, Vec<u32>) {
    let mut m = model(
        vec![
            input(2, 4, 4),
            node("conv", conv(2, 3, (3, 3), (2, 2), (1, 1), 1, false), &[0]),
            node("flatten", Op::Flatten, &[1]),
            node("fc", linear(12, 3, true), &[2]),
        ],
        9,
    );
    let t = &mut m.params[1][0];
    let mask: Vec<bool> = (0..t.data.len()).map(|i| i % 3 != 1).collect();
    t.state = if binary {
        WeightState::Binary { mask, alpha: 0.4 }
    } else {
        WeightState::Masked { mask }
    };
    let x = images(&m, 2, 1.0, 19);
    let y = labels(&m, 2);
    (m, x, y)
}

#[test]
fn masked_weight_gets_zero_gradient() {
    let (m, x, y) = masked_model(false);
    let mut mm = m.clone();
    let out = forward_backward(&mut mm, &x, &y, false).expect("forward_backward");
    let g = &out.grads[1][0];
    let mask = m.params[1][0].mask().expect("mask").to_vec();
    assert!(g.iter().zip(&mask).all(|(&g, &k)| k || g == 0.0));
    assert!(g.iter().zip(&mask).any(|(&g, &k)| k && g != 0.0));
    // Kept entries: the gradient is dL/dw (effective = stored value there).
    let kept: Vec<usize> = (0..mask.len()).filter(|&e| mask[e]).collect();
    let ana: Vec<f32> = kept.iter().map(|&e| g[e]).collect();
    let num = numeric("masked conv", kept.len(), &ana, &mut |e, d| {
        let mut p = m.clone();
        p.params[1][0].data[kept[e]] += d;
        loss(&p, &x, &y)
    });
    for e in (0..mask.len()).filter(|&e| !mask[e]) {
        // Changing a masked-out value changes nothing.
        let mut p = m.clone();
        p.params[1][0].data[e] += 1.0;
        assert_eq!(loss(&p, &x, &y), loss(&m, &x, &y));
    }
    assert_close("masked conv", &num, &ana);
}

#[test]
fn binary_weight_is_plus_minus_alpha_with_straight_through_gradient() {
    let (m, x, y) = masked_model(true);
    let t = &m.params[1][0];
    let eff = t.effective();
    let mask = t.mask().expect("mask");
    for ((&e, &w), &k) in eff.iter().zip(&t.data).zip(mask) {
        let want = if !k {
            0.0
        } else if w >= 0.0 {
            0.4
        } else {
            -0.4
        };
        assert_eq!(e, want);
    }
    // Same as a dense model holding the effective values, times the mask.
    let mut dense = m.clone();
    dense.params[1][0].data = eff.to_vec();
    dense.params[1][0].state = WeightState::Dense;
    let (mut a, mut b) = (m.clone(), dense.clone());
    let ob = forward_backward(&mut a, &x, &y, false).expect("binary");
    let od = forward_backward(&mut b, &x, &y, false).expect("dense");
    assert!((ob.loss - od.loss).abs() < 1e-6);
    for ((&gb, &gd), &k) in ob.grads[1][0].iter().zip(&od.grads[1][0]).zip(mask) {
        assert_eq!(gb, if k { gd } else { 0.0 });
    }
}

// ---- naive NCHW references for the eval-mode forward -------------------

fn naive_conv(
    x: &[f32],
    dims: [usize; 4],
    c: &Conv2d,
    w: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f32>, [usize; 4]) {
    let [b, ci, h, wd] = dims;
    let (kh, kw) = c.kernel;
    let (sh, sw) = c.stride;
    let (ph, pw) = c.padding;
    let oh = (h + 2 * ph - kh) / sh + 1;
    let ow = (wd + 2 * pw - kw) / sw + 1;
    let co = c.out_channels;
    let cig = ci / c.groups;
    let cog = co / c.groups;
    let mut y = vec![0.0; b * co * oh * ow];
    for n in 0..b {
        for o in 0..co {
            let g = o / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |bb| bb[o]) as f64;
                    for i in 0..cig {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - ph as isize;
                                let ix = (ox * sw + kx) as isize - pw as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi =
                                    ((n * ci + g * cig + i) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * cig + i) * kh + ky) * kw + kx;
                                s += (x[xi] * w[wi]) as f64;
                            }
                        }
                    }
                    y[((n * co + o) * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
    }
    (y, [b, co, oh, ow])
}

fn naive_pool(x: &[f32], dims: [usize; 4], p: &Pool, max: bool) -> (Vec<f32>, [usize; 4]) {
    let [b, c, h, w] = dims;
    let (k, s, pd) = (p.kernel.0, p.stride.0, p.padding.0);
    let oh = (h + 2 * pd - k) / s + 1;
    let ow = (w + 2 * pd - k) / s + 1;
    let mut y = vec![0.0; b * c * oh * ow];
    for pl in 0..b * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - pd as isize;
                        let ix = (ox * s + kx) as isize - pd as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = x[(pl * h + iy as usize) * w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                y[(pl * oh + oy) * ow + ox] = if max { acc } else { acc / (k * k) as f32 };
            }
        }
    }
    (y, [b, c, oh, ow])
}

#[test]
fn infer_matches_naive_reference() {
    let c1 = Conv2d {
        in_channels: 4,
        out_channels: 4,
        kernel: (3, 3),
        stride: (2, 2),
        padding: (1, 1),
        groups: 2,
        bias: true,
    };
    let mp = pool(3, 2, 1);
    let ap = pool(3, 1, 1);
    let mut m = model(
        vec![
            input(4, 7, 7),
            node("conv", Op::Conv2d(c1.clone()), &[0]),
            node("bn", bn(4, true), &[1]),
            node("relu6", Op::Relu6, &[2]),
            node("max", Op::MaxPool(mp.clone()), &[3]),
            node("avg", Op::AvgPool(ap.clone()), &[4]),
            node("flatten", Op::Flatten, &[5]),
            node("fc", linear(16, 5, true), &[6]),
        ],
        10,
    );
    // Non-trivial running statistics.
    m.params[2][2].data = vec![0.1, -0.2, 0.3, 0.0];
    m.params[2][3].data = vec![0.5, 2.0, 1.5, 0.8];
    let x = images(&m, 3, 2.0, 20);
    let got = infer(&m, &x).expect("infer");

    let p = |i: usize, k: usize| m.params[i][k].data.clone();
    let (mut y, mut d) = naive_conv(&x.data, [3, 4, 7, 7], &c1, &p(1, 0), Some(&p(1, 1)));
    let (g, be, rm, rv) = (p(2, 0), p(2, 1), p(2, 2), p(2, 3));
    let hw = d[2] * d[3];
    for (i, v) in y.iter_mut().enumerate() {
        let c = (i / hw) % d[1];
        *v = ((*v - rm[c]) / (rv[c] + 1e-5).sqrt() * g[c] + be[c]).clamp(0.0, 6.0);
    }
    (y, d) = naive_pool(&y, d, &mp, true);
    (y, d) = naive_pool(&y, d, &ap, false);
    let f = d[1] * d[2] * d[3];
    assert_eq!(f, 16);
    let (w, bias) = (p(7, 0), p(7, 1));
    assert_eq!(got.shape, vec![3, 5]);
    for n in 0..3 {
        for o in 0..5 {
            let s: f32 = bias[o] + (0..f).map(|j| w[o * f + j] * y[n * f + j]).sum::<f32>();
            let v = got.data[n * 5 + o];
            assert!(
                (v - s).abs() < 1e-4 * (1.0 + s.abs()),
                "logit [{n},{o}]: {v} vs {s}"
            );
        }
    }
}

#[test]
fn running_statistics_follow_pytorch() {
    let mut m = model(
        vec![
            input(2, 2, 2),
            node("bn", bn(2, true), &[0]),
            node("flatten", Op::Flatten, &[1]),
            node("fc", linear(8, 3, true), &[2]),
        ],
        11,
    );
    let x = images(&m, 3, 2.0, 21);
    let y = labels(&m, 3);
    forward_backward(&mut m, &x, &y, false).expect("train");
    for c in 0..2 {
        let vals: Vec<f64> = (0..3)
            .flat_map(|n| (0..4).map(move |s| (n, s)))
            .map(|(n, s)| x.data[(n * 2 + c) * 4 + s] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / 12.0;
        let var_u = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 11.0;
        let rm = m.params[1][2].data[c] as f64;
        let rv = m.params[1][3].data[c] as f64;
        assert!(
            (rm - 0.1 * mean).abs() < 1e-5,
            "running mean {rm} vs {}",
            0.1 * mean
        );
        assert!((rv - (0.9 + 0.1 * var_u)).abs() < 1e-5, "running var {rv}");
    }
}

#[test]
fn softmax_cross_entropy_on_known_logits() {
    let mut m = model(
        vec![
            input(3, 1, 1),
            node("flatten", Op::Flatten, &[0]),
            node("fc", linear(3, 3, true), &[1]),
        ],
        12,
    );
    m.params[2][0].data = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    m.params[2][1].data = vec![0.0; 3];
    let x = Tensor::from_vec(&[2, 3, 1, 1], vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
    let out = forward_backward(&mut m, &x, &[1, 2], false).expect("train");
    assert_eq!(out.logits.data, x.data);
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let want = ((3f64).ln() + (lse - 3.0)) / 2.0;
    assert!(
        (out.loss as f64 - want).abs() < 1e-6,
        "{} vs {want}",
        out.loss
    );
    // Bias gradient: mean over the batch of softmax - onehot.
    let p0 = [1.0 / 3.0; 3];
    let p1: Vec<f64> = (1..=3).map(|z| (z as f64 - lse).exp()).collect();
    let want_db = [
        (p0[0] + p1[0]) / 2.0,
        (p0[1] - 1.0 + p1[1]) / 2.0,
        (p0[2] + p1[2] - 1.0) / 2.0,
    ];
    for (g, w) in out.grads[2][1].iter().zip(want_db) {
        assert!((*g as f64 - w).abs() < 1e-6);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let mut m = model(
        vec![
            input(1, 2, 2),
            node("flatten", Op::Flatten, &[0]),
            node("fc", linear(4, 3, true), &[1]),
        ],
        13,
    );
    let x = images(&m, 2, 1.0, 23);
    assert!(
        forward_backward(&mut m, &x, &[0, 3], false).is_err(),
        "label 3 of 3 classes"
    );
    assert!(
        forward_backward(&mut m, &x, &[0], false).is_err(),
        "label count"
    );
    let wrong = Tensor::zeros(&[2, 1, 3, 2]);
    let e = forward_backward(&mut m, &wrong, &[0, 1], false)
        .err()
        .expect("shape error");
    assert!(e.to_string().contains("input"), "{e}");
    assert!(infer(&m, &Tensor::zeros(&[1, 4])).is_err());
    m.params[2][0].data.pop();
    let e = infer(&m, &x).expect_err("bad parameter");
    assert!(e.to_string().contains("fc"), "{e}");
}
