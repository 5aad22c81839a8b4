//! The single safe wrapper around the `gemm` crate. All `unsafe` of the CPU
//! backend lives in this file: every call checks that the strided views it
//! hands to `gemm::gemm` stay inside their slices.

use gemm::Parallelism;

/// Products smaller than this many multiply-adds run on the calling thread:
/// splitting them costs more than it gains.
const PAR_MIN_WORK: usize = 1 << 18;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A mutable strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Highest index a `rows x cols` view with strides `rs`, `cs` touches, or
/// `None` when the view is empty.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        None
    } else {
        Some((rows - 1) * rs + (cols - 1) * cs)
    }
}

impl<'a> Mat<'a> {
    /// Row-major `rows x cols` starting at `data[0]`.
    pub fn rm(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transposed view (free: only strides change).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn in_bounds(&self) -> bool {
        last_index(self.rows, self.cols, self.rs, self.cs).is_none_or(|i| i < self.data.len())
    }
}

impl<'a> MatMut<'a> {
    /// Row-major `rows x cols` starting at `data[0]`.
    pub fn rm(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    fn in_bounds(&self) -> bool {
        last_index(self.rows, self.cols, self.rs, self.cs).is_none_or(|i| i < self.data.len())
    }
}

/// `dst = (dst if accumulate else 0) + alpha * lhs * rhs`, multi-threaded
/// when the product is large enough to profit.
///
/// Panics (a programming error, never user input) when the shapes disagree
/// or a view leaves its slice.
pub fn sgemm(dst: MatMut<'_>, accumulate: bool, lhs: Mat<'_>, rhs: Mat<'_>, alpha: f32) {
    gemm_impl(dst, accumulate, lhs, rhs, alpha, true);
}

/// [`sgemm`] on the calling thread only, for products that already run
/// inside a parallel loop over batch chunks.
pub fn sgemm_serial(dst: MatMut<'_>, accumulate: bool, lhs: Mat<'_>, rhs: Mat<'_>, alpha: f32) {
    gemm_impl(dst, accumulate, lhs, rhs, alpha, false);
}

fn gemm_impl(
    dst: MatMut<'_>,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    alpha: f32,
    may_thread: bool,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "sgemm shapes: dst {m}x{n}, lhs {}x{}, rhs {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(
        dst.in_bounds() && lhs.in_bounds() && rhs.in_bounds(),
        "sgemm view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    let work = m.saturating_mul(n).saturating_mul(k);
    let par = if may_thread && work >= PAR_MIN_WORK && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every element (i, j) of the
    // three views, i < rows and j < cols, lies inside its slice; `dst` is a
    // unique borrow so it cannot alias `lhs` or `rhs`. Strides fit in isize
    // because the indices they produce are below a slice length.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_with_transposes() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 1.0).collect();
        let mut c = vec![1.0; m * n];
        // c += 2 * a * bt^T
        sgemm(
            MatMut::rm(&mut c, m, n),
            true,
            Mat::rm(&a, m, k),
            Mat::rm(&bt, n, k).t(),
            2.0,
        );
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum();
                assert!((c[i * n + j] - (1.0 + 2.0 * s)).abs() < 1e-4);
            }
        }
    }
}
