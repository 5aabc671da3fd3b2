//! The binary side of GGUF: metadata values and bounds-checked little-endian reads.

use crate::error::WeightsError;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// Invalid UTF-8 is replaced by U+FFFD.
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// A non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A number. An f32 becomes the f64 of its shortest decimal form (f32 `1e-5` gives f64
    /// `1e-5`, as in the `config.json` it came from).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => v.to_string().parse().ok(),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Metadata values (array elements included) a file may hold in all. Each takes 32 bytes in
/// memory for as little as one in the file, so the cap bounds the memory a hostile file
/// costs (to 512 MiB); real files hold about a million at most (the vocabulary and its
/// merges).
pub(super) const MAX_META_VALUES: usize = 1 << 24;

/// Bounds-checked little-endian reads; errors say what was being read and where.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) path: &'a str,
    pub(super) what: String,
    /// Metadata values still allowed (see [`MAX_META_VALUES`]).
    pub(super) values_left: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn fail(&self, reason: String) -> WeightsError {
        WeightsError::Format {
            path: self.path.to_string(),
            reason,
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(self.fail(format!(
                "truncated file: {} at offset {} needs {n} bytes, {left} left",
                self.what, self.pos
            )));
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], WeightsError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    pub(super) fn u32(&mut self) -> Result<u32, WeightsError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, WeightsError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length or count, checked against the bytes left (each item takes at least `min` bytes).
    pub(super) fn count(&mut self, min: usize) -> Result<usize, WeightsError> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) / min.max(1);
        usize::try_from(n).ok().filter(|&n| n <= left).ok_or_else(|| {
            self.fail(format!(
                "truncated or corrupt file: {} at offset {} claims {n} items, only {left} fit",
                self.what, self.pos
            ))
        })
    }

    pub(super) fn string(&mut self) -> Result<String, WeightsError> {
        let n = self.count(1)?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    pub(super) fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue, WeightsError> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>()?[0]),
            1 => MetaValue::I8(self.array::<1>()?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            7 => MetaValue::Bool(self.array::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 if depth < 4 => {
                let elem = self.u32()?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => 12,
                };
                let n = self.count(min)?;
                self.values_left = self.values_left.checked_sub(n).ok_or_else(|| {
                    self.fail(format!("{}: more than {MAX_META_VALUES} metadata values in all", self.what))
                })?;
                let items = (0..n).map(|_| self.value(elem, depth + 1)).collect::<Result<_, _>>()?;
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            _ => return Err(self.fail(format!("{}: unknown value type {ty} (or arrays nested too deep)", self.what))),
        })
    }
}
