// Inference kernels of the shader targets (`cardc compile --target
// wgsl|spirv|msl|glsl`). The kernels are the same for every model: what a
// model is lives in `weights.bin` (packed weights, biases, multipliers and
// the normalization table, as 32-bit words) and `schedule.json` (one
// dispatch per step of the lowered program, with its parameter block).
//
// Activations are channels-first f32 ([C][H][W] per image, the reference's
// order) in one arena laid out by cardc's static memory plan; image `z` of
// a batch uses `arena[z * P.stride ..]` and reads its raw bytes from
// `image[z * P.img_words ..]`. One thread per output element; 64 threads
// per workgroup; element = x + y * 64 * num_workgroups.x (a second
// dimension when a layer has more than 65535 workgroups); z = image.
//
// Binding layout (group 0), the same for every entry point:
// 0 uniform P (a 256-byte-aligned block per dispatch, dynamic offset),
// 1 arena (read-write f32), 2 blob (read-only u32), 3 image (read-only u32,
// four bytes per word, little-endian).

const NONE: u32 = 0xffffffffu;

// Weight formats of `matrix_layer` (one entry point each; P.format says
// which, for a host program's bookkeeping).
const FMT_F32: u32 = 0u;
const FMT_F16: u32 = 1u;
const FMT_INT8: u32 = 2u;
const FMT_SPARSE: u32 = 3u;
const FMT_BINARY: u32 = 4u;
const FMT_SPARSE8: u32 = 5u;

struct Params {
    n: u32,          // output elements per image
    in_off: u32,     // arena offset (floats) of the input
    in2_off: u32,    // arena offset of the second input (add_tensors)
    out_off: u32,    // arena offset of the output
    stride: u32,     // arena floats per image
    img_words: u32,  // image words per image
    c: u32,          // input channels
    ih: u32,
    iw: u32,
    oc: u32,         // output channels
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    act: u32,        // 0 none, 1 ReLU, 2 ReLU6, 3 Sign
    format: u32,     // FMT_*
    w_off: u32,      // blob offsets (words) of the weights / sparse increments
    vals_off: u32,   // sparse values (f32; sparse8: int8, four per word)
    rows_off: u32,   // sparse row starts (oc + 1 entries)
    mask_off: u32,   // binary keep mask, NONE: all kept
    mult_off: u32,   // per-output-channel multiplier, NONE: 1
    bias_off: u32,   // per-output-channel bias (affine_channels: shift)
    words: u32,      // binary words per kernel position, ceil(c / 32)
    inc16: u32,      // sparse increments are 16-bit (else 32-bit)
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad3: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(2) var<storage, read> blob: array<u32>;
@group(0) @binding(3) var<storage, read> image: array<u32>;

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

fn blob_f32(i: u32) -> f32 {
    return bitcast<f32>(blob[i]);
}

// Int8 number `idx` of the array at word `off` (four per word, the first
// in the low byte), as f32.
fn blob_i8(off: u32, idx: u32) -> f32 {
    return f32(extractBits(bitcast<i32>(blob[off + idx / 4u]), (idx % 4u) * 8u, 8u));
}

// The reference's ReLU (v > 0 ? v : 0), ReLU6 and Sign (v >= 0 ? 1 : -1).
fn activate(v: f32, a: u32) -> f32 {
    if (a == 3u) {
        return select(-1.0, 1.0, v >= 0.0);
    }
    if (a == 1u) {
        return select(0.0, v, v > 0.0);
    }
    if (a == 2u) {
        return select(0.0, min(v, 6.0), v > 0.0);
    }
    return v;
}

// Raw CHW bytes -> normalized floats through the table lut[c][byte] (at w_off).
@compute @workgroup_size(64)
fn normalize_image(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let ch = i / (P.ih * P.iw);
    let word = image[gid.z * P.img_words + i / 4u];
    let byte = (word >> ((i % 4u) * 8u)) & 0xffu;
    arena[gid.z * P.stride + P.out_off + i] = blob_f32(P.w_off + ch * 256u + byte);
}

// Input pixel (ci, iy, ix) of the current image, 0 in the padding.
fn input_at(base: u32, ci: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(P.ih) || ix >= i32(P.iw)) {
        return 0.0;
    }
    return arena[base + (ci * P.ih + u32(iy)) * P.iw + u32(ix)];
}

// IEEE half bits -> f32, exactly (integer arithmetic, so no shader
// language needs f16 support: unpack2x16float is an optional capability).
fn half_to_f32(h: u32) -> f32 {
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    var v: f32;
    if (e == 0u) {
        v = f32(m) * (1.0 / 16777216.0);  // zero or subnormal: m * 2^-24
    } else if (e == 31u) {
        v = bitcast<f32>(0x7f800000u | (m << 13u));
    } else {
        v = bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
    }
    return select(v, -v, (h & 0x8000u) != 0u);
}

// Dense formats: weight `idx` (= o * cols + k) of output channel `o` at
// kernel position `p`, input channel `ci`.
fn dense_weight(idx: u32, o: u32, p: u32, ci: u32, format: u32) -> f32 {
    switch (format) {
        case 0u: {
            return blob_f32(P.w_off + idx);
        }
        case 1u: {
            return half_to_f32((blob[P.w_off + idx / 2u] >> ((idx & 1u) * 16u)) & 0xffffu);
        }
        case 2u: {
            return blob_i8(P.w_off, idx);
        }
        default: {
            // Binary: signs (bit set = -1) and the keep mask, bit ci % 32
            // of word ((o * positions + p) * words + ci / 32).
            let at = (o * P.kh * P.kw + p) * P.words + ci / 32u;
            let bit = ci % 32u;
            if (P.mask_off != NONE && ((blob[P.mask_off + at] >> bit) & 1u) == 0u) {
                return 0.0;
            }
            return select(1.0, -1.0, ((blob[P.w_off + at] >> bit) & 1u) == 1u);
        }
    }
}

// Increment j of a sparse layer: the distance in patch order from the
// previous nonzero of the row (the first from 0).
fn sparse_increment(j: u32) -> u32 {
    if (P.inc16 == 1u) {
        return (blob[P.w_off + j / 2u] >> ((j & 1u) * 16u)) & 0xffffu;
    }
    return blob[P.w_off + j];
}

// Convolution or linear layer (BatchNorm folded): out = act(acc * mult + bias)
// with acc the patch dot product in weight format `format`. Patch order is
// [kh][kw][c], as the weights are packed. One entry point per format with
// `format` a literal, so compilers fold the format's branches away instead
// of evaluating every format's code under a mask.
fn matrix_layer(gid: vec3<u32>, nwg: vec3<u32>, format: u32) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let pixels = P.oh * P.ow;
    let o = i / pixels;
    let pix = i % pixels;
    let y0 = i32(pix / P.ow) * i32(P.sh) - i32(P.ph);
    let x0 = i32(pix % P.ow) * i32(P.sw) - i32(P.pw);
    let base = gid.z * P.stride + P.in_off;
    let cols = P.kh * P.kw * P.c;
    var acc = 0.0;
    if (format == FMT_SPARSE || format == FMT_SPARSE8) {
        var k = 0u;
        for (var j = blob[P.rows_off + o]; j < blob[P.rows_off + o + 1u]; j++) {
            k += sparse_increment(j);
            let p = k / P.c;
            let x = input_at(base, k % P.c, y0 + i32(p / P.kw), x0 + i32(p % P.kw));
            var w: f32;
            if (format == FMT_SPARSE8) {
                w = blob_i8(P.vals_off, j);
            } else {
                w = blob_f32(P.vals_off + j);
            }
            acc += w * x;
        }
    } else {
        for (var p = 0u; p < P.kh * P.kw; p++) {
            let iy = y0 + i32(p / P.kw);
            let ix = x0 + i32(p % P.kw);
            if (iy < 0 || ix < 0 || iy >= i32(P.ih) || ix >= i32(P.iw)) {
                continue;
            }
            let at = base + u32(iy) * P.iw + u32(ix);
            for (var ci = 0u; ci < P.c; ci++) {
                let w = dense_weight(o * cols + p * P.c + ci, o, p, ci, format);
                acc += w * arena[at + ci * P.ih * P.iw];
            }
        }
    }
    var m = 1.0;
    if (P.mult_off != NONE) {
        m = blob_f32(P.mult_off + o);
    }
    arena[gid.z * P.stride + P.out_off + i] = activate(acc * m + blob_f32(P.bias_off + o), P.act);
}

@compute @workgroup_size(64)
fn matrix_f32(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    matrix_layer(gid, nwg, FMT_F32);
}

@compute @workgroup_size(64)
fn matrix_f16(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    matrix_layer(gid, nwg, FMT_F16);
}

@compute @workgroup_size(64)
fn matrix_int8(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    matrix_layer(gid, nwg, FMT_INT8);
}

@compute @workgroup_size(64)
fn matrix_sparse(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    matrix_layer(gid, nwg, FMT_SPARSE);
}

@compute @workgroup_size(64)
fn matrix_sparse8(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    matrix_layer(gid, nwg, FMT_SPARSE8);
}

@compute @workgroup_size(64)
fn matrix_binary(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    matrix_layer(gid, nwg, FMT_BINARY);
}

// out = act(a + b), elementwise (residual connections).
@compute @workgroup_size(64)
fn add_tensors(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let z = gid.z * P.stride;
    arena[z + P.out_off + i] = activate(arena[z + P.in_off + i] + arena[z + P.in2_off + i], P.act);
}

// A BatchNorm that could not be folded: act(x * scale[c] + shift[c]),
// scale at w_off and shift at bias_off.
@compute @workgroup_size(64)
fn affine_channels(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let ch = i / (P.ih * P.iw);
    let z = gid.z * P.stride;
    let v = arena[z + P.in_off + i] * blob_f32(P.w_off + ch) + blob_f32(P.bias_off + ch);
    arena[z + P.out_off + i] = activate(v, P.act);
}

// A ReLU/ReLU6 that could not be fused.
@compute @workgroup_size(64)
fn activation_only(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let z = gid.z * P.stride;
    arena[z + P.out_off + i] = activate(arena[z + P.in_off + i], P.act);
}

// Max (is_max) or average pooling over the window clipped to the image;
// the average divides by kh * kw (padding counts as zeros).
fn pool(gid: vec3<u32>, nwg: vec3<u32>, is_max: bool) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let pixels = P.oh * P.ow;
    let ch = i / pixels;
    let pix = i % pixels;
    let ys = i32(pix / P.ow) * i32(P.sh) - i32(P.ph);
    let xs = i32(pix % P.ow) * i32(P.sw) - i32(P.pw);
    let y0 = u32(max(ys, 0));
    let y1 = u32(min(ys + i32(P.kh), i32(P.ih)));
    let x0 = u32(max(xs, 0));
    let x1 = u32(min(xs + i32(P.kw), i32(P.iw)));
    let base = gid.z * P.stride + P.in_off + ch * P.ih * P.iw;
    var acc = 0.0;
    var seen = false;
    for (var y = y0; y < y1; y++) {
        for (var x = x0; x < x1; x++) {
            let v = arena[base + y * P.iw + x];
            if (!is_max) {
                acc += v;
            } else if (!seen || v > acc) {
                acc = v;
            }
            seen = true;
        }
    }
    if (!is_max) {
        acc = acc * (1.0 / f32(P.kh * P.kw));
    }
    arena[gid.z * P.stride + P.out_off + i] = acc;
}

@compute @workgroup_size(64)
fn max_pool(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    pool(gid, nwg, true);
}

@compute @workgroup_size(64)
fn avg_pool(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    pool(gid, nwg, false);
}

// Mean over the ih * iw pixels of each channel.
@compute @workgroup_size(64)
fn global_avg_pool(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let pixels = P.ih * P.iw;
    let base = gid.z * P.stride + P.in_off + i * pixels;
    var acc = 0.0;
    for (var p = 0u; p < pixels; p++) {
        acc += arena[base + p];
    }
    arena[gid.z * P.stride + P.out_off + i] = acc * (1.0 / f32(max(pixels, 1u)));
}
