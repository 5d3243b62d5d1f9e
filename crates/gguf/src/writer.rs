//! Writing: collect metadata and the tensor directory, then stream the file in one pass, pulling
//! each tensor's bytes from a callback so that only one tensor needs to be in memory at a time.
//!
//! The output is what llama.cpp and gguf-py write: version 3, metadata in insertion order, tensor
//! offsets contiguous and each rounded up to the alignment, zero padding after the directory and
//! after every tensor (the last one included).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::error::GgufError;
use crate::metadata::Metadata;
use crate::tensor::{is_bitnet, tensor_size, TensorInfo};
use crate::value::{Value, ValueType};
use crate::{GgmlType, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_NAME_LEN, MAX_TENSOR_NAME_LEN};

/// The version this crate writes.
pub const WRITE_VERSION: u32 = 3;

const ALIGNMENT_KEY: &str = "general.alignment";
const ARCHITECTURE_KEY: &str = "general.architecture";

/// Builds a GGUF file: metadata and tensor directory first, tensor bytes at write time.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    alignment: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment of 32.
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT as u32,
            metadata: Metadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Sets the data alignment: a power of two and a multiple of 8. `general.alignment` is
    /// written (appended, or updated in place) only when it differs from 32; setting 32 removes
    /// it. Tensor offsets already assigned are recomputed.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        check_alignment(alignment)?;
        self.relayout(alignment)?;
        if u64::from(alignment) == DEFAULT_ALIGNMENT {
            self.metadata.remove(ALIGNMENT_KEY);
        } else {
            self.metadata.insert(ALIGNMENT_KEY, Value::U32(alignment));
        }
        Ok(())
    }

    /// The data alignment in force.
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// The metadata added so far, in order (`general.alignment` included when not 32).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a metadata entry at the end. Refuses an empty key, a key of 65536 bytes or more, a
    /// key already present, an array of arrays, and an array whose elements do not all have its
    /// element type. Adding `general.alignment` (as `u32`) also sets the alignment, like
    /// [`set_alignment`](Self::set_alignment), but keeps the key even when it is 32.
    pub fn add(&mut self, key: impl Into<String>, value: Value) -> Result<(), GgufError> {
        let key = key.into();
        if key.is_empty() {
            return Err(GgufError::InvalidKey {
                key,
                reason: "keys must not be empty",
            });
        }
        if key.len() as u64 > MAX_NAME_LEN {
            let shown = format!("{}…", key.chars().take(40).collect::<String>());
            return Err(GgufError::InvalidKey {
                key: shown,
                reason: "keys must be shorter than 65536 bytes",
            });
        }
        if self.metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        if let Value::Array(elem, items) = &value {
            if *elem == ValueType::Array {
                return Err(GgufError::NestedArray { key });
            }
            if let Some((index, item)) = items
                .iter()
                .enumerate()
                .find(|(_, v)| v.value_type() != *elem)
            {
                let found = item.value_type();
                return Err(GgufError::ArrayElementMismatch {
                    key,
                    index,
                    expected: *elem,
                    found,
                });
            }
        }
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) => {
                    check_alignment(a)?;
                    self.relayout(a)?;
                }
                ref other => {
                    return Err(GgufError::WrongType {
                        key,
                        found: other.type_name(),
                        expected: "u32".into(),
                    })
                }
            }
        }
        if key == ARCHITECTURE_KEY && value.as_str().is_some_and(|a| a.starts_with("bitnet")) {
            if let Some(t) = self.tensors.iter().find(|t| t.ggml_type == GgmlType::MXFP4) {
                return Err(GgufError::Tl2NotSupported {
                    tensor: t.name.clone(),
                });
            }
        }
        self.metadata.insert(key, value);
        Ok(())
    }

    /// Adds a tensor to the directory and assigns it the next aligned offset. `dims` are in ggml
    /// order (`dims[0]` = row length). Refuses duplicates, empty names or names over 63 bytes,
    /// no dims or more than 4, an unknown type, a row length that is not a whole number of the
    /// type's blocks, an element count overflowing `i64`, and type 39 in a `bitnet*` file (TL2).
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> Result<(), GgufError> {
        if name.is_empty() {
            return Err(GgufError::InvalidTensorName {
                name: name.into(),
                reason: "names must not be empty",
            });
        }
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::InvalidTensorName {
                name: name.into(),
                reason: "names must be at most 63 bytes (ggml's GGML_MAX_NAME)",
            });
        }
        if self.names.contains(name) {
            return Err(GgufError::DuplicateTensor(name.into()));
        }
        if dims.is_empty() {
            return Err(GgufError::NoDims {
                tensor: name.into(),
            });
        }
        if dims.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name.into(),
                n_dims: dims.len() as u64,
            });
        }
        let n_bytes = tensor_size(name, dims, ty, is_bitnet(&self.metadata))?;
        let align = u64::from(self.alignment);
        let offset = match self.tensors.last() {
            Some(t) => end_of(t.offset, t.n_bytes, align, &t.name)?,
            None => 0,
        };
        end_of(offset, n_bytes, align, name)?;
        self.names.insert(name.to_string());
        self.tensors.push(TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: ty,
            offset,
            n_bytes,
        });
        Ok(())
    }

    /// The tensor directory so far, with offsets as they will be written.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Writes the whole file to `out`. `data(i, info, out)` must write exactly `info.n_bytes`
    /// bytes of tensor `i` (checked: fewer or more is a [`GgufError::DataSizeMismatch`], an
    /// error it returns a [`GgufError::TensorData`]); the writer adds the padding.
    pub fn write<W: Write>(
        &self,
        out: W,
        mut data: impl FnMut(usize, &TensorInfo, &mut dyn Write) -> io::Result<()>,
    ) -> Result<(), GgufError> {
        self.check_tl2()?;
        let mut out = Counted {
            inner: BufWriter::with_capacity(1 << 20, out),
            pos: 0,
        };
        self.write_header(&mut out).map_err(GgufError::Write)?;
        let data_start = out.pos;
        for (i, t) in self.tensors.iter().enumerate() {
            debug_assert_eq!(out.pos, data_start + t.offset);
            let mut sink = Exact {
                inner: &mut out,
                left: t.n_bytes,
                written: 0,
                overrun: None,
                sink_failed: false,
            };
            let result = data(i, t, &mut sink);
            let (written, overrun, sink_failed) = (sink.written, sink.overrun, sink.sink_failed);
            if let Some(tried) = overrun {
                return Err(GgufError::DataSizeMismatch {
                    tensor: t.name.clone(),
                    expected: t.n_bytes,
                    written: tried,
                });
            }
            match result {
                Err(e) if sink_failed => return Err(GgufError::Write(e)),
                Err(source) => {
                    return Err(GgufError::TensorData {
                        tensor: t.name.clone(),
                        source,
                    })
                }
                Ok(()) if written != t.n_bytes => {
                    return Err(GgufError::DataSizeMismatch {
                        tensor: t.name.clone(),
                        expected: t.n_bytes,
                        written,
                    })
                }
                Ok(()) => {}
            }
            self.pad(&mut out).map_err(GgufError::Write)?;
        }
        out.flush().map_err(GgufError::Write)
    }

    /// Like [`write`](Self::write), to `path`, atomically: the file is written to a temporary
    /// file in the same directory, synced, and renamed over `path`. On any error the temporary
    /// file is removed, so `path` is either the complete new file or untouched.
    pub fn write_file(
        &self,
        path: &Path,
        data: impl FnMut(usize, &TensorInfo, &mut dyn Write) -> io::Result<()>,
    ) -> Result<(), GgufError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file_name = path.file_name().ok_or_else(|| GgufError::Io {
            action: "write",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", file_name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io_err("create a temporary file in", dir))?;
        // Errors below drop `tmp`, which deletes the temporary file.
        self.write(tmp.as_file_mut(), data).map_err(|e| match e {
            GgufError::Write(source) => GgufError::Io {
                action: "write",
                path: tmp.path().to_path_buf(),
                source,
            },
            other => other,
        })?;
        set_permissions(tmp.as_file(), path).map_err(io_err("set permissions of", tmp.path()))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("sync", tmp.path()))?;
        tmp.persist(path).map_err(|e| GgufError::Io {
            action: "rename a temporary file to",
            path: path.to_path_buf(),
            source: e.error,
        })?;
        // Make the rename durable; not every platform can sync a directory, so this is best effort.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Header, metadata, tensor directory, padding up to the data section.
    fn write_header(&self, out: &mut Counted<impl Write>) -> io::Result<()> {
        out.write_all(&GGUF_MAGIC)?;
        out.write_all(&WRITE_VERSION.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in self.metadata.iter() {
            write_str(out, key)?;
            out.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(out, value)?;
        }
        for t in &self.tensors {
            write_str(out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ggml_type.0.to_le_bytes())?;
            out.write_all(&t.offset.to_le_bytes())?;
        }
        self.pad(out)
    }

    /// Zeros up to the next multiple of the alignment.
    fn pad(&self, out: &mut Counted<impl Write>) -> io::Result<()> {
        const ZEROS: [u8; 256] = [0; 256];
        let align = u64::from(self.alignment);
        let mut n = (align - out.pos % align) % align;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            out.write_all(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    /// Switches to `alignment`, recomputing every offset; on error nothing changes.
    fn relayout(&mut self, alignment: u32) -> Result<(), GgufError> {
        let align = u64::from(alignment);
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for t in &self.tensors {
            offsets.push(offset);
            offset = end_of(offset, t.n_bytes, align, &t.name)?;
        }
        for (t, o) in self.tensors.iter_mut().zip(offsets) {
            t.offset = o;
        }
        self.alignment = alignment;
        Ok(())
    }

    /// Type 39 is TL2 in a `bitnet*` file, which this crate refuses to write or read.
    fn check_tl2(&self) -> Result<(), GgufError> {
        if is_bitnet(&self.metadata) {
            if let Some(t) = self.tensors.iter().find(|t| t.ggml_type == GgmlType::MXFP4) {
                return Err(GgufError::Tl2NotSupported {
                    tensor: t.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// `offset + n_bytes` rounded up to `align`, or an error naming the tensor on overflow.
fn end_of(offset: u64, n_bytes: u64, align: u64, name: &str) -> Result<u64, GgufError> {
    offset
        .checked_add(n_bytes)
        .and_then(|end| end.checked_next_multiple_of(align))
        .ok_or_else(|| GgufError::TooLarge {
            what: format!("data section size at tensor `{name}`"),
            value: u64::MAX,
            limit: u64::MAX - align,
        })
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> GgufError + 'a {
    move |source| GgufError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn check_alignment(alignment: u32) -> Result<(), GgufError> {
    if !alignment.is_power_of_two() || !alignment.is_multiple_of(8) {
        return Err(GgufError::BadAlignment {
            value: alignment.into(),
            reason: "the alignment must be a power of two and a multiple of 8",
        });
    }
    Ok(())
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

/// A value without its type id (arrays: element type, count, elements).
fn write_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::U8(v) => out.write_all(&v.to_le_bytes()),
        Value::I8(v) => out.write_all(&v.to_le_bytes()),
        Value::U16(v) => out.write_all(&v.to_le_bytes()),
        Value::I16(v) => out.write_all(&v.to_le_bytes()),
        Value::U32(v) => out.write_all(&v.to_le_bytes()),
        Value::I32(v) => out.write_all(&v.to_le_bytes()),
        Value::F32(v) => out.write_all(&v.to_le_bytes()),
        Value::Bool(v) => out.write_all(&[u8::from(*v)]),
        Value::String(s) => write_str(out, s),
        Value::U64(v) => out.write_all(&v.to_le_bytes()),
        Value::I64(v) => out.write_all(&v.to_le_bytes()),
        Value::F64(v) => out.write_all(&v.to_le_bytes()),
        Value::Array(elem, items) => {
            out.write_all(&elem.id().to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(out, item))
        }
    }
}

/// The new file gets the permissions of the file it replaces, or `rw-r--r--` (the temporary
/// file is created `rw-------`).
fn set_permissions(tmp: &File, target: &Path) -> io::Result<()> {
    let perms = match std::fs::metadata(target) {
        Ok(m) => m.permissions(),
        Err(_) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::Permissions::from_mode(0o644)
            }
            #[cfg(not(unix))]
            {
                return Ok(());
            }
        }
    };
    tmp.set_permissions(perms)
}

/// A writer that counts the bytes that went through it.
struct Counted<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the data callback writes into: passes at most `left` bytes through, remembers an
/// attempt to write more (`overrun`: the total tried) and whether the sink itself failed.
struct Exact<'a, W: Write> {
    inner: &'a mut Counted<W>,
    left: u64,
    written: u64,
    overrun: Option<u64>,
    sink_failed: bool,
}

impl<W: Write> Write for Exact<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            let tried = self.written + buf.len() as u64;
            self.overrun = Some(self.overrun.map_or(tried, |t| t.max(tried)));
            return Err(io::Error::other(format!(
                "tensor data overrun: {tried} bytes written"
            )));
        }
        let n = self
            .inner
            .write(buf)
            .inspect_err(|_| self.sink_failed = true)?;
        self.left -= n as u64;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.sink_failed = true)
    }
}
