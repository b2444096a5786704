//! A validating reader for GGUF, llama.cpp's model file format, versions 2 and 3.
//!
//! Layout (ggml's `docs/gguf.md`), little-endian throughout:
//! - header: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count;
//! - metadata: per entry a string key, a u32 value type, the value;
//! - tensor infos: per tensor a string name, u32 `n_dims`, `n_dims` u64 dims
//!   (innermost first), u32 ggml type, u64 offset relative to the data section;
//! - padding to `general.alignment` (default 32), then the tensor data, each
//!   tensor at an aligned offset.
//!
//! A string is a u64 byte length and UTF-8 bytes; an array a u32 element type,
//! a u64 count and the elements. Version 1 used u32 counts and is not read.
//!
//! Everything is checked in [`GgufFile::open`]: every count and length against
//! the bytes that remain before anything is allocated, array nesting, UTF-8,
//! duplicate keys and tensor names, tensor types, shapes, alignment, and that
//! tensor data lies inside the file without overlapping. After that, reading
//! a tensor's bytes cannot fail.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::mmap::MappedFile;
use gpt_fast_quant::ggml::{self, GgmlType};
use gpt_fast_quant::QuantError;

mod parse;

/// Deepest nesting of arrays accepted (an array of arrays is depth 2).
/// llama.cpp writes depth 1; the cap bounds recursion on hostile input.
const MAX_ARRAY_DEPTH: usize = 4;
/// Most metadata values (array elements included) read from one file. Each
/// costs a [`GgufValue`] (32 bytes) however few bytes encode it, so a u8 array
/// as long as the file would cost 32 times the file: this caps that at 64 MiB.
/// The largest real vocabularies need far fewer (Gemma 3: 786,469 values).
pub const MAX_METADATA_VALUES: u64 = 1 << 21;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
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
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any integer that is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        u64::try_from(self.as_i128()?).ok()
    }

    /// Any integer in `u32`'s range (writers differ in the width they use).
    pub fn as_u32(&self) -> Option<u32> {
        u32::try_from(self.as_i128()?).ok()
    }

    /// Any integer in `i64`'s range.
    pub fn as_i64(&self) -> Option<i64> {
        i64::try_from(self.as_i128()?).ok()
    }

    /// F32, F64 (rounded) or any integer (rounded).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            GgufValue::F32(v) => Some(v),
            GgufValue::F64(v) => Some(v as f32),
            _ => self.as_i128().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The GGUF type name, for error messages (`array` for any array).
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// One tensor's entry in the file, validated against the file at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the contiguous (innermost) one, so a
    /// `[rows, cols]` row-major matrix is `[cols, rows]` here.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute offset of the tensor's data in the file.
    pub offset: u64,
    /// Bytes of the tensor's data.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// The product of the dims (checked not to overflow at open).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An error reading a GGUF file: the file and one line saying what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct GgufError {
    pub path: PathBuf,
    pub kind: GgufErrorKind,
}

/// What is wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufErrorKind {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad magic '{}' (expected 'GGUF'): not a GGUF file", found.escape_ascii())]
    BadMagic { found: Vec<u8> },
    #[error("unsupported GGUF version {version}{hint} (gpt-fast reads versions 2 and 3)")]
    UnsupportedVersion { version: u32, hint: &'static str },
    #[error("truncated: {} ends at byte {end} but the file has {file_len} bytes", crate::escape::untrusted(what))]
    Truncated { what: String, end: u128, file_len: u64 },
    #[error(
        "{}: {count} {items} need at least {min_bytes} bytes but only {remaining} remain",
        crate::escape::untrusted(what)
    )]
    CountTooLarge {
        what: String,
        count: u64,
        /// What is counted, plural.
        items: &'static str,
        min_bytes: u128,
        remaining: u64,
    },
    #[error("{}: string is not UTF-8", crate::escape::untrusted(what))]
    NotUtf8 { what: String },
    #[error("{}: unknown value type {ty}", crate::escape::untrusted(what))]
    UnknownValueType { what: String, ty: u32 },
    #[error("{}: bool byte is {byte}, not 0 or 1", crate::escape::untrusted(what))]
    BadBool { what: String, byte: u8 },
    #[error("{}: more than {MAX_METADATA_VALUES} metadata values in the file", crate::escape::untrusted(what))]
    TooManyValues { what: String },
    #[error("{}: arrays nested deeper than {MAX_ARRAY_DEPTH}", crate::escape::untrusted(what))]
    ArrayTooDeep { what: String },
    #[error("duplicate metadata key '{}'", crate::escape::untrusted(key))]
    DuplicateKey { key: String },
    #[error("general.alignment {reason}")]
    BadAlignment { reason: String },
    #[error("tensor '{}' has {n_dims} dimensions (at most {MAX_DIMS})", crate::escape::untrusted(tensor))]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("{} for tensor '{}'", describe_unknown_type(*id), crate::escape::untrusted(tensor))]
    UnknownTensorType { tensor: String, id: u32 },
    #[error("tensor '{}': dims {dims:?} overflow", crate::escape::untrusted(tensor))]
    DimsOverflow { tensor: String, dims: Vec<u64> },
    #[error("tensor '{}': rows of {row_len} elements are not whole {ty} blocks of {}", crate::escape::untrusted(tensor), ty.block_size())]
    PartialBlock { tensor: String, ty: GgmlType, row_len: u64 },
    #[error("duplicate tensor '{}'", crate::escape::untrusted(tensor))]
    DuplicateTensor { tensor: String },
    #[error(
        "tensor '{}': data offset {offset} is not a multiple of the alignment {alignment}",
        crate::escape::untrusted(tensor)
    )]
    MisalignedTensor { tensor: String, offset: u64, alignment: u64 },
    #[error(
        "tensor '{}': data at bytes {start}..{end} is past the end of the file ({file_len} bytes)",
        crate::escape::untrusted(tensor)
    )]
    TensorOutOfBounds { tensor: String, start: u128, end: u128, file_len: u64 },
    #[error("tensors '{}' and '{}' overlap", crate::escape::untrusted(first), crate::escape::untrusted(second))]
    TensorOverlap { first: String, second: String },
    #[error("missing metadata key '{}'", crate::escape::untrusted(key))]
    MissingKey { key: String },
    #[error("metadata key '{}' is {found}, expected {expected}", crate::escape::untrusted(key))]
    WrongType { key: String, expected: &'static str, found: String },
    #[error("tensor '{}': {source}", crate::escape::untrusted(tensor))]
    Dequantize { tensor: String, source: QuantError },
}

/// "unsupported tensor type IQ2_XXS (16)" for a ggml type gpt-fast knows of but
/// does not read, "unknown tensor type 99" for an id ggml never had.
fn describe_unknown_type(id: u32) -> String {
    match ggml::unsupported_type_name(id) {
        Some(name) => format!("unsupported tensor type {name} ({id})"),
        None => format!("unknown tensor type {id}"),
    }
}

/// An open GGUF file: metadata and tensor infos parsed and validated, tensor
/// data read in place from the memory map.
pub struct GgufFile {
    path: PathBuf,
    map: MappedFile,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    /// In file order.
    tensors: Vec<GgufTensorInfo>,
    /// Name to index in `tensors`.
    by_name: HashMap<String, usize>,
    /// Absolute offset of the tensor data section.
    data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let error = |kind| GgufError { path: path.to_path_buf(), kind };
        let map = MappedFile::open(path).map_err(|e| error(GgufErrorKind::Io(e)))?;
        let parsed = parse::parse(&map).map_err(error)?;
        let by_name = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            by_name,
            data_offset: parsed.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's raw data, in its ggml type.
    ///
    /// # Panics
    /// If `info` does not come from this file (its bounds were checked at open).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        // Both fit in usize: checked against the mapped length at open.
        let start = info.offset as usize;
        &self.map[start..start + info.n_bytes as usize]
    }

    /// The tensor dequantized to f32, in ggml order (`dims[0]` innermost).
    pub fn tensor_f32(&self, info: &GgufTensorInfo) -> Result<Vec<f32>, GgufError> {
        let mut out = vec![0f32; info.n_elements() as usize];
        ggml::dequantize(info.ty, self.tensor_bytes(info), &mut out)
            .map_err(|source| self.error(GgufErrorKind::Dequantize { tensor: info.name.clone(), source }))?;
        Ok(out)
    }

    fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError { path: self.path.clone(), kind }
    }

    /// The value of `key` converted by `convert`, `None` if the key is absent,
    /// an error naming the key if it has another type.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        convert: impl FnOnce(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        let Some(value) = self.metadata.get(key) else {
            return Ok(None);
        };
        convert(value)
            .map(Some)
            .ok_or_else(|| self.error(GgufErrorKind::WrongType { key: key.into(), expected, found: describe(value) }))
    }

    fn required<T>(&self, key: &str, value: Option<T>) -> Result<T, GgufError> {
        value.ok_or_else(|| self.error(GgufErrorKind::MissingKey { key: key.into() }))
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "an integer in u32 range", GgufValue::as_u32)
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a number", GgufValue::as_f32)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a bool", GgufValue::as_bool)
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "a string", GgufValue::as_str)
    }

    pub fn require_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.required(key, self.opt_u32(key)?)
    }

    pub fn require_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.required(key, self.opt_f32(key)?)
    }

    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.required(key, self.opt_str(key)?)
    }

    /// An array of strings; `None` if the key is absent.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        self.typed(key, "an array of strings", |v| v.as_array()?.iter().map(GgufValue::as_str).collect())
    }

    /// An array of integers in `i32` range; `None` if the key is absent.
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.typed(key, "an array of i32", |v| {
            let as_i32 = |v: &GgufValue| i32::try_from(v.as_i64()?).ok();
            v.as_array()?.iter().map(as_i32).collect()
        })
    }

    /// An array of numbers; `None` if the key is absent.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.typed(key, "an array of numbers", |v| v.as_array()?.iter().map(GgufValue::as_f32).collect())
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        self.required(key, self.opt_str_array(key)?)
    }

    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.required(key, self.opt_i32_array(key)?)
    }

    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        self.required(key, self.opt_f32_array(key)?)
    }
}

/// A value's type for error messages: `u32`, `array of 3 string`, ….
fn describe(value: &GgufValue) -> String {
    match value {
        GgufValue::Array(items) => match items.first() {
            None => "an empty array".into(),
            Some(first) => {
                let mixed = items.iter().any(|v| v.type_name() != first.type_name());
                let elem = if mixed { "mixed" } else { first.type_name() };
                format!("an array of {} {elem}", items.len())
            }
        },
        other => other.type_name().into(),
    }
}
