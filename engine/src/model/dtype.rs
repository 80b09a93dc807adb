//! ONNX element types (`TensorProto.DataType`) by their numeric code.

use serde::Serialize;

/// An ONNX element type, kept as its numeric code so unknown future types survive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct DType(pub i32);

impl DType {
    pub const FLOAT32: DType = DType(1);
    pub const UINT8: DType = DType(2);
    pub const INT8: DType = DType(3);
    pub const UINT16: DType = DType(4);
    pub const INT16: DType = DType(5);
    pub const INT32: DType = DType(6);
    pub const INT64: DType = DType(7);
    pub const STRING: DType = DType(8);
    pub const BOOL: DType = DType(9);
    pub const FLOAT16: DType = DType(10);
    pub const FLOAT64: DType = DType(11);
    pub const UINT32: DType = DType(12);
    pub const UINT64: DType = DType(13);
    pub const BFLOAT16: DType = DType(16);

    /// numpy-style lowercase name (`float32`, `int8`, …); `unknown(N)` codes print as `dtype#N`.
    pub fn name(self) -> String {
        let name = match self.0 {
            0 => "undefined",
            1 => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "float64",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            17 => "float8e4m3fn",
            18 => "float8e4m3fnuz",
            19 => "float8e5m2",
            20 => "float8e5m2fnuz",
            21 => "uint4",
            22 => "int4",
            23 => "float4e2m1",
            24 => "float8e8m0",
            25 => "uint2",
            26 => "int2",
            other => return format!("dtype#{other}"),
        };
        name.to_owned()
    }

    /// Bits per element as stored, or `None` for strings and unknown codes.
    pub fn bits(self) -> Option<u64> {
        Some(match self.0 {
            1 | 6 | 12 => 32,
            2 | 3 | 9 | 17..=20 | 24 => 8,
            4 | 5 | 10 | 16 => 16,
            7 | 11 | 13 | 14 => 64,
            15 => 128,
            21..=23 => 4,
            25 | 26 => 2,
            _ => return None,
        })
    }

    /// Bytes for `elements` values of this type, rounding sub-byte packing up; strings count 0.
    pub fn bytes_for(self, elements: u64) -> u64 {
        self.bits()
            .map_or(0, |bits| (elements.saturating_mul(bits)).div_ceil(8))
    }

    /// Whether values of this type are floating point.
    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16 | 17..=20 | 23 | 24)
    }
}

impl From<DType> for String {
    fn from(value: DType) -> Self {
        value.name()
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
