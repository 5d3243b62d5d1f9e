//! Reading: a bounds-checked cursor over the file's bytes, the header parser, and [`GgufFile`],
//! which keeps the bytes (memory-mapped or owned) and hands out zero-copy tensor views.
//!
//! Every count and length read from the file is checked against the bytes that are left (and a
//! documented cap) before anything is allocated, so a hostile file costs at most a small multiple
//! of its own size in memory, and every failure is a [`GgufError`] naming the field and offset.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;
use quant::HugeBytes;

use crate::error::GgufError;
use crate::metadata::Metadata;
use crate::tensor::{is_bitnet, tensor_size, TensorInfo};
use crate::value::{Value, ValueType};
use crate::{
    GgmlType, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_LEN, MAX_DIMS, MAX_KV_COUNT, MAX_NAME_LEN,
    MAX_STRING_LEN, MAX_TENSOR_COUNT,
};

/// Everything before the data section, parsed and validated against the file's size.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and of every tensor offset.
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts: the end of the tensor directory rounded up to `alignment`.
    pub data_offset: u64,
}

/// An open GGUF file: parsed header plus the file's bytes, from which tensor data is borrowed.
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and of every tensor offset (`general.alignment`, default 32).
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor directory in file order. Every entry was checked at open: known type, size from
    /// the type's rule, aligned offset, data inside the file.
    pub tensors: Vec<TensorInfo>,
    bytes: Bytes,
    data_offset: u64,
}

/// The file's bytes: a read-only mapping, a copy in huge pages, or a buffer given by the caller.
enum Bytes {
    Mapped(Mmap),
    Resident(HugeBytes),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Resident(h) => h,
            Bytes::Owned(v) => v,
        }
    }
}

/// Where an opened file's bytes live ([`GgufFile::open_as`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// A read-only mapping of the file: nothing is copied, pages come from the page cache (4 KiB
    /// pages) and are shared with other processes mapping the same file.
    Mapped,
    /// The whole file read into process memory backed by 2 MiB transparent huge pages where the
    /// OS offers them ([`quant::HugeBytes`]): the load reads every byte once, and the kernels then
    /// stream the weights without a page walk every 4 KiB (decode and the AMX block kernels run
    /// faster; `docs/benchmarks.md`).
    HugePages,
}

impl Residency {
    /// What the engine uses: [`Residency::HugePages`], unless the environment variable
    /// `DLM_MMAP` is set to a value other than `0` (then [`Residency::Mapped`], which saves the
    /// copy's memory).
    pub fn from_env() -> Residency {
        match std::env::var_os("DLM_MMAP") {
            Some(v) if v != "0" && !v.is_empty() => Residency::Mapped,
            _ => Residency::HugePages,
        }
    }
}

impl GgufFile {
    /// Opens and validates the file at `path`, memory-mapping it (nothing is copied; tensor data
    /// is read from the page cache on access).
    ///
    /// As with any mapping, the file must not be truncated or rewritten in place while this
    /// value lives (files written by [`GgufWriter::write_file`](crate::GgufWriter::write_file)
    /// are replaced by rename, which is safe).
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        Self::open_as(path, Residency::Mapped)
    }

    /// Opens and validates the file at `path`, keeping its bytes as `residency` says. With
    /// [`Residency::HugePages`] the file is read whole (no mapping stays; rewriting the file
    /// afterwards does not affect this value) — unless the copy would not leave 1 GiB of the
    /// memory Linux reports available (`MemAvailable`), in which case the file is mapped, as
    /// [`residency`](Self::residency) then says: a mapping pages in and out under memory
    /// pressure where a private copy would get the process killed.
    pub fn open_as(path: &Path, residency: Residency) -> Result<GgufFile, GgufError> {
        let io = |action| {
            move |source| GgufError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = File::open(path).map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        let bytes = if len == 0 {
            // Mapping an empty file fails on some systems; an empty buffer gives the real error.
            Bytes::Owned(Vec::new())
        } else if residency == Residency::HugePages && copy_fits(len, available_memory()) {
            let len = usize::try_from(len).map_err(|_| GgufError::Io {
                action: "read",
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "the file is larger than this machine's address space",
                ),
            })?;
            let mut bytes = HugeBytes::zeroed(len);
            let mut file = file;
            file.read_exact(&mut bytes).map_err(io("read"))?;
            Bytes::Resident(bytes)
        } else {
            // SAFETY: the mapping is read-only; its contents changing under us (another process
            // writing the file in place) is the documented caveat above, as for every mmap reader.
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(io("map"))?)
        };
        Self::from_storage(bytes)
    }

    /// Parses and validates a GGUF held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Bytes::Owned(bytes))
    }

    /// Parses and validates everything before the data section of a whole file given as bytes
    /// (tensor bounds are checked against `bytes.len()`). [`open`](Self::open) and
    /// [`from_bytes`](Self::from_bytes) use this.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        parse_header(bytes)
    }

    fn from_storage(bytes: Bytes) -> Result<GgufFile, GgufError> {
        let h = parse_header(&bytes)?;
        Ok(GgufFile {
            version: h.version,
            alignment: h.alignment,
            metadata: h.metadata,
            tensors: h.tensors,
            bytes,
            data_offset: h.data_offset,
        })
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The `t.n_bytes` bytes of tensor `t`, borrowed from the file. For tensors of this file the
    /// bounds were validated at open. A `TensorInfo` that does not fit this file (one built by
    /// hand or taken from another file) gives an empty slice instead of a panic.
    ///
    /// The slice is as aligned in memory as the offset is in the file when the file was
    /// [opened](Self::open) (mappings are page-aligned); buffers given to
    /// [`from_bytes`](Self::from_bytes) carry no alignment guarantee.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| Some(start..start.checked_add(t.n_bytes)?))
            .and_then(|r| Some(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?));
        range.and_then(|r| self.bytes.get(r)).unwrap_or(&[])
    }

    /// The value of `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata.get_str("general.architecture")
    }

    /// Offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Where the bytes live: `None` for a buffer given to [`from_bytes`](Self::from_bytes).
    pub fn residency(&self) -> Option<Residency> {
        match &self.bytes {
            Bytes::Mapped(_) => Some(Residency::Mapped),
            Bytes::Resident(_) => Some(Residency::HugePages),
            Bytes::Owned(_) => None,
        }
    }
}

/// Memory to leave free beside a copy of a model file.
const COPY_MARGIN: u64 = 1 << 30;

/// Whether a private copy of `len` bytes fits the `available` memory with [`COPY_MARGIN`] to
/// spare (`None`: unknown, assume it does).
fn copy_fits(len: u64, available: Option<u64>) -> bool {
    available.is_none_or(|a| len.saturating_add(COPY_MARGIN) <= a)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux), else `None`.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("file_size", &self.file_size())
            .field("residency", &self.residency())
            .finish()
    }
}

/// Fewest bytes one metadata entry takes: key length (8), value type (4), a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Fewest bytes one tensor directory entry takes: name length, dim count, type, offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 4 + 8;

fn parse_header(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let mut cur = Cursor { buf: bytes, pos: 0 };

    let magic: [u8; 4] = cur.array(|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(|| "version".into())?;
    if version & 0xffff == 0 {
        return Err(GgufError::BigEndian { raw: version });
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let tensor_count = cur.u64(|| "tensor count".into())?;
    let kv_count = cur.u64(|| "metadata key/value count".into())?;
    cur.check_count("metadata key/value", kv_count, MAX_KV_COUNT, MIN_KV_SIZE)?;
    // Tensor infos come after the metadata, so this bound is loose; it is tightened below.
    cur.check_count(
        "tensor info",
        tensor_count,
        MAX_TENSOR_COUNT,
        MIN_TENSOR_INFO_SIZE,
    )?;

    let mut metadata = Metadata::new();
    for i in 0..kv_count {
        let key = cur.string(MAX_NAME_LEN, || format!("key #{i}"))?;
        let type_id = cur.u32(|| format!("value type of key `{key}`"))?;
        let vtype = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            id: type_id,
        })?;
        let value = cur.value(vtype, &key)?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(&Value::U32(a)) if a.is_power_of_two() => u64::from(a),
        Some(&Value::U32(a)) => {
            return Err(GgufError::BadAlignment {
                value: a.into(),
                reason: "general.alignment must be a power of two",
            })
        }
        Some(other) => {
            return Err(GgufError::WrongType {
                key: "general.alignment".into(),
                found: other.type_name(),
                expected: "u32".into(),
            })
        }
    };

    cur.check_count(
        "tensor info",
        tensor_count,
        MAX_TENSOR_COUNT,
        MIN_TENSOR_INFO_SIZE,
    )?;
    let mut raw = Vec::with_capacity(tensor_count.min(4096) as usize);
    for i in 0..tensor_count {
        let name = cur.string(MAX_NAME_LEN, || format!("name of tensor #{i}"))?;
        let n_dims = cur.u32(|| format!("dimension count of tensor `{name}`"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                n_dims: n_dims.into(),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(cur.u64(|| format!("dimension {d} of tensor `{name}`"))?);
        }
        let type_id = cur.u32(|| format!("type of tensor `{name}`"))?;
        let offset = cur.u64(|| format!("data offset of tensor `{name}`"))?;
        raw.push((name, dims, GgmlType(type_id), offset));
    }

    let end_of_infos = cur.pos as u64;
    let data_offset = end_of_infos.div_ceil(alignment) * alignment; // cannot overflow: pos < 2^63
    let file_size = bytes.len() as u64;
    let data_len = file_size.saturating_sub(data_offset);
    let bitnet = is_bitnet(&metadata);

    let mut names = HashSet::with_capacity(raw.len());
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ggml_type, offset) in raw {
        let n_bytes = tensor_size(&name, &dims, ggml_type, bitnet)?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset {
                tensor: name,
                offset,
                alignment,
            });
        }
        if offset.checked_add(n_bytes).is_none_or(|end| end > data_len) {
            return Err(GgufError::TensorOutOfBounds {
                tensor: name,
                offset,
                size: n_bytes,
                data_offset,
                file_size,
            });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    Ok(GgufHeader {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

/// A read position in the file's bytes. Every read checks the bytes left first; `what` closures
/// describe the field for error messages and only run on error.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            what,
            offset: self.pos as u64,
            needed,
            available: self.remaining(),
        }
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what(), n));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so it fits usize
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Checks that `count` items (each a `noun`) of at least `min_size` bytes each can be in the
    /// bytes left, and that `count` is within `cap`, before anything is allocated for them.
    fn check_count(
        &self,
        noun: &str,
        count: u64,
        cap: u64,
        min_size: u64,
    ) -> Result<(), GgufError> {
        if count > cap {
            return Err(GgufError::TooLarge {
                what: format!("{noun} count"),
                value: count,
                limit: cap,
            });
        }
        let needed = count * min_size; // count <= cap <= 2^32 and min_size <= 24: no overflow
        if needed > self.remaining() {
            let what = format!("{count} × {noun} (at least {min_size} bytes each)");
            return Err(self.truncated(what, needed));
        }
        Ok(())
    }

    /// A length-prefixed UTF-8 string of at most `cap` bytes.
    fn string(&mut self, cap: u64, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > cap {
            return Err(GgufError::TooLarge {
                what: format!("length of {}", what()),
                value: len,
                limit: cap,
            });
        }
        let offset = self.pos as u64;
        let bytes = self.take(len, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset,
            }),
        }
    }

    /// One value of type `vtype` (its type id already read) for metadata key `key`.
    fn value(&mut self, vtype: ValueType, key: &str) -> Result<Value, GgufError> {
        let what = || format!("value of key `{key}`");
        Ok(match vtype {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(bool_of(key, self.array::<1>(what)?[0])?),
            ValueType::String => Value::String(self.string(MAX_STRING_LEN, what)?),
            ValueType::Array => self.array_value(key)?,
        })
    }

    fn array_value(&mut self, key: &str) -> Result<Value, GgufError> {
        let type_id = self.u32(|| format!("element type of array `{key}`"))?;
        let elem = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.into(),
            id: type_id,
        })?;
        if elem == ValueType::Array {
            return Err(GgufError::NestedArray { key: key.into() });
        }
        let count = self.u64(|| format!("element count of array `{key}`"))?;
        self.check_count(
            &format!("array `{key}` element"),
            count,
            MAX_ARRAY_LEN,
            elem.min_encoded_size(),
        )?;
        let count = count as usize; // <= MAX_ARRAY_LEN
        let mut items = Vec::with_capacity(count);
        for j in 0..count {
            items.push(match elem {
                ValueType::String => Value::String(
                    self.string(MAX_STRING_LEN, || format!("element {j} of array `{key}`"))?,
                ),
                scalar => self.value(scalar, key)?,
            });
        }
        Ok(Value::Array(elem, items))
    }
}

fn bool_of(key: &str, byte: u8) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::InvalidBool {
            key: key.into(),
            byte,
        }),
    }
}

#[cfg(test)]
mod residency_tests {
    use super::*;

    #[test]
    fn a_copy_needs_the_file_plus_a_gibibyte_of_available_memory() {
        let gib = 1u64 << 30;
        assert!(copy_fits(2 * gib, Some(3 * gib)));
        assert!(!copy_fits(2 * gib + 1, Some(3 * gib)));
        assert!(!copy_fits(u64::MAX - 1, Some(u64::MAX - 1)));
        assert!(copy_fits(5 * gib, None));
        #[cfg(target_os = "linux")]
        assert!(available_memory().is_some_and(|a| a > 0));
    }
}
