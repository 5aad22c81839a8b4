//! Linear filters with the border rules of the libraries the reference
//! generator calls: scipy/skimage Gaussian filtering (`nearest`, `reflect`)
//! and OpenCV's `filter2D` / `GaussianBlur` (`BORDER_REFLECT_101`).
//!
//! Planes are row-major `h × w` slices of `f64`.

/// How an index outside `0..n` maps back inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Repeat the edge sample (scipy `nearest`).
    Nearest,
    /// Mirror including the edge sample, `dcba|abcd|dcba` (scipy `reflect`).
    Reflect,
    /// Mirror without repeating the edge, `dcb|abcd|cba` (OpenCV's default).
    Reflect101,
}

impl Border {
    /// The index inside `0..n` that `i` reads. Works for any offset (the
    /// pattern repeats), which matters for kernels wider than the image.
    pub fn index(self, i: isize, n: usize) -> usize {
        let n = n as isize;
        if (0..n).contains(&i) {
            return i as usize;
        }
        match self {
            Border::Nearest => i.clamp(0, n - 1) as usize,
            Border::Reflect => {
                let p = 2 * n;
                let m = i.rem_euclid(p);
                (if m >= n { p - 1 - m } else { m }) as usize
            }
            Border::Reflect101 => {
                if n == 1 {
                    return 0;
                }
                let p = 2 * n - 2;
                let m = i.rem_euclid(p);
                (if m >= n { p - m } else { m }) as usize
            }
        }
    }
}

/// scipy's `gaussian_filter1d` weights: radius `int(truncate·σ + 0.5)`,
/// normalized `exp(-x²/2σ²)`.
pub fn scipy_gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f64> {
    let radius = (truncate * sigma + 0.5) as isize;
    let mut k: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// OpenCV's `getGaussianKernel(ksize, sigma)` for `sigma > 0`.
pub fn cv_gaussian_kernel(ksize: usize, sigma: f64) -> Vec<f64> {
    let c = (ksize as f64 - 1.0) / 2.0;
    let mut k: Vec<f64> = (0..ksize)
        .map(|i| {
            let x = i as f64 - c;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Correlates every row (`axis = 1`) or column (`axis = 0`) of a plane with
/// a centred odd-length kernel.
pub fn correlate1d(
    plane: &[f64],
    h: usize,
    w: usize,
    k: &[f64],
    axis: usize,
    border: Border,
) -> Vec<f64> {
    let r = (k.len() / 2) as isize;
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (j, &kv) in k.iter().enumerate() {
                let o = j as isize - r;
                let v = if axis == 1 {
                    plane[y * w + border.index(x as isize + o, w)]
                } else {
                    plane[border.index(y as isize + o, h) * w + x]
                };
                acc += kv * v;
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// scipy `gaussian_filter` of one plane (axis 0, then axis 1), as skimage's
/// `gaussian` applies it per channel. σ ≈ 0 leaves the plane as it is.
pub fn gaussian_filter(
    plane: &[f64],
    h: usize,
    w: usize,
    sigma: f64,
    truncate: f64,
    border: Border,
) -> Vec<f64> {
    if sigma <= 1e-15 {
        return plane.to_vec();
    }
    let k = scipy_gaussian_kernel(sigma, truncate);
    let rows = correlate1d(plane, h, w, &k, 0, border);
    correlate1d(&rows, h, w, &k, 1, border)
}

/// OpenCV `filter2D` (correlation, anchor at the centre, reflect-101
/// border) with a `kh × kw` kernel. All-zero kernel margins are skipped,
/// which changes nothing but the cost.
pub fn filter2d(
    plane: &[f64],
    h: usize,
    w: usize,
    kernel: &[f64],
    kh: usize,
    kw: usize,
) -> Vec<f64> {
    let (ay, ax) = ((kh / 2) as isize, (kw / 2) as isize);
    let taps: Vec<(isize, isize, f64)> = (0..kh)
        .flat_map(|i| (0..kw).map(move |j| (i, j)))
        .filter(|&(i, j)| kernel[i * kw + j] != 0.0)
        .map(|(i, j)| (i as isize - ay, j as isize - ax, kernel[i * kw + j]))
        .collect();
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for &(dy, dx, kv) in &taps {
                let yy = Border::Reflect101.index(y as isize + dy, h);
                let xx = Border::Reflect101.index(x as isize + dx, w);
                acc += kv * plane[yy * w + xx];
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// OpenCV `GaussianBlur(src, (ksize, ksize), sigma)` with the default border.
pub fn cv_gaussian_blur(plane: &[f64], h: usize, w: usize, ksize: usize, sigma: f64) -> Vec<f64> {
    let k = cv_gaussian_kernel(ksize, sigma);
    let rows = correlate1d(plane, h, w, &k, 1, Border::Reflect101);
    correlate1d(&rows, h, w, &k, 0, Border::Reflect101)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_follow_the_library_conventions() {
        // n = 4: abcd
        let r: Vec<usize> = (-3..7).map(|i| Border::Reflect.index(i, 4)).collect();
        assert_eq!(r, [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        let r: Vec<usize> = (-3..7).map(|i| Border::Reflect101.index(i, 4)).collect();
        assert_eq!(r, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        let r: Vec<usize> = (-2..6).map(|i| Border::Nearest.index(i, 4)).collect();
        assert_eq!(r, [0, 0, 0, 1, 2, 3, 3, 3]);
        assert_eq!(Border::Reflect101.index(-5, 1), 0);
    }

    #[test]
    fn gaussian_kernels_match_scipy_sizes_and_sum_to_one() {
        assert_eq!(scipy_gaussian_kernel(0.05, 4.0).len(), 1);
        assert_eq!(scipy_gaussian_kernel(0.25, 4.0).len(), 3);
        assert_eq!(scipy_gaussian_kernel(0.4, 4.0).len(), 5);
        assert_eq!(scipy_gaussian_kernel(6.4, 3.0).len(), 39);
        let k = scipy_gaussian_kernel(1.0, 4.0);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // The filter keeps a constant plane constant, even with a kernel
        // wider than the plane.
        let p = vec![0.3; 5 * 4];
        for b in [Border::Nearest, Border::Reflect, Border::Reflect101] {
            let k = scipy_gaussian_kernel(6.4, 3.0);
            let out = correlate1d(&p, 5, 4, &k, 1, b);
            assert!(out.iter().all(|v| (v - 0.3).abs() < 1e-12));
        }
    }

    #[test]
    fn filter2d_with_a_delta_kernel_is_the_identity() {
        let p: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let mut k = vec![0.0; 9];
        k[4] = 1.0;
        assert_eq!(filter2d(&p, 3, 4, &k, 3, 3), p);
        // A shift kernel reads the right neighbour, mirrored at the edge.
        let mut k = vec![0.0; 9];
        k[5] = 1.0;
        let out = filter2d(&p, 3, 4, &k, 3, 3);
        assert_eq!(&out[0..4], &[1.0, 2.0, 3.0, 2.0]);
    }
}
