//! Decoding ONNX tensors (raw_data, the typed `*_data` fields, or external bytes) into `f32`
//! values for statistics, histograms and compression.

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::model::dtype::DType;
use crate::model::proto::TensorProto;

/// Number of elements of a tensor with `dims`, or an error naming `what` when a dimension is
/// negative or the product does not fit in 64 bits.
pub fn element_count(what: &str, dims: &[i64]) -> Result<u64> {
    let mut count: u64 = 1;
    for &dim in dims {
        let dim = u64::try_from(dim).map_err(|_| Error::BadTensor {
            tensor: what.to_owned(),
            reason: format!("negative dimension in shape {dims:?}"),
        })?;
        count = count
            .checked_mul(dim)
            .ok_or_else(|| Error::DimensionOverflow {
                what: what.to_owned(),
                dims: dims.to_vec(),
            })?;
    }
    Ok(count)
}

/// Decodes the values of `tensor` as `f32`.
///
/// `external` holds the tensor's bytes when they live in an external-data file (already read
/// and bounds-checked by the loader). Returns `Ok(None)` for element types that have no
/// numeric reading (strings, complex, 4-bit and 8-bit floats).
pub fn decode_f32(tensor: &TensorProto, external: Option<&[u8]>) -> Result<Option<Vec<f32>>> {
    let name = tensor.name();
    let dtype = DType(tensor.data_type());
    let count = element_count(name, &tensor.dims)?;
    let count = usize::try_from(count).map_err(|_| Error::DimensionOverflow {
        what: name.to_owned(),
        dims: tensor.dims.clone(),
    })?;
    let bad = |reason: String| Error::BadTensor {
        tensor: name.to_owned(),
        reason,
    };

    let raw = external.or(tensor.raw_data.as_deref());
    // Types without an f32 reading are still checked: their data must hold what the dims say.
    if little_endian_width(dtype).is_none() {
        check_undecoded(tensor, dtype, count, raw)?;
        return Ok(None);
    }
    if let Some(raw) = raw {
        let Some(width) = little_endian_width(dtype) else {
            return Ok(None);
        };
        let expected = count
            .checked_mul(width)
            .ok_or_else(|| Error::DimensionOverflow {
                what: name.to_owned(),
                dims: tensor.dims.clone(),
            })?;
        if raw.len() != expected {
            return Err(bad(format!(
                "holds {} bytes of data but its {} shape {:?} needs {expected}",
                raw.len(),
                dtype,
                tensor.dims
            )));
        }
        return Ok(Some(decode_little_endian(dtype, raw)));
    }

    let values: Option<Vec<f32>> = match dtype.0 {
        1 => Some(tensor.float_data.clone()),
        11 => Some(tensor.double_data.iter().map(|&v| v as f32).collect()),
        // Types of 16 bits or less are stored one per int32 (float16/bfloat16 as bit patterns).
        2..=6 | 9 => Some(
            tensor
                .int32_data
                .iter()
                .map(|&v| int32_field(dtype, v))
                .collect(),
        ),
        10 => Some(
            tensor
                .int32_data
                .iter()
                .map(|&v| f16::from_bits(v as u16).to_f32())
                .collect(),
        ),
        16 => Some(
            tensor
                .int32_data
                .iter()
                .map(|&v| bf16::from_bits(v as u16).to_f32())
                .collect(),
        ),
        7 => Some(tensor.int64_data.iter().map(|&v| v as f32).collect()),
        12 | 13 => Some(tensor.uint64_data.iter().map(|&v| v as f32).collect()),
        _ => None,
    };
    match values {
        Some(values) if values.len() == count => Ok(Some(values)),
        // ONNX allows an empty typed field for a zero-element tensor only.
        Some(values) => Err(bad(format!(
            "holds {} values but its shape {:?} needs {count}",
            values.len(),
            tensor.dims
        ))),
        None => Ok(None),
    }
}

/// The element count of a tensor of a type not decoded to f32 (strings, complex, 8/4/2-bit
/// floats and integers) against the data it holds.
fn check_undecoded(
    tensor: &TensorProto,
    dtype: DType,
    count: usize,
    raw: Option<&[u8]>,
) -> Result<()> {
    let bad = |reason: String| Error::BadTensor {
        tensor: tensor.name().to_owned(),
        reason,
    };
    // Bytes per element in raw data (as a fraction for packed types) and the typed field's
    // entries per element.
    let (raw_len, field_len): (Option<usize>, usize) = match dtype.0 {
        8 => (None, tensor.string_data.len()),
        14 => (count.checked_mul(8), tensor.float_data.len() / 2),
        15 => (count.checked_mul(16), tensor.double_data.len() / 2),
        17..=20 | 24 => (Some(count), tensor.int32_data.len()),
        21..=23 => (Some(count.div_ceil(2)), tensor.int32_data.len() * 2),
        25 | 26 => (Some(count.div_ceil(4)), tensor.int32_data.len() * 4),
        other => {
            return Err(bad(format!("has an unknown data type ({other})")));
        }
    };
    match (raw, raw_len) {
        (Some(raw), Some(expected)) if raw.len() == expected => Ok(()),
        (Some(raw), Some(expected)) => Err(bad(format!(
            "holds {} bytes of data but its {dtype} shape {:?} needs {expected}",
            raw.len(),
            tensor.dims
        ))),
        (Some(_), None) => Err(bad(format!("a {dtype} tensor cannot hold raw data"))),
        (None, _) if field_len >= count && field_len <= count.saturating_add(3) => Ok(()),
        (None, _) => Err(bad(format!(
            "holds {field_len} values but its {dtype} shape {:?} needs {count}",
            tensor.dims
        ))),
    }
}

fn int32_field(dtype: DType, value: i32) -> f32 {
    match dtype.0 {
        2 => f32::from(value as u8),
        3 => f32::from(value as i8),
        4 => f32::from(value as u16),
        5 => f32::from(value as i16),
        9 => f32::from(u8::from(value != 0)),
        _ => value as f32,
    }
}

/// Bytes per element in `raw_data` for types decoded here.
fn little_endian_width(dtype: DType) -> Option<usize> {
    Some(match dtype.0 {
        2 | 3 | 9 => 1,
        4 | 5 | 10 | 16 => 2,
        1 | 6 | 12 => 4,
        7 | 11 | 13 => 8,
        _ => return None,
    })
}

fn decode_little_endian(dtype: DType, raw: &[u8]) -> Vec<f32> {
    fn map<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        raw.chunks_exact(N)
            .map(|chunk| {
                let mut bytes = [0u8; N];
                bytes.copy_from_slice(chunk);
                f(bytes)
            })
            .collect()
    }
    match dtype.0 {
        1 => map(raw, f32::from_le_bytes),
        2 => raw.iter().map(|&b| f32::from(b)).collect(),
        3 => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        9 => raw.iter().map(|&b| f32::from(u8::from(b != 0))).collect(),
        4 => map(raw, |b| f32::from(u16::from_le_bytes(b))),
        5 => map(raw, |b| f32::from(i16::from_le_bytes(b))),
        10 => map(raw, |b| f16::from_le_bytes(b).to_f32()),
        16 => map(raw, |b| bf16::from_le_bytes(b).to_f32()),
        6 => map(raw, |b| i32::from_le_bytes(b) as f32),
        12 => map(raw, |b| u32::from_le_bytes(b) as f32),
        7 => map(raw, |b| i64::from_le_bytes(b) as f32),
        11 => map(raw, |b| f64::from_le_bytes(b) as f32),
        13 => map(raw, |b| u64::from_le_bytes(b) as f32),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tensor(dtype: i32, dims: &[i64]) -> TensorProto {
        let mut t = TensorProto::new();
        t.set_name("t".into());
        t.set_data_type(dtype);
        t.dims = dims.to_vec();
        t
    }

    #[test]
    fn tensors_of_every_type_must_hold_what_their_dims_say() {
        let mut t = tensor(8, &[3]);
        t.string_data = vec![b"a".to_vec(), b"b".to_vec()];
        assert!(decode_f32(&t, None).is_err(), "2 strings for 3");
        t.string_data.push(b"c".to_vec());
        assert!(matches!(decode_f32(&t, None), Ok(None)));
        // complex64: 8 bytes per element.
        let mut c = tensor(14, &[2]);
        c.set_raw_data(vec![0; 15]);
        assert!(decode_f32(&c, None).is_err());
        c.set_raw_data(vec![0; 16]);
        assert!(decode_f32(&c, None).is_ok());
        // int4: two per byte.
        let mut i4 = tensor(22, &[5]);
        i4.set_raw_data(vec![0; 3]);
        assert!(decode_f32(&i4, None).is_ok());
        i4.set_raw_data(vec![0; 2]);
        assert!(decode_f32(&i4, None).is_err());
        assert!(decode_f32(&tensor(99, &[1]), None).is_err());
        // 2^63 - 1 strings declared, none held (the parameter total overflowed before).
        assert!(decode_f32(&tensor(8, &[i64::MAX]), None).is_err());
    }

    #[test]
    fn decodes_raw_float16_and_bfloat16() {
        let mut t = tensor(10, &[2]);
        let mut raw = f16::from_f32(1.5).to_le_bytes().to_vec();
        raw.extend(f16::from_f32(-2.0).to_le_bytes());
        t.set_raw_data(raw);
        assert_eq!(decode_f32(&t, None).unwrap(), Some(vec![1.5, -2.0]));

        let mut t = tensor(16, &[1]);
        t.set_raw_data(bf16::from_f32(0.5).to_le_bytes().to_vec());
        assert_eq!(decode_f32(&t, None).unwrap(), Some(vec![0.5]));
    }

    #[test]
    fn decodes_typed_fields() {
        let mut t = tensor(3, &[3]);
        t.int32_data = vec![-128, 0, 127];
        assert_eq!(
            decode_f32(&t, None).unwrap(),
            Some(vec![-128.0, 0.0, 127.0])
        );
        let mut t = tensor(7, &[2]);
        t.int64_data = vec![-5, 9];
        assert_eq!(decode_f32(&t, None).unwrap(), Some(vec![-5.0, 9.0]));
        let mut t = tensor(11, &[1]);
        t.double_data = vec![0.25];
        assert_eq!(decode_f32(&t, None).unwrap(), Some(vec![0.25]));
    }

    #[test]
    fn size_mismatch_is_an_error_not_a_panic() {
        let mut t = tensor(1, &[4]);
        t.set_raw_data(vec![0; 15]);
        let err = decode_f32(&t, None).unwrap_err().to_string();
        assert!(err.contains("15 bytes"), "{err}");
        let mut t = tensor(1, &[3]);
        t.float_data = vec![1.0];
        assert!(decode_f32(&t, None).is_err());
    }

    #[test]
    fn overflowing_and_negative_dims_are_errors() {
        assert!(matches!(
            element_count("x", &[1 << 40, 1 << 40]),
            Err(Error::DimensionOverflow { .. })
        ));
        assert!(element_count("x", &[-1, 3]).is_err());
        assert_eq!(element_count("x", &[]).unwrap(), 1);
    }
}
