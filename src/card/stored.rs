//! Weights in their stored (compressed) form.
//!
//! The in-memory [`Model`] keeps full f32 latent weights and `Vec<bool>`
//! masks because training needs them; a card only needs what the network
//! computes with. So the file holds, per tensor, the cheapest exact
//! encoding of its effective values: masks bit-packed, only kept values,
//! and for binary weights only sign bits and one scale (with the mask as
//! Rice-coded gaps where the tensor is sparse enough for that to be
//! smaller). Tensors whose
//! [`Precision`] is f16 or int8 (per output channel) are stored in that
//! format (with their mask, if any) and decode back to the same f32 values
//! and the same precision tag, so load → save is bit-identical.

use super::bits::{count_ones, is_canonical, pack_bits, packed_len, unpack_bits};
use crate::ir::{Graph, ParamKind};
use crate::model::{Model, ParamTensor, Precision, WeightState};
use serde::{Deserialize, Serialize};

/// One tensor's values as stored. Bit vectors are packed LSB-first
/// ([`pack_bits`]) and masks have one bit per element of the tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoredTensor {
    /// Every value as f32.
    Dense { values: Vec<f32> },
    /// Unstructured sparsity: the mask and the kept values in index order.
    Masked { mask: Vec<u8>, values: Vec<f32> },
    /// 1-bit weights: one sign bit per kept element (1 = negative), the mask,
    /// and the scale α. Effective value: ±α where kept, 0 elsewhere.
    Binary {
        signs: Vec<u8>,
        mask: Vec<u8>,
        alpha: f32,
    },
    /// IEEE half-precision bit patterns; with a mask, only kept elements.
    F16 {
        mask: Option<Vec<u8>>,
        values: Vec<u16>,
    },
    /// Symmetric int8 with one scale per output channel (the first shape
    /// dimension); value = q · scale. With a mask, only kept elements.
    Int8 {
        mask: Option<Vec<u8>>,
        scales: Vec<f32>,
        values: Vec<i8>,
    },
    /// 1-bit weights as [`crate::rice`] codes: per output channel (the
    /// first shape dimension) the gaps between kept elements and each kept
    /// element's sign, with the Rice parameter `k` that makes the stream
    /// shortest, and the scale α. Chosen over [`StoredTensor::Binary`] when
    /// smaller: from roughly 80 % zeros on (a 90 %-sparse tensor takes
    /// about 0.6 bits per weight instead of 1.1). Appended last: variants
    /// are stored by index.
    BinaryRice { k: u8, words: Vec<u32>, alpha: f32 },
}

/// A parameter tensor as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredParam {
    pub kind: ParamKind,
    pub shape: Vec<usize>,
    pub data: StoredTensor,
}

/// A model as stored: the graph and, per node, its stored tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    pub graph: Graph,
    pub params: Vec<Vec<StoredParam>>,
}

impl StoredTensor {
    /// The encoding of a tensor's effective values for its state and
    /// precision: exact for f32 and binary tensors and for quantized tensors
    /// whose values are on their format's grid (what quantization leaves).
    /// An int8 tag whose scales do not fit the tensor falls back to
    /// max-abs scales ([`Model::validate`] refuses such models anyway).
    pub fn from_tensor(t: &ParamTensor) -> StoredTensor {
        let mask = t.mask();
        match (&t.state, &t.precision) {
            (WeightState::Binary { .. }, _) | (_, Precision::F32) => Self::exact(t),
            (_, Precision::F16) => Self::encode_f16(&t.data, mask),
            (_, Precision::Int8 { scales }) => {
                let oc = t.shape.first().copied().unwrap_or(1);
                Self::encode_int8_with_scales(&t.data, scales, mask)
                    .or_else(|_| Self::encode_int8(&t.data, oc, mask))
                    .unwrap_or_else(|_| Self::exact(t))
            }
        }
    }

    /// The exact f32 (or binary) encoding of a tensor's effective values.
    fn exact(t: &ParamTensor) -> StoredTensor {
        match &t.state {
            WeightState::Dense => StoredTensor::Dense {
                values: t.data.clone(),
            },
            WeightState::Masked { mask } => StoredTensor::Masked {
                mask: pack_bits(mask),
                values: kept(&t.data, mask),
            },
            WeightState::Binary { mask, alpha } => {
                // Same sign rule as `ParamTensor::effective`: w >= 0 is +α,
                // anything else (negative or NaN) is -α.
                let negative = |w: f32| w < 0.0 || w.is_nan();
                let kept_signs: Vec<bool> = t
                    .data
                    .iter()
                    .zip(mask)
                    .filter(|(_, m)| **m)
                    .map(|(&w, _)| negative(w))
                    .collect();
                let bits = StoredTensor::Binary {
                    signs: pack_bits(&kept_signs),
                    mask: pack_bits(mask),
                    alpha: *alpha,
                };
                let rows = t.shape.first().copied().unwrap_or(1).max(1);
                if t.data.is_empty() || !t.data.len().is_multiple_of(rows) {
                    return bits;
                }
                let units: Vec<f32> = t
                    .data
                    .iter()
                    .zip(mask)
                    .map(|(&w, &m)| match (m, negative(w)) {
                        (false, _) => 0.0,
                        (true, true) => -1.0,
                        (true, false) => 1.0,
                    })
                    .collect();
                let s = crate::rice::encode(&units, t.data.len() / rows);
                let rice = StoredTensor::BinaryRice {
                    k: s.k,
                    words: s.words,
                    alpha: *alpha,
                };
                let n = t.data.len();
                if rice.stored_bits(n) < bits.stored_bits(n) {
                    rice
                } else {
                    bits
                }
            }
        }
    }

    /// The precision tag a decoded tensor gets: f16 and int8 encodings keep
    /// their format (and scales), everything else is f32.
    pub fn precision(&self) -> Precision {
        match self {
            StoredTensor::F16 { .. } => Precision::F16,
            StoredTensor::Int8 { scales, .. } => Precision::Int8 {
                scales: scales.clone(),
            },
            _ => Precision::F32,
        }
    }

    /// Half-precision encoding of `values` (kept elements only when a mask
    /// is given). Rounds to nearest; values outside f16 range saturate to ±∞.
    pub fn encode_f16(values: &[f32], mask: Option<&[bool]>) -> StoredTensor {
        let v = match mask {
            Some(m) => kept(values, m),
            None => values.to_vec(),
        };
        StoredTensor::F16 {
            mask: mask.map(pack_bits),
            values: v
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect(),
        }
    }

    /// Symmetric int8 encoding with the given per-output-channel scales
    /// (one per channel; `scales.len()` must divide `values.len()`): each
    /// kept value becomes round(w / scale) clamped to [-127, 127].
    pub fn encode_int8_with_scales(
        values: &[f32],
        scales: &[f32],
        mask: Option<&[bool]>,
    ) -> Result<StoredTensor, String> {
        if scales.is_empty() || !values.len().is_multiple_of(scales.len()) {
            return Err(format!(
                "{} values do not split into {} output channels",
                values.len(),
                scales.len()
            ));
        }
        let per = (values.len() / scales.len()).max(1);
        let keep = |i: usize| mask.is_none_or(|m| m.get(i).copied().unwrap_or(false));
        let q = values
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(i, &w)| quantize_i8(w, scales[i / per]))
            .collect();
        Ok(StoredTensor::Int8 {
            mask: mask.map(pack_bits),
            scales: scales.to_vec(),
            values: q,
        })
    }

    /// Symmetric per-output-channel int8 encoding: `out_channels` must
    /// divide `values.len()`; channel c's scale is max|w| / 127 over its
    /// elements (1 when all are zero, so decoding stays finite).
    pub fn encode_int8(
        values: &[f32],
        out_channels: usize,
        mask: Option<&[bool]>,
    ) -> Result<StoredTensor, String> {
        if out_channels == 0 || !values.len().is_multiple_of(out_channels) {
            return Err(format!(
                "{} values do not split into {out_channels} output channels",
                values.len()
            ));
        }
        let per = values.len() / out_channels;
        let keep = |i: usize| mask.is_none_or(|m| m.get(i).copied().unwrap_or(false));
        let scales: Vec<f32> = values
            .chunks(per.max(1))
            .enumerate()
            .map(|(c, ch)| {
                let max = ch
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| keep(c * per + j))
                    .fold(0f32, |a, (_, w)| a.max(w.abs()));
                if max > 0.0 { max / 127.0 } else { 1.0 }
            })
            .collect();
        Self::encode_int8_with_scales(values, &scales, mask)
    }

    /// Short name of the encoding ("dense", "masked", "binary", "f16", "int8").
    pub fn format(&self) -> &'static str {
        match self {
            StoredTensor::Dense { .. } => "dense",
            StoredTensor::Masked { .. } => "masked",
            StoredTensor::Binary { .. } => "binary",
            StoredTensor::F16 { .. } => "f16",
            StoredTensor::Int8 { .. } => "int8",
            StoredTensor::BinaryRice { .. } => "binary-rice",
        }
    }

    /// Bits the encoding needs for a tensor of `n` elements: mask and sign
    /// bits, values and scales (no serialization overhead).
    pub fn stored_bits(&self, n: usize) -> u64 {
        let n = n as u64;
        let mask_bits = |m: &Option<Vec<u8>>| if m.is_some() { n } else { 0 };
        match self {
            StoredTensor::Dense { values } => 32 * values.len() as u64,
            StoredTensor::Masked { values, .. } => n + 32 * values.len() as u64,
            StoredTensor::Binary { mask, .. } => n + count_ones(mask, n as usize) as u64 + 32,
            StoredTensor::F16 { mask, values } => mask_bits(mask) + 16 * values.len() as u64,
            StoredTensor::Int8 {
                mask,
                scales,
                values,
            } => mask_bits(mask) + 8 * values.len() as u64 + 32 * scales.len() as u64,
            StoredTensor::BinaryRice { words, .. } => 32 * words.len() as u64 + 8 + 32,
        }
    }

    /// Stored bytes (bits rounded up to whole bytes).
    pub fn stored_bytes(&self, n: usize) -> u64 {
        self.stored_bits(n).div_ceil(8)
    }

    /// Decodes into f32 data and a weight state for a tensor of `n`
    /// elements whose first dimension is `out_channels`. Every length is
    /// checked against the stored vectors before anything is allocated, so
    /// damaged input yields an error, never a panic or a huge allocation.
    pub fn decode(&self, n: usize, out_channels: usize) -> Result<(Vec<f32>, WeightState), String> {
        let mask_of = |m: &[u8]| -> Result<Vec<bool>, String> {
            if !is_canonical(m, n) {
                return Err(format!(
                    "mask has {} bytes, {n} elements need {}",
                    m.len(),
                    packed_len(n)
                ));
            }
            Ok(unpack_bits(m, n))
        };
        let count = |what: &str, have: usize, want: usize| -> Result<(), String> {
            if have == want {
                Ok(())
            } else {
                Err(format!("{what}: {have} stored, {want} expected"))
            }
        };
        match self {
            StoredTensor::Dense { values } => {
                count("values", values.len(), n)?;
                Ok((values.clone(), WeightState::Dense))
            }
            StoredTensor::Masked { mask, values } => {
                let mask = mask_of(mask)?;
                let data = scatter(&mask, values)?;
                Ok((data, WeightState::Masked { mask }))
            }
            StoredTensor::Binary { signs, mask, alpha } => {
                let mask = mask_of(mask)?;
                let k = mask.iter().filter(|&&m| m).count();
                if !is_canonical(signs, k) {
                    return Err(format!(
                        "sign bits: {} bytes stored for {k} kept weights",
                        signs.len()
                    ));
                }
                let signs: Vec<f32> = unpack_bits(signs, k)
                    .into_iter()
                    .map(|neg| if neg { -1.0 } else { 1.0 })
                    .collect();
                let data = scatter(&mask, &signs)?;
                Ok((
                    data,
                    WeightState::Binary {
                        mask,
                        alpha: *alpha,
                    },
                ))
            }
            StoredTensor::F16 { mask, values } => {
                let v: Vec<f32> = values
                    .iter()
                    .map(|&b| half::f16::from_bits(b).to_f32())
                    .collect();
                with_optional_mask(mask.as_deref().map(mask_of).transpose()?, v, n)
            }
            StoredTensor::Int8 {
                mask,
                scales,
                values,
            } => {
                count("int8 scales", scales.len(), out_channels)?;
                if out_channels == 0 || !n.is_multiple_of(out_channels) {
                    return Err(format!(
                        "{n} elements do not split into {out_channels} channels"
                    ));
                }
                let per = n / out_channels;
                let mask = mask.as_deref().map(mask_of).transpose()?;
                let k = mask
                    .as_ref()
                    .map_or(n, |m| m.iter().filter(|&&b| b).count());
                count("int8 values", values.len(), k)?;
                // Kept element j sits at index idx[j]; its channel picks the scale.
                let idx: Vec<usize> = match &mask {
                    Some(m) => (0..n).filter(|&i| m[i]).collect(),
                    None => (0..n).collect(),
                };
                let v = values
                    .iter()
                    .zip(&idx)
                    .map(|(&q, &i)| q as f32 * scales[i / per.max(1)])
                    .collect();
                with_optional_mask(mask, v, n)
            }
            StoredTensor::BinaryRice { k, words, alpha } => decode_rice(*k, words, n, out_channels)
                .map(|(data, mask)| {
                    (
                        data,
                        WeightState::Binary {
                            mask,
                            alpha: *alpha,
                        },
                    )
                }),
        }
    }
}

/// ±1 where kept, 0 elsewhere, and the mask, of a Rice-coded binary tensor
/// of `n` elements in `rows` rows. The stream must be exactly what
/// [`crate::rice::encode`] writes for that pattern (its parameter, no bits
/// beyond the last code, no spare word), so that load → save is
/// bit-identical and a damaged stream is an error, not another model.
fn decode_rice(
    k: u8,
    words: &[u32],
    n: usize,
    rows: usize,
) -> Result<(Vec<f32>, Vec<bool>), String> {
    if rows == 0 || !n.is_multiple_of(rows) {
        return Err(format!("{n} elements do not split into {rows} rows"));
    }
    let cols = n / rows;
    let stream = crate::rice::RiceStream {
        k,
        words: words.to_vec(),
        bits: 32 * words.len() as u64,
    };
    let kept = crate::rice::decode(&stream, rows, cols)
        .ok_or_else(|| "Rice-coded weights: the stream ends early or overruns a row".to_string())?;
    let mut data = vec![0.0f32; n];
    let mut mask = vec![false; n];
    for (r, row) in kept.iter().enumerate() {
        for &(c, negative) in row {
            let i = r * cols + c;
            mask[i] = true;
            data[i] = if negative { -1.0 } else { 1.0 };
        }
    }
    let again = crate::rice::encode(&data, cols);
    // Equal words also mean the decoder read exactly the encoded bits.
    if again.k != k || again.words != words {
        return Err(format!(
            "Rice-coded weights: not the canonical stream ({} words, parameter {k})",
            words.len()
        ));
    }
    Ok((data, mask))
}

/// round(w / scale) clamped to the symmetric int8 range [-127, 127].
pub fn quantize_i8(w: f32, scale: f32) -> i8 {
    (w / scale).round().clamp(-127.0, 127.0) as i8
}

/// The values at kept positions, in index order.
fn kept(values: &[f32], mask: &[bool]) -> Vec<f32> {
    values
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(&w, _)| w)
        .collect()
}

/// Places `values` at the kept positions of `mask`, zero elsewhere.
fn scatter(mask: &[bool], values: &[f32]) -> Result<Vec<f32>, String> {
    let k = mask.iter().filter(|&&m| m).count();
    if values.len() != k {
        return Err(format!(
            "{} values stored for {k} kept weights",
            values.len()
        ));
    }
    let mut it = values.iter();
    Ok(mask
        .iter()
        .map(|&m| {
            if m {
                it.next().copied().unwrap_or(0.0)
            } else {
                0.0
            }
        })
        .collect())
}

/// Decoded quantized values: masked when the encoding carried a mask.
fn with_optional_mask(
    mask: Option<Vec<bool>>,
    values: Vec<f32>,
    n: usize,
) -> Result<(Vec<f32>, WeightState), String> {
    match mask {
        Some(mask) => Ok((scatter(&mask, &values)?, WeightState::Masked { mask })),
        None if values.len() == n => Ok((values, WeightState::Dense)),
        None => Err(format!("{} values stored, {n} expected", values.len())),
    }
}

/// Element count of a shape, or an error when it overflows.
fn elements(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))
}

impl StoredParam {
    /// Element count of the tensor (checked against overflow).
    pub fn elements(&self) -> Result<usize, String> {
        elements(&self.shape)
    }
}

impl StoredModel {
    /// The stored form of a model (exact: effective weights are preserved).
    pub fn from_model(model: &Model) -> StoredModel {
        StoredModel {
            graph: model.graph.clone(),
            params: model
                .params
                .iter()
                .map(|ts| {
                    ts.iter()
                        .map(|t| StoredParam {
                            kind: t.kind,
                            shape: t.shape.clone(),
                            data: StoredTensor::from_tensor(t),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Decodes every tensor. Structural checks against the graph are left
    /// to [`Model::validate`]; this only makes the tensors self-consistent.
    pub fn into_model(self) -> Result<Model, String> {
        let names: Vec<String> = self.graph.nodes.iter().map(|n| n.name.clone()).collect();
        let mut params = Vec::with_capacity(self.params.len());
        for (i, ts) in self.params.into_iter().enumerate() {
            let layer = names.get(i).map(String::as_str).unwrap_or("?");
            let mut out = Vec::with_capacity(ts.len());
            for p in ts {
                let n = p.elements().map_err(|e| format!("layer '{layer}': {e}"))?;
                let oc = p.shape.first().copied().unwrap_or(1);
                let (data, state) = p.data.decode(n, oc).map_err(|e| {
                    format!(
                        "layer '{layer}': {} ({}): {e}",
                        p.kind.suffix(),
                        p.data.format()
                    )
                })?;
                out.push(ParamTensor {
                    kind: p.kind,
                    shape: p.shape,
                    data,
                    state,
                    precision: p.data.precision(),
                });
            }
            params.push(out);
        }
        Ok(Model {
            graph: self.graph,
            params,
        })
    }
}
