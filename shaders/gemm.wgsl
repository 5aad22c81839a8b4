// Implicit GEMM behind Conv2d and Linear, forward and backward:
// C[M, N] = sum_k A(m, k) * B(k, n), with A and B read straight from the
// activations and weights (no im2col buffer). MODE picks the operator:
//   0 conv forward      A = im2col(x)      B = W^T            C = y (+ bias)
//   1 conv input grad   A = col(dy)        B = W              C = dx (+= dx)
//   2 conv weight grad  A = dy^T           B = im2col(x)      C = partial dW
//   3 linear forward    A = x              B = W^T            C = y (+ bias)
//   4 linear input grad A = dy             B = W              C = dx (+= dx)
//   5 linear weight grad A = dy^T          B = x              C = partial dW
// Activations are pixel-major ([B, H, W, C], channels contiguous), weights
// are the IR's [Co, Ci/groups, Kh, Kw] and [Out, In] at `woff` in the flat
// parameter buffer. Bindings follow the backend's shared layout (0 uniform,
// 1..3 read-only, 4..5 read-write). Weight-gradient modes split K (the batch x pixels) over
// workgroup z; a reduction pass sums the partials.
override MODE: u32 = 0u;

struct Geom {
    m: u32, n: u32, k: u32, flags: u32,   // flags: 1 bias, 2 accumulate into C
    h: u32, w: u32, ci: u32, co: u32,      // input H, W, channels; output channels
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, ph: u32, pw: u32,
    cig: u32, cog: u32, woff: u32, boff: u32, // channels per group, weight/bias offsets
    splits: u32, kchunk: u32, pad0: u32, pad1: u32,
}

@group(0) @binding(0) var<uniform> G: Geom;
@group(0) @binding(1) var<storage, read> src0: array<f32>;
@group(0) @binding(2) var<storage, read> src1: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// Register tile per thread: TM x TN outputs (1, 2, 4 or 8 each) of a
// 16 x 16 workgroup, so workgroup tiles are 16..128 rows / columns, picked
// per layer. The backend fills in TM and TN and generates the lines marked
// `//!` with one named register per output: loops over a private array
// would leave the accumulators in local memory.
const TM: u32 = 4u; //! TM
const TN: u32 = 4u; //! TN
const BK: u32 = 16u;
// Row stride of the shared tiles (up to 128 wide), padded against bank
// conflicts.
const SA: u32 = 132u;

var<workgroup> As: array<f32, 2112>; // [BK][SA]
var<workgroup> Bs: array<f32, 2112>; // [BK][SA]
// Convolutions: the pixel behind each tile row (modes 0, 1) or each k of
// the current K step (mode 2), decomposed once instead of per element:
// (image row base, first input row, first input column), x < 0 = padding.
var<workgroup> rowinfo: array<vec3<i32>, 128>;
var<workgroup> kinfo: array<vec3<i32>, 16>;

// Mode 0: (b*H, oy*sh - ph, ox*sw - pw) of output pixel p; mode 1:
// (b*OH, iy + ph, ix + pw) of input pixel p.
fn pixel_info(p: u32) -> vec3<i32> {
    if (MODE == 1u) {
        let hw = G.h * G.w;
        let r = p % hw;
        return vec3<i32>(i32((p / hw) * G.oh), i32(r / G.w + G.ph), i32(r % G.w + G.pw));
    }
    let ohw = G.oh * G.ow;
    let r = p % ohw;
    return vec3<i32>(i32((p / ohw) * G.h), i32((r / G.ow) * G.sh) - i32(G.ph),
                     i32((r % G.ow) * G.sw) - i32(G.pw));
}

// x at pixel info `q` shifted by kernel tap (kh, kw), channel c of group g.
fn x_at(q: vec3<i32>, kh: i32, kw: i32, c: u32, g: u32) -> f32 {
    let iy = q.y + kh;
    let ix = q.z + kw;
    if (q.x < 0 || iy < 0 || ix < 0 || iy >= i32(G.h) || ix >= i32(G.w)) {
        return 0.0;
    }
    let i = ((u32(q.x + iy)) * G.w + u32(ix)) * G.ci + g * G.cig + c;
    if (MODE == 2u) {
        return src1[i];
    }
    return src0[i];
}

// x[b, iy, ix, c] of input pixel `p` = b*H*W + iy*W + ix shifted by the
// kernel offset; 0 outside the image.
fn im2col(p_out: u32, kk: u32, g: u32) -> f32 {
    let ohw = G.oh * G.ow;
    let b = p_out / ohw;
    let r = p_out % ohw;
    let oy = r / G.ow;
    let ox = r % G.ow;
    let kpos = kk / G.cig;
    let c = kk % G.cig;
    let iy = i32(oy * G.sh + kpos / G.kw) - i32(G.ph);
    let ix = i32(ox * G.sw + kpos % G.kw) - i32(G.pw);
    if (iy < 0 || ix < 0 || iy >= i32(G.h) || ix >= i32(G.w)) {
        return 0.0;
    }
    return src1_or_0(((b * G.h + u32(iy)) * G.w + u32(ix)) * G.ci + g * G.cig + c);
}

// The activation operand of im2col: src0 in the forward, src1 in dW.
fn src1_or_0(i: u32) -> f32 {
    if (MODE == 2u) {
        return src1[i];
    }
    return src0[i];
}

// Weight [co][ci][kh][kw] for group g, output channel n (within group) and
// reduction index kk = kpos * cig + ci.
fn weight_fwd(kk: u32, n: u32, g: u32) -> f32 {
    let kpos = kk / G.cig;
    let c = kk % G.cig;
    return src1[G.woff + ((g * G.cog + n) * G.cig + c) * G.kh * G.kw + kpos];
}

fn load_a(m: u32, kk: u32, g: u32) -> f32 {
    switch MODE {
        case 0u: {
            return im2col(m, kk, g);
        }
        case 1u: {
            // m = input pixel, kk = kpos * cog + co: dy at the output pixel
            // whose window puts kernel tap kpos on this input pixel.
            let hw = G.h * G.w;
            let b = m / hw;
            let r = m % hw;
            let iy = r / G.w;
            let ix = r % G.w;
            let kpos = kk / G.cog;
            let c = kk % G.cog;
            let ty = i32(iy + G.ph) - i32(kpos / G.kw);
            let tx = i32(ix + G.pw) - i32(kpos % G.kw);
            if (ty < 0 || tx < 0) {
                return 0.0;
            }
            let uy = u32(ty);
            let ux = u32(tx);
            if (uy % G.sh != 0u || ux % G.sw != 0u) {
                return 0.0;
            }
            let oy = uy / G.sh;
            let ox = ux / G.sw;
            if (oy >= G.oh || ox >= G.ow) {
                return 0.0;
            }
            return src0[((b * G.oh + oy) * G.ow + ox) * G.co + g * G.cog + c];
        }
        case 2u: {
            // m = output channel in group, kk = output pixel
            return src0[kk * G.co + g * G.cog + m];
        }
        case 3u: {
            return src0[m * G.k + kk];
        }
        case 4u: {
            return src0[m * G.k + kk];
        }
        default: {
            // 5: m = output feature, kk = sample
            return src0[kk * G.m + m];
        }
    }
}

fn load_b(kk: u32, n: u32, g: u32) -> f32 {
    switch MODE {
        case 0u: {
            return weight_fwd(kk, n, g);
        }
        case 1u: {
            // kk = kpos * cog + co, n = input channel in group
            let kpos = kk / G.cog;
            let c = kk % G.cog;
            return src1[G.woff + ((g * G.cog + c) * G.cig + n) * G.kh * G.kw + kpos];
        }
        case 2u: {
            return im2col(kk, n, g);
        }
        case 3u: {
            return src1[G.woff + n * G.k + kk];
        }
        case 4u: {
            return src1[G.woff + kk * G.n + n];
        }
        default: {
            return src1[kk * G.n + n];
        }
    }
}

// Whether A is read with consecutive threads on consecutive k (its
// contiguous dimension) rather than consecutive m.
fn a_k_fast() -> bool {
    return MODE == 0u || MODE == 1u || MODE == 3u || MODE == 4u;
}

fn b_k_fast() -> bool {
    return MODE == 0u || MODE == 3u;
}

fn store(m: u32, n: u32, g: u32, z: u32, v: f32) {
    switch MODE {
        case 0u, 3u: {
            var out = v;
            if ((G.flags & 1u) != 0u) {
                out += src1[G.boff + g * G.cog + n];
            }
            dst[m * G.co + g * G.cog + n] = out;
        }
        case 1u, 4u: {
            let i = m * G.ci + g * G.cig + n;
            if ((G.flags & 2u) != 0u) {
                dst[i] += v;
            } else {
                dst[i] = v;
            }
        }
        case 2u: {
            // n = kpos * cig + ci -> IR layout [co][ci][kh][kw]; one slab per split
            let split = z % G.splits;
            let kpos = n / G.cig;
            let c = n % G.cig;
            let khw = G.kh * G.kw;
            let size = G.co * G.cig * khw;
            dst[split * size + ((g * G.cog + m) * G.cig + c) * khw + kpos] = v;
        }
        default: {
            dst[z * G.m * G.n + m * G.n + n] = v;
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let bm = 16u * TM;
    let bn = 16u * TN;
    let m0 = wg.y * bm;
    let n0 = wg.x * bn;
    let z = wg.z;
    var g = z;
    var k_begin = 0u;
    var k_end = G.k;
    if (MODE == 2u || MODE == 5u) {
        g = z / G.splits;
        k_begin = (z % G.splits) * G.kchunk;
        k_end = min(G.k, k_begin + G.kchunk);
    }
    // Thread (x, y) owns rows y + 16 i and columns x + 16 j: shared reads
    // are conflict-free and global stores coalesce along n.
    //! ACC
    if (MODE == 0u || MODE == 1u) {
        for (var r = li; r < bm; r += 256u) {
            var info = vec3<i32>(-1, 0, 0);
            if (m0 + r < G.m) {
                info = pixel_info(m0 + r);
            }
            rowinfo[r] = info;
        }
        workgroupBarrier();
    }
    // Mode 2: this thread's B column is fixed (256 is a multiple of bn).
    let n2 = n0 + li % bn;
    let n2pos = n2 / max(G.cig, 1u);
    let n2c = n2 % max(G.cig, 1u);
    let n2kh = i32(n2pos / G.kw);
    let n2kw = i32(n2pos % G.kw);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        // Convolutions: this thread's k within the step is fixed (k-fast
        // loads, 256 a multiple of 16): one decomposition per K step.
        let kt = k0 + li % BK;
        let kcg = select(G.cog, G.cig, MODE == 0u);
        let kpos = kt / max(kcg, 1u);
        let kc = kt % max(kcg, 1u);
        let kh = i32(kpos / G.kw);
        let kw = i32(kpos % G.kw);
        if (MODE == 2u) {
            if (li < BK) {
                var info = vec3<i32>(-1, 0, 0);
                if (k0 + li < k_end) {
                    info = pixel_info(k0 + li);
                }
                kinfo[li] = info;
            }
            workgroupBarrier();
        }
        for (var i = 0u; i < TM; i++) {
            if (MODE == 0u || MODE == 1u) {
                let mm = li / BK + i * 16u;
                let q = rowinfo[mm];
                var v = 0.0;
                if (kt < k_end && q.x >= 0) {
                    if (MODE == 0u) {
                        v = x_at(q, kh, kw, kc, g);
                    } else {
                        let ty = q.y - kh;
                        let tx = q.z - kw;
                        if (ty >= 0 && tx >= 0 && u32(ty) % G.sh == 0u && u32(tx) % G.sw == 0u) {
                            let oy = u32(ty) / G.sh;
                            let ox = u32(tx) / G.sw;
                            if (oy < G.oh && ox < G.ow) {
                                v = src0[((u32(q.x) + oy) * G.ow + ox) * G.co + g * G.cog + kc];
                            }
                        }
                    }
                }
                As[(li % BK) * SA + mm] = v;
                continue;
            }
            let e = li + i * 256u;
            var kk: u32;
            var mm: u32;
            if (a_k_fast()) {
                kk = e % BK;
                mm = e / BK;
            } else {
                kk = e / bm;
                mm = e % bm;
            }
            let m = m0 + mm;
            let k = k0 + kk;
            var v = 0.0;
            if (m < G.m && k < k_end) {
                v = load_a(m, k, g);
            }
            As[kk * SA + mm] = v;
        }
        for (var i = 0u; i < TN; i++) {
            if (MODE == 0u) {
                let nn = li / BK + i * 16u;
                let n = n0 + nn;
                var v = 0.0;
                if (n < G.n && kt < k_end) {
                    v = src1[G.woff + ((g * G.cog + n) * G.cig + kc) * G.kh * G.kw + kpos];
                }
                Bs[(li % BK) * SA + nn] = v;
                continue;
            }
            if (MODE == 2u) {
                let kk = (li + i * 256u) / bn;
                var v = 0.0;
                if (n2 < G.n) {
                    v = x_at(kinfo[kk], n2kh, n2kw, n2c, g);
                }
                Bs[kk * SA + li % bn] = v;
                continue;
            }
            let e = li + i * 256u;
            var kk: u32;
            var nn: u32;
            if (b_k_fast()) {
                kk = e % BK;
                nn = e / BK;
            } else {
                kk = e / bn;
                nn = e % bn;
            }
            let n = n0 + nn;
            let k = k0 + kk;
            var v = 0.0;
            if (n < G.n && k < k_end) {
                v = load_b(k, n, g);
            }
            Bs[kk * SA + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ra = kk * SA + lid.y;
            let rb = kk * SA + lid.x;
            //! FMA
        }
        workgroupBarrier();
    }
    //! STORE
}
