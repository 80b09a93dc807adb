//! A reader for NumPy `.npy` arrays (format versions 1.0, 2.0 and 3.0).
//!
//! Only what datasets need: C-order numeric arrays, little-endian or native byte order. Errors
//! are plain reasons (`String`); the caller adds the file path.

use std::fmt;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8] = b"\x93NUMPY";

/// Element type of an array (the kind and size of NumPy's `descr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl Kind {
    /// Bytes per element.
    fn size_bytes(self) -> usize {
        match self {
            Kind::I8 | Kind::U8 | Kind::Bool => 1,
            Kind::F16 | Kind::I16 | Kind::U16 => 2,
            Kind::F32 | Kind::I32 | Kind::U32 => 4,
            Kind::F64 | Kind::I64 | Kind::U64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Kind::F16 | Kind::F32 | Kind::F64)
    }
}

/// A parsed `.npy` array whose data borrows the file's bytes.
#[derive(Debug)]
pub(crate) struct NpyArray<'a> {
    /// The `descr` string as written, e.g. `<f4`.
    pub descr: String,
    pub kind: Kind,
    /// Whether multi-byte elements are little-endian (false only for native order on a
    /// big-endian host).
    little_endian: bool,
    pub shape: Vec<usize>,
    data: &'a [u8],
}

/// The header fields of a `.npy` file.
#[derive(Debug)]
pub(crate) struct NpyHeader {
    pub descr: String,
    pub kind: Kind,
    little_endian: bool,
    pub shape: Vec<usize>,
    /// Offset of the data section from the start of the file.
    data_offset: usize,
}

/// Shape formatted like `[1000, 1, 28, 28]`.
pub(crate) struct ShapeDisplay<'a>(pub &'a [usize]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Parses only the header; `bytes` may be just the start of the file.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a NumPy .npy file (it does not start with the \\x93NUMPY magic)".into());
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return Err("truncated .npy header (no format version)".into()),
    };
    let (header_len, header_start) = match major {
        1 => match bytes.get(8..10) {
            Some(b) => (usize::from(u16::from_le_bytes([b[0], b[1]])), 10),
            None => return Err("truncated .npy header (no header length)".into()),
        },
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
            None => return Err("truncated .npy header (no header length)".into()),
        },
        _ => {
            return Err(format!(
                ".npy format version {major}.{minor} is not supported (only 1.0, 2.0 and 3.0)"
            ));
        }
    };
    let data_offset = header_start + header_len;
    let Some(header_bytes) = bytes.get(header_start..data_offset) else {
        return Err(format!(
            "truncated .npy header: it declares {header_len} header bytes but the file has only {}",
            bytes.len().saturating_sub(header_start)
        ));
    };
    // Versions 1 and 2 are latin-1, 3 is UTF-8; the dict itself is ASCII in practice.
    let text: String = if major == 3 {
        String::from_utf8(header_bytes.to_vec())
            .map_err(|_| "the .npy 3.0 header is not valid UTF-8".to_string())?
    } else {
        header_bytes.iter().map(|&b| char::from(b)).collect()
    };
    let dict = match PyParser::new(&text).parse_top()? {
        PyValue::Dict(entries) => entries,
        _ => return Err("the .npy header is not a Python dict".into()),
    };
    let field = |name: &str| {
        dict.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("the .npy header has no '{name}' entry"))
    };
    let descr = match field("descr")? {
        PyValue::Str(s) => s.clone(),
        PyValue::List(_) | PyValue::Tuple(_) => {
            return Err(
                "structured (record) arrays are not supported; save a plain numeric array".into(),
            );
        }
        other => {
            return Err(format!(
                "the .npy header's 'descr' is not a string: {other:?}"
            ));
        }
    };
    match field("fortran_order")? {
        PyValue::Bool(false) => {}
        PyValue::Bool(true) => {
            return Err(
                "Fortran-order (column-major) arrays are not supported; save with \
                 np.save(path, np.ascontiguousarray(a))"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "the .npy header's 'fortran_order' is not True/False: {other:?}"
            ));
        }
    }
    let shape = match field("shape")? {
        PyValue::Tuple(items) | PyValue::List(items) => items
            .iter()
            .map(|v| match v {
                PyValue::Int(n) => usize::try_from(*n)
                    .map_err(|_| format!("the .npy shape has an invalid dimension {n}")),
                other => Err(format!(
                    "the .npy shape has a non-integer dimension: {other:?}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "the .npy header's 'shape' is not a tuple: {other:?}"
            ));
        }
    };
    let (kind, little_endian) = parse_descr(&descr)?;
    Ok(NpyHeader {
        descr,
        kind,
        little_endian,
        shape,
        data_offset,
    })
}

/// Parses a whole `.npy` file held in memory.
pub(crate) fn parse(bytes: &[u8]) -> Result<NpyArray<'_>, String> {
    let header = parse_header(bytes)?;
    let count = element_count(&header.shape)?;
    let needed = count
        .checked_mul(header.kind.size_bytes())
        .ok_or_else(|| format!("shape {} is too large", ShapeDisplay(&header.shape)))?;
    let data = bytes.get(header.data_offset..).unwrap_or(&[]);
    if data.len() != needed {
        let what = if data.len() < needed {
            "truncated: the"
        } else {
            "the"
        };
        return Err(format!(
            "{what} data section has {} bytes but shape {} of '{}' needs {needed}",
            data.len(),
            ShapeDisplay(&header.shape),
            header.descr
        ));
    }
    Ok(NpyArray {
        descr: header.descr,
        kind: header.kind,
        little_endian: header.little_endian,
        shape: header.shape,
        data,
    })
}

/// Product of the dimensions, refusing overflow.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {} has too many elements", ShapeDisplay(shape)))
}

/// `descr` such as `<f4` → element kind and whether it is little-endian.
fn parse_descr(descr: &str) -> Result<(Kind, bool), String> {
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let kind = match code {
        "f2" => Kind::F16,
        "f4" => Kind::F32,
        "f8" => Kind::F64,
        "i1" => Kind::I8,
        "i2" => Kind::I16,
        "i4" => Kind::I32,
        "i8" => Kind::I64,
        "u1" => Kind::U8,
        "u2" => Kind::U16,
        "u4" => Kind::U32,
        "u8" => Kind::U64,
        "b1" => Kind::Bool,
        _ if code.starts_with('O') => {
            return Err(format!(
                "object arrays ('{descr}', pickled Python objects) are not supported; \
                 save a numeric array"
            ));
        }
        _ => {
            return Err(format!(
                "unsupported element type '{descr}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)"
            ));
        }
    };
    let little_endian = match order {
        '>' if kind.size_bytes() > 1 => {
            return Err(format!(
                "big-endian data ('{descr}') is not supported; convert with \
                 a.astype(a.dtype.newbyteorder('<'))"
            ));
        }
        '=' => cfg!(target_endian = "little"),
        _ => true,
    };
    Ok((kind, little_endian))
}

/// Fixed-size little-endian words of `data` (byte-swapped first when the data is big-endian).
fn words<const N: usize>(data: &[u8], little_endian: bool) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(move |chunk| {
        let mut word = [0u8; N];
        word.copy_from_slice(chunk);
        if !little_endian {
            word.reverse();
        }
        word
    })
}

impl NpyArray<'_> {
    /// Every element converted to `f32` (integers and booleans by value, `f64` rounded).
    pub fn to_f32(&self) -> Vec<f32> {
        let le = self.little_endian;
        let d = self.data;
        match self.kind {
            Kind::F16 => words::<2>(d, le)
                .map(|w| half::f16::from_le_bytes(w).to_f32())
                .collect(),
            Kind::F32 => words::<4>(d, le).map(f32::from_le_bytes).collect(),
            Kind::F64 => words::<8>(d, le)
                .map(|w| f64::from_le_bytes(w) as f32)
                .collect(),
            Kind::I8 => d.iter().map(|&b| f32::from(b as i8)).collect(),
            Kind::U8 => d.iter().map(|&b| f32::from(b)).collect(),
            Kind::Bool => d.iter().map(|&b| if b != 0 { 1.0 } else { 0.0 }).collect(),
            Kind::I16 => words::<2>(d, le)
                .map(|w| f32::from(i16::from_le_bytes(w)))
                .collect(),
            Kind::U16 => words::<2>(d, le)
                .map(|w| f32::from(u16::from_le_bytes(w)))
                .collect(),
            Kind::I32 => words::<4>(d, le)
                .map(|w| i32::from_le_bytes(w) as f32)
                .collect(),
            Kind::U32 => words::<4>(d, le)
                .map(|w| u32::from_le_bytes(w) as f32)
                .collect(),
            Kind::I64 => words::<8>(d, le)
                .map(|w| i64::from_le_bytes(w) as f32)
                .collect(),
            Kind::U64 => words::<8>(d, le)
                .map(|w| u64::from_le_bytes(w) as f32)
                .collect(),
        }
    }

    /// Every element as an integer class index. Float arrays are accepted only when every value
    /// is a whole number; the error names the first offending index and value.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let le = self.little_endian;
        let d = self.data;
        if self.kind.is_float() {
            let values: Vec<f64> = match self.kind {
                Kind::F16 => words::<2>(d, le)
                    .map(|w| f64::from(half::f16::from_le_bytes(w).to_f32()))
                    .collect(),
                Kind::F32 => words::<4>(d, le)
                    .map(|w| f64::from(f32::from_le_bytes(w)))
                    .collect(),
                _ => words::<8>(d, le).map(f64::from_le_bytes).collect(),
            };
            return values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    // 2^63 is exactly representable; anything at or above it overflows i64.
                    if v.is_finite() && v.fract() == 0.0 && v.abs() < 2f64.powi(63) {
                        Ok(v as i64)
                    } else {
                        Err(format!(
                            "labels must be integer class indices, but label {i} is {v} \
                             (element type '{}')",
                            self.descr
                        ))
                    }
                })
                .collect();
        }
        Ok(match self.kind {
            Kind::I8 => d.iter().map(|&b| i64::from(b as i8)).collect(),
            Kind::U8 => d.iter().map(|&b| i64::from(b)).collect(),
            Kind::Bool => d.iter().map(|&b| i64::from(b != 0)).collect(),
            Kind::I16 => words::<2>(d, le)
                .map(|w| i64::from(i16::from_le_bytes(w)))
                .collect(),
            Kind::U16 => words::<2>(d, le)
                .map(|w| i64::from(u16::from_le_bytes(w)))
                .collect(),
            Kind::I32 => words::<4>(d, le)
                .map(|w| i64::from(i32::from_le_bytes(w)))
                .collect(),
            Kind::U32 => words::<4>(d, le)
                .map(|w| i64::from(u32::from_le_bytes(w)))
                .collect(),
            Kind::I64 => words::<8>(d, le).map(i64::from_le_bytes).collect(),
            Kind::U64 => words::<8>(d, le)
                .enumerate()
                .map(|(i, w)| {
                    let v = u64::from_le_bytes(w);
                    i64::try_from(v).map_err(|_| format!("label {i} is {v}, too large"))
                })
                .collect::<Result<_, _>>()?,
            Kind::F16 | Kind::F32 | Kind::F64 => Vec::new(), // handled above
        })
    }
}

/// A Python literal as found in `.npy` headers.
#[derive(Debug, PartialEq)]
enum PyValue {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<PyValue>),
    List(Vec<PyValue>),
    Dict(Vec<(String, PyValue)>),
}

/// A recursive-descent parser for the literal subset `.npy` headers use.
struct PyParser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    depth: usize,
}

/// Nesting limit: headers are a dict of flat values; this only guards against hostile input.
const MAX_DEPTH: usize = 32;

impl<'a> PyParser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            chars: text.char_indices().peekable(),
            depth: 0,
        }
    }

    fn parse_top(&mut self) -> Result<PyValue, String> {
        let value = self.value()?;
        self.skip_ws();
        match self.chars.next() {
            None => Ok(value),
            Some((_, c)) => Err(format!(
                "the .npy header has unexpected text after the dict (starting with {c:?})"
            )),
        }
    }

    fn skip_ws(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }

    fn expect_end(&self, what: &str) -> String {
        format!("the .npy header is malformed (unterminated {what})")
    }

    fn value(&mut self) -> Result<PyValue, String> {
        self.skip_ws();
        let Some(&(_, c)) = self.chars.peek() else {
            return Err("the .npy header is malformed (ends where a value was expected)".into());
        };
        match c {
            '{' | '(' | '[' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("the .npy header is nested too deeply".into());
                }
                self.chars.next();
                let value = match c {
                    '{' => self.dict()?,
                    '(' => PyValue::Tuple(self.sequence(')')?),
                    _ => PyValue::List(self.sequence(']')?),
                };
                self.depth -= 1;
                Ok(value)
            }
            '\'' | '"' => self.string().map(PyValue::Str),
            c if c.is_ascii_digit() || c == '-' || c == '+' => self.int(),
            c if c.is_ascii_alphabetic() => {
                let mut word = String::new();
                while let Some((_, c)) = self.chars.next_if(|(_, c)| c.is_ascii_alphanumeric()) {
                    word.push(c);
                }
                match word.as_str() {
                    "True" => Ok(PyValue::Bool(true)),
                    "False" => Ok(PyValue::Bool(false)),
                    "None" => Ok(PyValue::None),
                    _ => Err(format!("the .npy header has an unexpected word `{word}`")),
                }
            }
            c => Err(format!("the .npy header has an unexpected character {c:?}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let Some((_, quote)) = self.chars.next() else {
            return Err(self.expect_end("string"));
        };
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err(self.expect_end("string")),
                Some((_, c)) if c == quote => return Ok(out),
                Some((_, '\\')) => match self.chars.next() {
                    Some((_, c)) => out.push(c),
                    None => return Err(self.expect_end("string")),
                },
                Some((_, c)) => out.push(c),
            }
        }
    }

    fn int(&mut self) -> Result<PyValue, String> {
        let mut text = String::new();
        if let Some((_, c)) = self.chars.next_if(|(_, c)| *c == '-' || *c == '+') {
            text.push(c);
        }
        while let Some((_, c)) = self.chars.next_if(|(_, c)| c.is_ascii_digit()) {
            text.push(c);
        }
        // Python 2 wrote long integers with an `L` suffix, e.g. `(10L, 3L)`.
        self.chars.next_if(|(_, c)| *c == 'L' || *c == 'l');
        text.parse::<i128>()
            .map(PyValue::Int)
            .map_err(|_| format!("the .npy header has an invalid integer `{text}`"))
    }

    /// Items up to `close`, allowing a trailing comma.
    fn sequence(&mut self, close: char) -> Result<Vec<PyValue>, String> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.chars.next_if(|(_, c)| *c == close).is_some() {
                return Ok(items);
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.chars.next() {
                Some((_, ',')) => {}
                Some((_, c)) if c == close => return Ok(items),
                Some((_, c)) => {
                    return Err(format!(
                        "the .npy header is malformed (expected ',' or {close:?}, found {c:?})"
                    ));
                }
                None => return Err(self.expect_end("tuple or list")),
            }
        }
    }

    fn dict(&mut self) -> Result<PyValue, String> {
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.chars.next_if(|(_, c)| *c == '}').is_some() {
                return Ok(PyValue::Dict(entries));
            }
            let key = match self.value()? {
                PyValue::Str(s) => s,
                other => return Err(format!("the .npy header has a non-string key {other:?}")),
            };
            self.skip_ws();
            match self.chars.next() {
                Some((_, ':')) => {}
                _ => {
                    return Err(format!(
                        "the .npy header is malformed (no ':' after '{key}')"
                    ));
                }
            }
            let value = self.value()?;
            entries.push((key, value));
            self.skip_ws();
            match self.chars.next() {
                Some((_, ',')) => {}
                Some((_, '}')) => return Ok(PyValue::Dict(entries)),
                Some((_, c)) => {
                    return Err(format!(
                        "the .npy header is malformed (expected ',' or '}}', found {c:?})"
                    ));
                }
                None => return Err(self.expect_end("dict")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn header_parser_accepts_python2_longs_and_nested_values() {
        let mut p = PyParser::new("{'descr': '<f4', 'fortran_order': False, 'shape': (10L, 3L), }");
        let v = p.parse_top().unwrap();
        let PyValue::Dict(entries) = v else {
            panic!("not a dict")
        };
        assert_eq!(
            entries[2].1,
            PyValue::Tuple(vec![PyValue::Int(10), PyValue::Int(3)])
        );
        assert!(PyParser::new("{'a': [1, (2,), None]}").parse_top().is_ok());
        assert!(PyParser::new("{'a': 1").parse_top().is_err());
        assert!(PyParser::new("{'a': 'b").parse_top().is_err());
        assert!(PyParser::new(&"(".repeat(100)).parse_top().is_err());
    }

    #[test]
    fn descr_orders() {
        assert_eq!(parse_descr("<f4").unwrap(), (Kind::F32, true));
        assert_eq!(parse_descr("|u1").unwrap(), (Kind::U8, true));
        assert_eq!(parse_descr(">u1").unwrap(), (Kind::U8, true));
        assert!(parse_descr(">f4").unwrap_err().contains("big-endian"));
        assert!(parse_descr("|O").unwrap_err().contains("object"));
        assert!(parse_descr("<U5").unwrap_err().contains("unsupported"));
    }
}
