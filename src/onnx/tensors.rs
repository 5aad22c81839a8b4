//! Reading ONNX constants (initializers, `Constant` nodes) and node
//! attributes from untrusted files: every size is checked against the data
//! actually present before anything is allocated from it.

use crate::ir::graph::MAX_ELEMENTS;
use anyhow::{anyhow, bail};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// A constant tensor's values.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant tensor (initializer or `Constant` output).
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: ConstData,
}

impl Const {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (integers converted).
    pub fn floats(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as integers; fails for float tensors.
    pub fn ints(&self) -> anyhow::Result<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Ok(v),
            ConstData::F32(_) => bail!("expected an integer tensor, got floats"),
        }
    }

    /// The single value of a one-element tensor.
    pub fn scalar(&self) -> anyhow::Result<f32> {
        match self.floats().as_slice() {
            [v] => Ok(*v),
            v => bail!("expected one value, got {}", v.len()),
        }
    }
}

/// Element count of `dims`, refused when negative or over [`MAX_ELEMENTS`].
fn element_count(dims: &[i64]) -> anyhow::Result<(Vec<usize>, usize)> {
    let mut n: usize = 1;
    let mut out = Vec::with_capacity(dims.len().min(16));
    if dims.len() > 16 {
        bail!("{} dimensions (at most 16 supported)", dims.len());
    }
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| anyhow!("negative dimension {d}"))?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| anyhow!("dimensions {dims:?} exceed {MAX_ELEMENTS} elements"))?;
        out.push(d);
    }
    Ok((out, n))
}

/// Decodes one tensor. Float tensors may hold `raw_data` (little-endian)
/// or `float_data`; doubles are narrowed to f32; int32/int64 become i64.
pub fn read_tensor(t: &pb::TensorProto) -> anyhow::Result<Const> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        bail!("weights stored in an external file are not supported");
    }
    let (dims, n) = element_count(&t.dims)?;
    let raw = &t.raw_data;
    // `n` is checked against the bytes present before any allocation of n.
    let want = |have: usize, what: &str| -> anyhow::Result<()> {
        if have != n {
            bail!("holds {have} {what} values for dimensions {dims:?} ({n} expected)");
        }
        Ok(())
    };
    let dtype = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let data = match dtype {
        DataType::Float if !raw.is_empty() => {
            raw_len(raw.len(), n, 4)?;
            ConstData::F32(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        }
        DataType::Float => {
            want(t.float_data.len(), "float")?;
            ConstData::F32(t.float_data.clone())
        }
        DataType::Double if !raw.is_empty() => {
            raw_len(raw.len(), n, 8)?;
            ConstData::F32(
                raw.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                    .collect(),
            )
        }
        DataType::Double => {
            want(t.double_data.len(), "double")?;
            ConstData::F32(t.double_data.iter().map(|&v| v as f32).collect())
        }
        DataType::Int64 if !raw.is_empty() => {
            raw_len(raw.len(), n, 8)?;
            ConstData::I64(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            )
        }
        DataType::Int64 => {
            want(t.int64_data.len(), "int64")?;
            ConstData::I64(t.int64_data.clone())
        }
        DataType::Int32 if !raw.is_empty() => {
            raw_len(raw.len(), n, 4)?;
            ConstData::I64(
                raw.chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect(),
            )
        }
        DataType::Int32 => {
            want(t.int32_data.len(), "int32")?;
            ConstData::I64(t.int32_data.iter().map(|&v| v as i64).collect())
        }
        other => bail!(
            "element type {} is not supported (float, double, int32, int64 are)",
            other.as_str_name()
        ),
    };
    Ok(Const { dims, data })
}

/// `raw_data` must hold exactly `n` elements of `size` bytes.
fn raw_len(have: usize, n: usize, size: usize) -> anyhow::Result<()> {
    if have != n * size {
        bail!(
            "raw data has {have} bytes, {} expected for {n} values",
            n * size
        );
    }
    Ok(())
}

/// Typed access to a node's attributes.
pub struct Attrs<'a>(pub &'a [pb::AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }

    /// An integer list attribute.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }

    /// A float attribute.
    pub fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f)
    }

    /// A string attribute (lossy UTF-8).
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// The value of a `Constant` node (any of its value attributes).
    pub fn constant_value(&self) -> anyhow::Result<Const> {
        if let Some(t) = self.get("value").and_then(|a| a.t.as_ref()) {
            return read_tensor(t);
        }
        if let Some(a) = self.get("value_float") {
            return Ok(Const {
                dims: vec![],
                data: ConstData::F32(vec![a.f]),
            });
        }
        if let Some(a) = self.get("value_floats") {
            return Ok(Const {
                dims: vec![a.floats.len()],
                data: ConstData::F32(a.floats.clone()),
            });
        }
        if let Some(a) = self.get("value_int") {
            return Ok(Const {
                dims: vec![],
                data: ConstData::I64(vec![a.i]),
            });
        }
        if let Some(a) = self.get("value_ints") {
            return Ok(Const {
                dims: vec![a.ints.len()],
                data: ConstData::I64(a.ints.clone()),
            });
        }
        bail!("Constant without a supported value attribute (value, value_float(s), value_int(s))")
    }
}

/// A size attribute value (kernel, stride, pad, group), bounded so later
/// arithmetic cannot overflow.
pub fn size(v: i64, what: &str) -> anyhow::Result<usize> {
    const MAX: i64 = 1 << 24;
    if !(0..=MAX).contains(&v) {
        bail!("{what} {v} is out of range (0..={MAX})");
    }
    Ok(v as usize)
}
