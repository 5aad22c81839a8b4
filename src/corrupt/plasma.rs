//! The diamond-square plasma fractal of the reference's `fog`, step for step
//! (including its `wibble · U(−wibble, wibble)` perturbation and the
//! wrap-around neighbours that `numpy.roll` gives).

use crate::rng::Rng;

/// A `size × size` height map in [0, 1]; `size` must be a power of two.
pub fn plasma_fractal(size: usize, decay: f64, rng: &mut Rng) -> Vec<f64> {
    debug_assert!(size.is_power_of_two());
    let n = size;
    let mut map = vec![0.0f64; n * n];
    let mut step = n;
    let mut wibble = 100.0f64;
    let wibbled = |v: f64, wibble: f64, rng: &mut Rng| {
        v / 4.0 + wibble * (wibble * (2.0 * rng.uniform_f64() - 1.0))
    };
    while step >= 2 {
        let m = n / step;
        let half = step / 2;
        let corner = |map: &[f64], i: usize, j: usize| map[(i % m) * step * n + (j % m) * step];
        let centre = |map: &[f64], i: usize, j: usize| {
            map[((i % m) * step + half) * n + (j % m) * step + half]
        };
        // Squares: the centre of each square is the mean of its corners.
        for i in 0..m {
            for j in 0..m {
                let s = corner(&map, i, j)
                    + corner(&map, i + 1, j)
                    + corner(&map, i, j + 1)
                    + corner(&map, i + 1, j + 1);
                map[(i * step + half) * n + j * step + half] = wibbled(s, wibble, rng);
            }
        }
        // Diamonds on the rows of corners: left/right corners, centres above/below.
        let mut top = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                let s = centre(&map, i, j)
                    + centre(&map, i + m - 1, j)
                    + corner(&map, i, j)
                    + corner(&map, i, j + 1);
                top[i * m + j] = wibbled(s, wibble, rng);
            }
        }
        for i in 0..m {
            for j in 0..m {
                map[i * step * n + j * step + half] = top[i * m + j];
            }
        }
        // Diamonds on the columns of corners.
        let mut left = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                let s = centre(&map, i, j)
                    + centre(&map, i, j + m - 1)
                    + corner(&map, i, j)
                    + corner(&map, i + 1, j);
                left[i * m + j] = wibbled(s, wibble, rng);
            }
        }
        for i in 0..m {
            for j in 0..m {
                map[(i * step + half) * n + j * step] = left[i * m + j];
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = map.iter().cloned().fold(f64::INFINITY, f64::min);
    map.iter_mut().for_each(|v| *v -= min);
    let max = map.iter().cloned().fold(0.0, f64::max);
    if max > 0.0 {
        map.iter_mut().for_each(|v| *v /= max);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plasma_spans_zero_to_one_and_is_deterministic() {
        let a = plasma_fractal(32, 3.0, &mut Rng::new(1));
        let b = plasma_fractal(32, 3.0, &mut Rng::new(1));
        assert_eq!(a, b);
        let min = a.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = a.iter().cloned().fold(0.0, f64::max);
        assert_eq!((min, max), (0.0, 1.0));
        assert_eq!(plasma_fractal(8, 2.0, &mut Rng::new(2)).len(), 64);
    }
}
