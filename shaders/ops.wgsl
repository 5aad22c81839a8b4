// Memory-bound kernels of the wgpu backend: elementwise operators, pooling,
// layout changes, effective weights, the SGD update, the weight-gradient
// split reduction and the fused softmax cross-entropy. One thread per
// output element (2-D dispatch: element = x + y * 65535 * 256 threads).
// Activations are pixel-major: [B, H, W, C] / [B, S, C], channels contiguous.
//
// Every entry point uses the shared binding layout of the backend:
// 0 uniform P, 1..3 read-only inputs, 4..5 read-write outputs.

struct P {
    n: u32, c: u32, s: u32, flags: u32,      // elements, channels, spatial, flags (1 accumulate)
    h: u32, w: u32, oh: u32, ow: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, off: u32, k: u32,
    f0: f32, f1: f32, f2: f32, f3: f32,
}

@group(0) @binding(0) var<uniform> U: P;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;

fn index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 256u;
}

// Writes or accumulates (flag 1) into out0: gradients of nodes read twice add up.
fn put(i: u32, v: f32) {
    if ((U.flags & 1u) != 0u) {
        out0[i] += v;
    } else {
        out0[i] = v;
    }
}

// Pixel-major image batch [B, C, H, W] (NCHW, as images arrive) -> [B, H, W, C].
@compute @workgroup_size(256)
fn nchw_to_nhwc(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let c = i % U.c;
    let p = i / U.c;
    let s = p % U.s;
    let b = p / U.s;
    out0[i] = in0[(b * U.c + c) * U.s + s];
}

// flags bit 1: ReLU6 (clip at 6); bit 3: Sign (+1 where x >= 0, else -1).
@compute @workgroup_size(256)
fn relu_fwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let x = in0[i];
    var v = max(x, 0.0);
    if ((U.flags & 2u) != 0u) {
        v = min(v, 6.0);
    }
    if ((U.flags & 8u) != 0u) {
        v = select(-1.0, 1.0, x >= 0.0);
    }
    out0[i] = v;
}

// in0 = the ReLU's output y (Sign: its input x), in1 = dy. Sign passes the
// gradient straight through where |x| <= 1 (hardtanh's derivative).
@compute @workgroup_size(256)
fn relu_bwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let y = in0[i];
    var keep = y > 0.0;
    if ((U.flags & 2u) != 0u) {
        keep = keep && y < 6.0;
    }
    if ((U.flags & 8u) != 0u) {
        keep = abs(y) <= 1.0;
    }
    put(i, select(0.0, in1[i], keep));
}

@compute @workgroup_size(256)
fn add_fwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    out0[i] = in0[i] + in1[i];
}

// out0 (=|+=) f0 * in0: passes a gradient on (Add's backward, x2 for x + x).
@compute @workgroup_size(256)
fn scale_into(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    put(i, U.f0 * in0[i]);
}

// [B, S, C] -> [B, C*S] (channel-major, as PyTorch's flatten(1)).
@compute @workgroup_size(256)
fn flatten_fwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let cs = U.c * U.s;
    let b = i / cs;
    let r = i % cs;
    let c = r / U.s;
    let s = r % U.s;
    out0[i] = in0[(b * U.s + s) * U.c + c];
}

// Inverse of flatten_fwd, over the [B, S, C] gradient.
@compute @workgroup_size(256)
fn flatten_bwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let c = i % U.c;
    let p = i / U.c;
    let s = p % U.s;
    let b = p / U.s;
    put(i, in0[(b * U.c + c) * U.s + s]);
}

// [B, S, C] -> [B, C]; n = B*C.
@compute @workgroup_size(256)
fn gap_fwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let c = i % U.c;
    let b = i / U.c;
    var acc = 0.0;
    for (var s = 0u; s < U.s; s++) {
        acc += in0[(b * U.s + s) * U.c + c];
    }
    out0[i] = acc * (1.0 / f32(U.s));
}

// n = B*S*C
@compute @workgroup_size(256)
fn gap_bwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let c = i % U.c;
    let b = i / (U.c * U.s);
    put(i, in0[b * U.c + c] * (1.0 / f32(U.s)));
}

// Pooling, one thread per output [B, OH, OW, C]; flags bit 4: max pooling
// (padding is -inf, the first maximum in scan order wins, as the CPU
// reference; out1 gets the winning input pixel within its image, as bits),
// else average pooling (padded cells count: every window divides by kh*kw).
@compute @workgroup_size(256)
fn pool_fwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let is_max = (U.flags & 4u) != 0u;
    let c = i % U.c;
    let p = i / U.c;
    let ox = p % U.ow;
    let oy = (p / U.ow) % U.oh;
    let b = p / (U.ow * U.oh);
    var best = -3.4028235e38;
    var found = false;
    var arg = 0u;
    var sum = 0.0;
    for (var ky = 0u; ky < U.kh; ky++) {
        let iy = i32(oy * U.sh + ky) - i32(U.ph);
        if (iy < 0 || iy >= i32(U.h)) { continue; }
        for (var kx = 0u; kx < U.kw; kx++) {
            let ix = i32(ox * U.sw + kx) - i32(U.pw);
            if (ix < 0 || ix >= i32(U.w)) { continue; }
            let q = u32(iy) * U.w + u32(ix);
            let v = in0[(b * U.h * U.w + q) * U.c + c];
            sum += v;
            if (!found || v > best) {
                best = v;
                arg = q;
                found = true;
            }
        }
    }
    if (is_max) {
        out0[i] = select(-3.4028235e38, best, found);
        out1[i] = bitcast<f32>(arg);
    } else {
        out0[i] = sum / f32(U.kh * U.kw);
    }
}

// One thread per input [B, H, W, C]: gathers the gradient of every output
// window that covers it (in0 = dy); max pooling (flags bit 4) only from the
// windows it won (in1 = winners).
@compute @workgroup_size(256)
fn pool_bwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let is_max = (U.flags & 4u) != 0u;
    let c = i % U.c;
    let p = i / U.c;
    let q = p % (U.h * U.w);
    let b = p / (U.h * U.w);
    let iy = q / U.w;
    let ix = q % U.w;
    var acc = 0.0;
    for (var ky = 0u; ky < U.kh; ky++) {
        let ty = i32(iy + U.ph) - i32(ky);
        if (ty < 0 || u32(ty) % U.sh != 0u) { continue; }
        let oy = u32(ty) / U.sh;
        if (oy >= U.oh) { continue; }
        for (var kx = 0u; kx < U.kw; kx++) {
            let tx = i32(ix + U.pw) - i32(kx);
            if (tx < 0 || u32(tx) % U.sw != 0u) { continue; }
            let ox = u32(tx) / U.sw;
            if (ox >= U.ow) { continue; }
            let o = ((b * U.oh + oy) * U.ow + ox) * U.c + c;
            if (!is_max || bitcast<u32>(in1[o]) == q) {
                acc += in0[o];
            }
        }
    }
    if (!is_max) {
        acc = acc / f32(U.kh * U.kw);
    }
    put(i, acc);
}

// Per-parameter flags (in1, as bits): 1 trainable, 2 weight-decayed,
// 4 kept by the mask, 8 binary; bits 8.. the tensor's index into the
// alpha table (in2). Effective value: masked -> 0, binary -> alpha*sign(w).
fn effective_value(w: f32, f: u32) -> f32 {
    if ((f & 4u) == 0u) {
        return 0.0;
    }
    if ((f & 8u) != 0u) {
        let a = in2[f >> 8u];
        return select(-a, a, w >= 0.0);
    }
    return w;
}

@compute @workgroup_size(256)
fn effective(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    out0[i] = effective_value(in0[i], bitcast<u32>(in1[i]));
}

// SGD with momentum (Nesterov when flags bit 1), L2 weight decay f2,
// learning rate f0, momentum f1; masked weights stay exactly zero with zero
// velocity (as the CPU optimizer). in0 = grads, in1 = flags,
// out0 = params, out1 = velocity.
@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    let f = bitcast<u32>(in1[i]);
    if ((f & 1u) == 0u) { return; }
    if ((f & 4u) == 0u) {
        out0[i] = 0.0;
        out1[i] = 0.0;
        return;
    }
    let w = out0[i];
    let g = in0[i] + select(0.0, U.f2, (f & 2u) != 0u) * w;
    let v = U.f1 * out1[i] + g;
    out1[i] = v;
    let d = select(v, g + U.f1 * v, (U.flags & 2u) != 0u);
    out0[i] = w - U.f0 * d;
}

// Adds a training step's [mean loss, correct] (in0) to the running totals
// (out0): [sum of loss x images, correct, images], which the host reads
// back every few steps instead of after each one. U.n = images.
@compute @workgroup_size(1)
fn stats_accumulate() {
    out0[0] += in0[0] * f32(U.n);
    out0[1] += in0[1];
    out0[2] += f32(U.n);
}

// Sums the k split-K partial weight gradients (in0, k slabs of n) into the
// flat gradient at `off`, times the mask (straight-through estimator).
@compute @workgroup_size(256)
fn reduce_splits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= U.n) { return; }
    var acc = 0.0;
    for (var s = 0u; s < U.k; s++) {
        acc += in0[s * U.n + i];
    }
    let f = bitcast<u32>(in1[U.off + i]);
    out0[U.off + i] = select(0.0, acc, (f & 4u) != 0u);
}

// Softmax cross-entropy, one thread per row of logits in0 [B, c]; labels
// in1 (bits). dlogits (already / B) -> out0; out1[row] = loss, out1[B + row]
// = 1 if the argmax (first maximum) is the label.
@compute @workgroup_size(64)
fn xent(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= U.n) { return; }
    let base = r * U.c;
    let label = bitcast<u32>(in1[r]);
    var m = in0[base];
    var arg = 0u;
    for (var j = 1u; j < U.c; j++) {
        let v = in0[base + j];
        if (v > m) {
            m = v;
            arg = j;
        }
    }
    var z = 0.0;
    for (var j = 0u; j < U.c; j++) {
        z += exp(in0[base + j] - m);
    }
    let lse = m + log(z);
    let inv_b = 1.0 / f32(U.n);
    for (var j = 0u; j < U.c; j++) {
        let t = select(0.0, 1.0, j == label);
        out0[base + j] = (exp(in0[base + j] - lse) - t) * inv_b;
    }
    out1[r] = lse - in0[base + label];
    out1[U.n + r] = select(0.0, 1.0, arg == label);
}

// Sums per-row losses and hits (in0, 2n values) into the step's slot `off`
// of the statistics ring (out0): [mean loss, correct].
var<workgroup> red: array<vec2<f32>, 256>;
@compute @workgroup_size(256)
fn xent_total(@builtin(local_invocation_index) li: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var r = li; r < U.n; r += 256u) {
        acc += vec2<f32>(in0[r], in0[U.n + r]);
    }
    red[li] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        out0[U.off] = red[0].x / f32(U.n);
        out0[U.off + 1u] = red[0].y;
    }
}
