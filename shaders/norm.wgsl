// BatchNorm over pixel-major activations [R, C] (R = batch x pixels,
// channels contiguous): per-channel reductions in two stages (partials per
// chunk of rows, then one thread per channel), the normalisation, and the
// backward pass. Same math as the CPU reference (`backend/cpu/norm.rs`):
// statistics from sums shifted by the first row, biased variance for the
// normalisation, unbiased for the running estimate.
//
// Shared binding layout: 0 uniform, 1..3 read-only, 4..5 read-write.

struct P {
    r: u32, c: u32, rows_per_chunk: u32, chunks: u32,
    flags: u32,          // 1 accumulate dx, 2 fused ReLU, 4 affine
    gamma: u32, beta: u32, rmean: u32,  // offsets into the flat parameter buffers
    rvar: u32, pad0: u32, pad1: u32, pad2: u32,
    eps: f32, momentum: f32, pad3: f32, pad4: f32,
}

@group(0) @binding(0) var<uniform> U: P;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;

var<workgroup> red: array<vec2<f32>, 256>;

// Two sums per channel over a chunk of rows. Flags bit 9: the plain sum
// of in0 (a bias gradient). Forward (bits 8, 9 clear):
// in0 = x; sums of (x - x[0, c]) and its square. Backward (bit 8 set):
// in0 = dy, in1 = x, in2 = stats [mean, invstd] per channel; sums of dy and
// dy * (x - mean). Workgroup (64 channels) x (4 row lanes); dispatch
// (ceil(C / 64), chunks). Partials -> out0[(chunk * C + c) * 2 + {0, 1}].
@compute @workgroup_size(64, 4)
fn partial(@builtin(workgroup_id) wg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let c = wg.x * 64u + lid.x;
    let chunk = wg.y;
    var acc = vec2<f32>(0.0, 0.0);
    if (c < U.c) {
        let r0 = chunk * U.rows_per_chunk;
        let r1 = min(U.r, r0 + U.rows_per_chunk);
        if ((U.flags & 512u) != 0u) {
            for (var r = r0 + lid.y; r < r1; r += 4u) {
                acc.x += in0[r * U.c + c];
            }
        } else if ((U.flags & 256u) == 0u) {
            let shift = in0[c];
            for (var r = r0 + lid.y; r < r1; r += 4u) {
                let d = in0[r * U.c + c] - shift;
                acc += vec2<f32>(d, d * d);
            }
        } else {
            let mean = in2[c * 2u];
            for (var r = r0 + lid.y; r < r1; r += 4u) {
                let dy = in0[r * U.c + c];
                acc += vec2<f32>(dy, dy * (in1[r * U.c + c] - mean));
            }
        }
    }
    red[li] = acc;
    workgroupBarrier();
    if (lid.y == 0u && c < U.c) {
        let t = red[li] + red[li + 64u] + red[li + 128u] + red[li + 192u];
        out0[(chunk * U.c + c) * 2u] = t.x;
        out0[(chunk * U.c + c) * 2u + 1u] = t.y;
    }
}

fn chunk_sums(c: u32) -> vec2<f32> {
    var s = vec2<f32>(0.0, 0.0);
    for (var k = 0u; k < U.chunks; k++) {
        s += vec2<f32>(in0[(k * U.c + c) * 2u], in0[(k * U.c + c) * 2u + 1u]);
    }
    return s;
}

// One thread per channel: in0 = partials, in1 = x (the shift row).
// out0 = stats [mean, invstd]; out1 = the parameters, whose running mean
// and variance are updated with the op's momentum.
@compute @workgroup_size(64)
fn stats_train(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= U.c) { return; }
    let s = chunk_sums(c);
    let rf = f32(U.r);
    let mean = in1[c] + s.x / rf;
    let ss = max(s.y - s.x * s.x / rf, 0.0);
    let invstd = 1.0 / sqrt(ss / rf + U.eps);
    out0[c * 2u] = mean;
    out0[c * 2u + 1u] = invstd;
    var unbiased = 0.0;
    if (U.r > 1u) {
        unbiased = ss / f32(U.r - 1u);
    }
    let m = U.momentum;
    out1[U.rmean + c] = (1.0 - m) * out1[U.rmean + c] + m * mean;
    out1[U.rvar + c] = (1.0 - m) * out1[U.rvar + c] + m * unbiased;
}

// A bias gradient: the column sums of dy (partials in in0) into the flat
// gradients (out0) at offset `gamma`.
@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= U.c) { return; }
    out0[U.gamma + c] = chunk_sums(c).x;
}

// Eval mode: stats from the running estimates (in0 = parameters).
@compute @workgroup_size(64)
fn stats_eval(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= U.c) { return; }
    out0[c * 2u] = in0[U.rmean + c];
    out0[c * 2u + 1u] = 1.0 / sqrt(in0[U.rvar + c] + U.eps);
}

// y = (x - mean) * invstd * gamma + beta (then ReLU if flagged).
// in0 = x, in1 = stats, in2 = effective parameters (gamma, beta).
@compute @workgroup_size(256)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= U.r * U.c) { return; }
    let c = i % U.c;
    var scale = in1[c * 2u + 1u];
    var shift = 0.0;
    if ((U.flags & 4u) != 0u) {
        scale *= in2[U.gamma + c];
        shift = in2[U.beta + c];
    }
    var y = (in0[i] - in1[c * 2u]) * scale + shift;
    if ((U.flags & 2u) != 0u) {
        y = max(y, 0.0);
    }
    out0[i] = y;
}

// One thread per channel: in0 = backward partials [sum dy, sum dy*(x-mean)],
// in2 = effective parameters; out0 = this node's statistics buffer: reads
// [mean, invstd] at 2c, writes the backward coefficients [gamma*invstd,
// gs*mean(dy), gs*invstd*mean(dy*xhat)] at 2C + 3c; out1 = flat gradients
// (gamma and beta entries).
@compute @workgroup_size(64)
fn coef_bwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= U.c) { return; }
    let s = chunk_sums(c);
    let invstd = out0[c * 2u + 1u];
    let rf = f32(U.r);
    let sdyx = s.y * invstd; // sum of dy * xhat
    var gs = invstd;
    if ((U.flags & 4u) != 0u) {
        gs *= in2[U.gamma + c];
        out1[U.gamma + c] = sdyx;
        out1[U.beta + c] = s.x;
    }
    let k = 2u * U.c + c * 3u;
    out0[k] = gs;
    out0[k + 1u] = gs * s.x / rf;
    out0[k + 2u] = gs * sdyx / rf * invstd;
}

// dx = gs * dy - off - (x - mean) * slope. in0 = dy, in1 = x, in2 =
// stats (mean) followed at offset 2C by the coefficients.
@compute @workgroup_size(256)
fn apply_bwd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= U.r * U.c) { return; }
    let c = i % U.c;
    let k = 2u * U.c + c * 3u;
    let v = in2[k] * in0[i] - in2[k + 1u] - (in1[i] - in2[c * 2u]) * in2[k + 2u];
    if ((U.flags & 1u) != 0u) {
        out0[i] += v;
    } else {
        out0[i] = v;
    }
}
