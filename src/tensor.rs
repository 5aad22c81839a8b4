//! A plain dense f32 tensor: a shape and row-major data.

use serde::{Deserialize, Serialize};

/// Dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Wraps `data`; panics if the element count does not match (a programming error).
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor shape {shape:?} does not match {} elements",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of the leading (batch) dimension.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Index of the largest value in each row of a [B, K] tensor.
    pub fn argmax_rows(&self) -> Vec<usize> {
        let k = self.shape.last().copied().unwrap_or(1).max(1);
        self.data
            .chunks(k)
            .map(|row| {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }

    /// Row-wise softmax of a [B, K] tensor (numerically stable).
    pub fn softmax_rows(&self) -> Tensor {
        let k = self.shape.last().copied().unwrap_or(1).max(1);
        let mut out = self.data.clone();
        for row in out.chunks_mut(k) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            for v in row.iter_mut() {
                *v /= s;
            }
        }
        Tensor {
            shape: self.shape.clone(),
            data: out,
        }
    }
}
