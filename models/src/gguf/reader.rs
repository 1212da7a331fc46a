//! The GGUF container (v2 and v3), read from a memory map with every length checked against
//! the bytes that are left, so a truncated or corrupt file is an error naming the file and the
//! field, never a panic or a huge allocation.
//!
//! Spec: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. We keep our own reader
//! (candle's allocates whatever length a file claims before reading it) and hand the tensor
//! bytes to candle's quantized types.

use candle_core::quantized::GgmlDType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// What is wrong with a GGUF file, always naming the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("GGUF {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("GGUF {path}: missing metadata key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("GGUF {path}: metadata key `{key}` {reason}")]
    BadKey {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("GGUF {path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One metadata value, typed as the file stores it.
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
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// Any integer type as u64 (negative values are not counts).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor's bytes are and how to read them.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Row-major shape, outermost first (GGUF stores the innermost dimension first).
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of one row (the innermost dimension) in this type.
    pub fn row_bytes(&self) -> usize {
        let cols = self.shape.last().copied().unwrap_or(1);
        cols / self.dtype.block_size() * self.dtype.type_size()
    }
}

/// The bytes of a file: a read-only memory map, or a buffer (tests, in-memory files).
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file: metadata in memory, tensor bytes left in the map until asked for.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    bytes: Arc<Bytes>,
    metadata: BTreeMap<String, MetaValue>,
    tensors: BTreeMap<String, TensorInfo>,
}

/// GGUF type ids (ggml.h `enum ggml_type`) of the types we load.
pub fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Names of ggml type ids we do not load, for the error message.
fn ggml_type_name(id: u32) -> String {
    match id {
        9 => "Q8_1".into(),
        15 => "Q8_K".into(),
        16..=23 => format!("IQ type {id}"),
        _ => format!("type id {id}"),
    }
}

/// A cursor over the header that fails, rather than panics, at the end of the bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.left()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each taking at least `min_item_bytes`: a count the remaining bytes
    /// cannot hold is corruption, caught before anything is allocated for it.
    fn count(&mut self, version: u32, min_item_bytes: usize, what: &str) -> Result<usize, String> {
        let n = if version == 2 || version == 3 {
            self.u64(what)?
        } else {
            u64::from(self.u32(what)?)
        };
        let n = usize::try_from(n).map_err(|_| format!("{what} {n} is too large"))?;
        if n.saturating_mul(min_item_bytes) > self.left() {
            return Err(format!(
                "truncated or corrupt: {what} {n} cannot fit in the {} bytes left",
                self.left()
            ));
        }
        Ok(n)
    }

    fn string(&mut self, version: u32, what: &str) -> Result<String, String> {
        let n = self.count(version, 1, what)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn value(
        &mut self,
        version: u32,
        ty: u32,
        key: &str,
        depth: usize,
    ) -> Result<MetaValue, String> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(key)?[0]),
            1 => MetaValue::I8(self.array::<1>(key)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("`{key}`: bool byte {b}")),
            },
            8 => MetaValue::Str(self.string(version, key)?),
            9 => {
                if depth > 2 {
                    return Err(format!("`{key}`: arrays nested too deep"));
                }
                let elem_ty = self.u32(key)?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(format!("`{key}`: unknown array element type {t}")),
                };
                let n = self.count(version, min, key)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(version, elem_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(format!("`{key}`: unknown value type {t}")),
        })
    }
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: mapped read-only; like every mmap loader we rely on nobody truncating the
        // file while the server runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Bytes::Mapped(map))
    }

    /// Parses a file held in memory (`path` only names it in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path, Bytes::Owned(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<Self, GgufError> {
        let invalid = |reason: String| GgufError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        if c.take(4, "magic").map_err(invalid)? != MAGIC {
            return Err(invalid("not a GGUF file (bad magic)".into()));
        }
        let version = c.u32("version").map_err(invalid)?;
        if !(2..=3).contains(&version) {
            return Err(invalid(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        // Each tensor info takes at least 4 + 8 + 4 + 4 + 8 bytes, each key/value 8 + 4 + 1.
        let n_tensors = c.count(version, 28, "tensor count").map_err(invalid)?;
        let n_kv = c.count(version, 13, "metadata count").map_err(invalid)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string(version, "metadata key").map_err(invalid)?;
            let ty = c.u32(&key).map_err(invalid)?;
            let value = c.value(version, ty, &key, 0).map_err(invalid)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::BadKey {
                        path: path.to_path_buf(),
                        key: "general.alignment".into(),
                        reason: format!("is {v:?}, not a power of two"),
                    });
                }
            },
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string(version, "tensor name").map_err(invalid)?;
            let n_dims = c.u32(&name).map_err(invalid)? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(invalid(format!("tensor `{name}`: {n_dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64(&name).map_err(invalid)?;
                shape.push(
                    usize::try_from(d).map_err(|_| invalid(format!("tensor `{name}`: dim {d}")))?,
                );
            }
            shape.reverse();
            let type_id = c.u32(&name).map_err(invalid)?;
            let offset = c.u64(&name).map_err(invalid)?;
            infos.push((name, shape, type_id, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, shape, type_id, offset) in infos {
            let dtype = ggml_dtype(type_id).ok_or_else(|| {
                invalid(format!(
                    "tensor `{name}` has type {}, which Indus does not load (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)",
                    ggml_type_name(type_id)
                ))
            })?;
            let elems = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| invalid(format!("tensor `{name}`: shape {shape:?} overflows")))?;
            let cols = shape.last().copied().unwrap_or(1);
            if !cols.is_multiple_of(dtype.block_size()) {
                return Err(invalid(format!(
                    "tensor `{name}`: rows of {cols} are not a multiple of the {dtype:?} block ({})",
                    dtype.block_size()
                )));
            }
            let len = (elems / dtype.block_size())
                .checked_mul(dtype.type_size())
                .ok_or_else(|| invalid(format!("tensor `{name}`: shape {shape:?} overflows")))?;
            let start = data_start
                .checked_add(offset)
                .and_then(|s| usize::try_from(s).ok())
                .filter(|s| s.checked_add(len).is_some_and(|end| end <= bytes.len()))
                .ok_or_else(|| {
                    invalid(format!(
                        "truncated: tensor `{name}` ({len} bytes at data offset {offset}) lies past the end of the file ({} bytes)",
                        bytes.len()
                    ))
                })?;
            tensors.insert(
                name,
                TensorInfo {
                    shape,
                    dtype,
                    start,
                    len,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            bytes: Arc::new(bytes),
            metadata,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The raw bytes of a tensor, in its GGUF type.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes[info.start..info.start + info.len]
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> GgufError {
        GgufError::BadKey {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// A required string key.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_str().ok_or_else(|| self.bad(key, "is not a string"))
    }

    /// An optional unsigned integer key (absent → `None`, wrong type → error).
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| self.bad(key, format!("is {v:?}, not a count")))
            })
            .transpose()
    }

    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.bad(key, format!("is {v:?}, not a number")))
            })
            .transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.bad(key, format!("is {v:?}, not a bool")))
            })
            .transpose()
    }

    /// A required array of strings (vocabularies, merges).
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        self.items(key, v, MetaValue::as_str, "a non-string")
    }

    /// An optional array of numbers (token scores, token types).
    pub fn opt_num_array(&self, key: &str) -> Result<Option<Vec<f64>>, GgufError> {
        self.get(key)
            .map(|v| self.items(key, v, MetaValue::as_f64, "a non-number"))
            .transpose()
    }

    /// The items of array `v` (the value of `key`), each converted by `item`.
    fn items<'a, T>(
        &self,
        key: &str,
        v: &'a MetaValue,
        item: impl Fn(&'a MetaValue) -> Option<T>,
        not: &str,
    ) -> Result<Vec<T>, GgufError> {
        v.as_array()
            .ok_or_else(|| self.bad(key, "is not an array"))?
            .iter()
            .map(|i| item(i).ok_or_else(|| self.bad(key, format!("holds {not}"))))
            .collect()
    }
}

/// Writes GGUF v3 files: the test-side writer (fixtures from safetensors, corrupted files).
pub mod writer {
    use super::MetaValue;

    /// A tensor to write: name, row-major shape (outermost first), ggml type id, raw bytes.
    pub struct RawTensor {
        pub name: String,
        pub shape: Vec<usize>,
        pub type_id: u32,
        pub data: Vec<u8>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn type_of(v: &MetaValue) -> u32 {
        match v {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::Str(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    fn value(out: &mut Vec<u8>, v: &MetaValue) {
        match v {
            MetaValue::U8(x) => out.push(*x),
            MetaValue::I8(x) => out.push(*x as u8),
            MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::Bool(x) => out.push(u8::from(*x)),
            MetaValue::Str(s) => string(out, s),
            MetaValue::Array(items) => {
                let elem = items.first().map(type_of).unwrap_or(8);
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    value(out, i);
                }
            }
        }
    }

    /// A whole GGUF v3 file, tensors aligned to 32 bytes.
    pub fn write(metadata: &[(String, MetaValue)], tensors: &[RawTensor]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            string(&mut out, k);
            out.extend_from_slice(&type_of(v).to_le_bytes());
            value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in tensors {
            string(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in t.shape.iter().rev() {
                out.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (t.data.len() as u64).div_ceil(32) * 32;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        for t in tensors {
            out.extend_from_slice(&t.data);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::writer::{RawTensor, write};
    use super::*;

    fn sample() -> Vec<u8> {
        let data: Vec<u8> = (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        write(
            &[
                (
                    "general.architecture".into(),
                    MetaValue::Str("llama".into()),
                ),
                ("llama.block_count".into(), MetaValue::U32(2)),
                (
                    "tokenizer.ggml.tokens".into(),
                    MetaValue::Array(vec![MetaValue::Str("a".into()), MetaValue::Str("b".into())]),
                ),
            ],
            &[RawTensor {
                name: "t".into(),
                shape: vec![2, 3],
                type_id: 0,
                data,
            }],
        )
    }

    #[test]
    fn reads_metadata_and_tensor_bytes() {
        let f = GgufFile::from_bytes(Path::new("x.gguf"), sample()).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.str("general.architecture").unwrap(), "llama");
        assert_eq!(f.usize("llama.block_count").unwrap(), 2);
        assert_eq!(
            f.str_array("tokenizer.ggml.tokens").unwrap(),
            vec!["a", "b"]
        );
        let t = f.tensor_info("t").unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.row_bytes(), 12);
        assert_eq!(&f.tensor_bytes(t)[4..8], &1f32.to_le_bytes());
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let bytes = sample();
        for n in 0..bytes.len() - 1 {
            // Cutting inside the zero padding after the last tensor still leaves it whole.
            let data_end = bytes.len() - 32 + 24;
            if n >= data_end {
                continue;
            }
            match GgufFile::from_bytes(Path::new("cut.gguf"), bytes[..n].to_vec()) {
                Ok(_) => panic!("{n} bytes parsed"),
                Err(e) => assert!(e.to_string().contains("cut.gguf"), "{e}"),
            }
        }
    }

    #[test]
    fn missing_and_mistyped_keys_are_named() {
        let f = GgufFile::from_bytes(Path::new("x.gguf"), sample()).unwrap();
        let e = f.usize("llama.embedding_length").unwrap_err().to_string();
        assert!(
            e.contains("llama.embedding_length") && e.contains("x.gguf"),
            "{e}"
        );
        let e = f.usize("general.architecture").unwrap_err().to_string();
        assert!(e.contains("not a count"), "{e}");
    }

    #[test]
    fn unknown_tensor_type_is_named() {
        let mut bytes = write(
            &[],
            &[RawTensor {
                name: "w".into(),
                shape: vec![32],
                type_id: 20,
                data: vec![0; 64],
            }],
        );
        let e = GgufFile::from_bytes(Path::new("x.gguf"), bytes.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`w`") && e.contains("IQ type 20"), "{e}");
        bytes[0] = b'X';
        let e = GgufFile::from_bytes(Path::new("x.gguf"), bytes)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bad magic"), "{e}");
    }
}
