//! The byte-level GGUF parser: a bounds-checked cursor, the metadata and
//! tensor-info sections, and the checks on tensor shapes and placement.

use std::collections::{BTreeMap, HashSet};

use gpt_fast_quant::ggml::GgmlType;

use super::{describe, GgufErrorKind, GgufTensorInfo, GgufValue, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_METADATA_VALUES};

const MAGIC: [u8; 4] = *b"GGUF";
/// `general.alignment` when the file does not set it.
const DEFAULT_ALIGNMENT: u64 = 32;

/// A GGUF file's header sections, validated against the file's length.
pub(super) struct Parsed {
    pub(super) version: u32,
    pub(super) metadata: BTreeMap<String, GgufValue>,
    pub(super) tensors: Vec<GgufTensorInfo>,
    pub(super) data_offset: u64,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, GgufErrorKind> {
    let file_len = bytes.len() as u64;
    let mut cur = Cursor { bytes, pos: 0, values: 0 };
    let header = |e: ReadError| e.in_context("header".into(), file_len);

    let magic = cur.take(4).map_err(|_| GgufErrorKind::BadMagic { found: bytes.to_vec() })?;
    if magic != MAGIC {
        return Err(GgufErrorKind::BadMagic { found: magic.to_vec() });
    }
    let version = cur.u32().map_err(header)?;
    if !(2..=3).contains(&version) {
        let swapped = version.swap_bytes();
        let hint = if (1..=3).contains(&swapped) { " (a big-endian file?)" } else { "" };
        return Err(GgufErrorKind::UnsupportedVersion { version, hint });
    }
    let n_tensors = cur.u64().map_err(header)?;
    let n_kv = cur.u64().map_err(header)?;

    // Smallest encodings: a key (8-byte length) with a type and a 1-byte value;
    // a tensor info with an empty name and no dims.
    cur.check_count(n_kv, 8 + 4 + 1, "metadata entries").map_err(header)?;
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = cur.string().map_err(|e| e.in_context(format!("metadata entry {i}"), file_len))?;
        let value = cur
            .u32()
            .and_then(|ty| cur.value(ty, 0))
            .map_err(|e| e.in_context(format!("metadata key '{key}'"), file_len))?;
        if metadata.contains_key(&key) {
            return Err(GgufErrorKind::DuplicateKey { key });
        }
        metadata.insert(key, value);
    }
    let alignment = alignment(&metadata)?;

    cur.check_count(n_tensors, 8 + 4 + 4 + 8, "tensor infos").map_err(header)?;
    let mut raw_infos = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur, i, file_len)?;
        raw_infos.push(info);
    }

    // The data section starts at the next multiple of the alignment (the
    // padding may be absent at the end of a file without tensor data).
    let data_offset = (cur.pos as u64).next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(raw_infos.len());
    let mut names = HashSet::new();
    for raw in raw_infos {
        if !names.insert(raw.name.clone()) {
            return Err(GgufErrorKind::DuplicateTensor { tensor: raw.name });
        }
        tensors.push(raw.validate(alignment, data_offset, file_len)?);
    }
    check_overlaps(&tensors)?;
    Ok(Parsed { version, metadata, tensors, data_offset })
}

/// `general.alignment`: a power of two, 32 when absent.
fn alignment(metadata: &BTreeMap<String, GgufValue>) -> Result<u64, GgufErrorKind> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let GgufValue::U32(alignment) = *value else {
        let reason = format!("is {}, expected u32", describe(value));
        return Err(GgufErrorKind::BadAlignment { reason });
    };
    if !alignment.is_power_of_two() {
        let reason = format!("{alignment} is not a power of two");
        return Err(GgufErrorKind::BadAlignment { reason });
    }
    Ok(alignment.into())
}

/// A tensor info as read, before its shape and placement are checked.
struct RawTensorInfo {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    /// Relative to the data section.
    offset: u64,
}

fn read_tensor_info(cur: &mut Cursor<'_>, index: u64, file_len: u64) -> Result<RawTensorInfo, GgufErrorKind> {
    let context = |name: Option<&str>| match name {
        None => format!("tensor info {index}"),
        Some(name) => format!("tensor info {index} ('{name}')"),
    };
    let name = cur.string().map_err(|e| e.in_context(context(None), file_len))?;
    let in_context = |e: ReadError| e.in_context(context(Some(&name)), file_len);
    let n_dims = cur.u32().map_err(in_context)?;
    if n_dims > MAX_DIMS {
        return Err(GgufErrorKind::TooManyDims { tensor: name, n_dims });
    }
    let dims = (0..n_dims).map(|_| cur.u64()).collect::<Result<Vec<u64>, _>>().map_err(in_context)?;
    let type_id = cur.u32().map_err(in_context)?;
    let offset = cur.u64().map_err(in_context)?;
    Ok(RawTensorInfo { name, dims, type_id, offset })
}

impl RawTensorInfo {
    fn validate(self, alignment: u64, data_offset: u64, file_len: u64) -> Result<GgufTensorInfo, GgufErrorKind> {
        let RawTensorInfo { name, dims, type_id, offset } = self;
        let Some(ty) = GgmlType::from_gguf_id(type_id) else {
            return Err(GgufErrorKind::UnknownTensorType { tensor: name, id: type_id });
        };
        // ggml stores dims as int64; the product must also be addressable.
        let n_elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d).filter(|&n| n <= i64::MAX as u64))
            .and_then(|n| usize::try_from(n).ok());
        let Some(n_elements) = n_elements else {
            return Err(GgufErrorKind::DimsOverflow { tensor: name, dims });
        };
        // ggml quantizes along rows: each row must be whole blocks.
        let row_len = dims.first().copied().unwrap_or(1);
        if row_len % ty.block_size() as u64 != 0 {
            return Err(GgufErrorKind::PartialBlock { tensor: name, ty, row_len });
        }
        let Some(n_bytes) = ty.row_bytes(n_elements) else {
            return Err(GgufErrorKind::DimsOverflow { tensor: name, dims });
        };
        if offset % alignment != 0 {
            return Err(GgufErrorKind::MisalignedTensor { tensor: name, offset, alignment });
        }
        let start = u128::from(data_offset) + u128::from(offset);
        let end = start + n_bytes as u128;
        if end > u128::from(file_len) {
            return Err(GgufErrorKind::TensorOutOfBounds { tensor: name, start, end, file_len });
        }
        Ok(GgufTensorInfo {
            name,
            dims,
            ty,
            // Both fit in u64: end <= file_len.
            offset: start as u64,
            n_bytes: n_bytes as u64,
        })
    }
}

fn check_overlaps(tensors: &[GgufTensorInfo]) -> Result<(), GgufErrorKind> {
    let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufErrorKind::TensorOverlap { first: pair[0].name.clone(), second: pair[1].name.clone() });
        }
    }
    Ok(())
}

/// Why a read failed, before the caller adds what was being read.
enum ReadError {
    /// The read would end at this byte, past the end of the file.
    Short {
        end: u128,
    },
    CountTooLarge {
        count: u64,
        items: &'static str,
        min_bytes: u128,
        remaining: u64,
    },
    NotUtf8,
    UnknownType(u32),
    BadBool(u8),
    TooDeep,
    TooManyValues,
}

impl ReadError {
    fn in_context(self, what: String, file_len: u64) -> GgufErrorKind {
        match self {
            ReadError::Short { end } => GgufErrorKind::Truncated { what, end, file_len },
            ReadError::CountTooLarge { count, items, min_bytes, remaining } => {
                GgufErrorKind::CountTooLarge { what, count, items, min_bytes, remaining }
            }
            ReadError::NotUtf8 => GgufErrorKind::NotUtf8 { what },
            ReadError::UnknownType(ty) => GgufErrorKind::UnknownValueType { what, ty },
            ReadError::BadBool(byte) => GgufErrorKind::BadBool { what, byte },
            ReadError::TooDeep => GgufErrorKind::ArrayTooDeep { what },
            ReadError::TooManyValues => GgufErrorKind::TooManyValues { what },
        }
    }
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Metadata values read so far, against [`MAX_METADATA_VALUES`].
    values: u64,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Short { end: self.pos as u128 + n as u128 });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        Ok(self.take(N)?.try_into().expect("take(N) returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32, ReadError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, ReadError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Errors unless `count` items of at least `min_size` bytes each fit in
    /// the rest of the file: the check before allocating for them.
    fn check_count(&self, count: u64, min_size: u64, items: &'static str) -> Result<(), ReadError> {
        let min_bytes = u128::from(count) * u128::from(min_size);
        if min_bytes > self.remaining() as u128 {
            let remaining = self.remaining() as u64;
            return Err(ReadError::CountTooLarge { count, items, min_bytes, remaining });
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, ReadError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| ReadError::Short { end: u128::from(len) })?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ReadError::NotUtf8)
    }

    /// A value of GGUF type `ty`; `depth` is the number of enclosing arrays.
    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue, ReadError> {
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.array()?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array()?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array()?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()? {
                [0] => GgufValue::Bool(false),
                [1] => GgufValue::Bool(true),
                [byte] => return Err(ReadError::BadBool(byte)),
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(ReadError::TooDeep);
                }
                let elem_ty = self.u32()?;
                let count = self.u64()?;
                let (min_size, items) = match elem_ty {
                    0 | 1 | 7 => (1, "1-byte elements"),
                    2 | 3 => (2, "2-byte elements"),
                    4..=6 => (4, "4-byte elements"),
                    10..=12 => (8, "8-byte elements"),
                    8 => (8, "strings"),
                    9 => (12, "arrays"),
                    other => return Err(ReadError::UnknownType(other)),
                };
                self.check_count(count, min_size, items)?;
                // Counted before allocating for them: the bytes bound the count,
                // this bounds the memory the decoded values take.
                self.values = self.values.saturating_add(count);
                if self.values > MAX_METADATA_VALUES {
                    return Err(ReadError::TooManyValues);
                }
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.value(elem_ty, depth + 1)?);
                }
                GgufValue::Array(values)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array()?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(ReadError::UnknownType(other)),
        })
    }
}
