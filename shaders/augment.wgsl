// Training-batch augmentation on the device: random crop (zero padding)
// and horizontal flip of uint8 images, then per-channel normalization,
// written straight into the first activation's pixel-major layout.
// The host reference is `FlipCrop::apply` + `normalize_into` (src/data/):
// out[b, y, x, c] = lut[c][img[b, c, y + dy, x' + dx]], x' = W - 1 - x when
// flipped, byte 0 outside the image; the tables hold (byte/255 - mean)/std
// as the host computes it, so both sides give identical floats.
//
// The shared binding layout of the backend: 0 uniform P, 1..3 read-only
// inputs, 4..5 read-write outputs. Its own file because the bytes are
// read as u32 words (ops.wgsl binds every input as f32).

struct P {
    n: u32, c: u32, h: u32, w: u32,   // output elements B*H*W*C, channels, height, width
}

@group(0) @binding(0) var<uniform> U: P;
// [B, C, H, W] bytes, four per word, little-endian.
@group(0) @binding(1) var<storage, read> bytes: array<u32>;
// Per image: dy, dx, flip (0 or 1).
@group(0) @binding(2) var<storage, read> shifts: array<i32>;
// [C, 256]: each byte's normalized value.
@group(0) @binding(3) var<storage, read> lut: array<f32>;
// [B, H, W, C].
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;

@compute @workgroup_size(256)
fn augment_nhwc(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= U.n) { return; }
    let c = i % U.c;
    let p = i / U.c;
    let x = p % U.w;
    let y = (p / U.w) % U.h;
    let b = p / (U.w * U.h);
    let dy = shifts[3u * b];
    let dx = shifts[3u * b + 1u];
    var ox = x;
    if (shifts[3u * b + 2u] != 0) {
        ox = U.w - 1u - x;
    }
    let sy = i32(y) + dy;
    let sx = i32(ox) + dx;
    var byte = 0u;
    if (sy >= 0 && sy < i32(U.h) && sx >= 0 && sx < i32(U.w)) {
        let k = ((b * U.c + c) * U.h + u32(sy)) * U.w + u32(sx);
        byte = (bytes[k / 4u] >> ((k % 4u) * 8u)) & 255u;
    }
    out0[i] = lut[c * 256u + byte];
}
