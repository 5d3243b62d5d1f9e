//! The GGUF container: read (memory-mapped, zero-copy), query, and write.
//!
//! # The container model
//!
//! A GGUF file is a little-endian byte stream in four parts:
//!
//! ```text
//! header       "GGUF"  version: u32 (2 or 3)  tensor_count: u64  kv_count: u64
//! metadata     kv_count × (key: string, value_type: u32, value)
//! directory    tensor_count × (name: string, n_dims: u32, dims: n_dims × u64, ggml_type: u32, offset: u64)
//! padding      zeros up to a multiple of ALIGN
//! data         the tensors' bytes, each at data_start + offset, each padded to ALIGN
//! ```
//!
//! A string is a `u64` byte length and UTF-8 bytes (no NUL). A value is one of 13 types
//! ([`ValueType`]); an array holds an element type, a `u64` count and that many elements
//! (arrays of arrays are refused, as ggml does). `ALIGN` is the `u32` key `general.alignment`
//! (a power of two), 32 when absent.
//!
//! Tensor `dims` are in ggml order: `dims[0]` is the row length, the contiguous dimension (the
//! numpy shape reversed). The byte size of a tensor is not stored: it follows from its type and
//! dims by the rule of the type table in the `quant` crate ([`GgmlType::nbytes`]), including the
//! BitNet fork's per-tensor types (I2_S, TL1: `n/4 + 32` bytes). Type id 39 is upstream's MXFP4,
//! except in files whose `general.architecture` starts with `bitnet`, where the BitNet fork uses it
//! for TL2, whose layout depends on compile-time tile parameters: those files are refused.
//!
//! # Reading
//!
//! [`GgufFile::open`] maps the file and validates the whole header before returning: every
//! count and length is bounded by the bytes left in the file (and by the `MAX_*` caps below)
//! before anything is allocated; every tensor has a known type, dims whose product fits `i64`,
//! an offset that is a multiple of the alignment and data that ends inside the file. Stored
//! offsets are trusted otherwise (tensors may be in any order, as the BitNet fork's reader
//! allows). After that, [`GgufFile::tensor_data`] is a plain slice of the mapping. No input makes
//! the reader panic; every failure is a [`GgufError`] naming the field, key or tensor and the
//! byte offset.
//!
//! # Writing
//!
//! [`GgufWriter`] collects metadata (in order, typed: a `u32` stays a `u32`) and the tensor
//! directory (contiguous offsets, each rounded up to the alignment), then streams the file,
//! asking a callback for each tensor's bytes so that one tensor at a time is in memory.
//! [`GgufWriter::write_file`] writes to a temporary file and renames it into place.
//!
//! ```
//! use gguf::{GgmlType, GgufFile, GgufWriter, Value};
//!
//! let mut w = GgufWriter::new();
//! w.add("general.architecture", Value::String("llama".into()))?;
//! w.add("llama.block_count", Value::U32(1))?;
//! w.add_tensor("output_norm.weight", &[4], GgmlType::F32)?;
//! let mut bytes = Vec::new();
//! w.write(&mut bytes, |_, _, out| out.write_all(&[0u8; 16]))?;
//!
//! let f = GgufFile::from_bytes(bytes)?;
//! assert_eq!(f.architecture()?, "llama");
//! assert_eq!(f.metadata.get_u32("llama.block_count")?, 1);
//! let t = f.tensor("output_norm.weight").unwrap();
//! assert_eq!((t.offset, t.n_bytes, f.tensor_data(t).len()), (0, 16, 16));
//! # Ok::<(), gguf::GgufError>(())
//! ```

#![warn(missing_docs)]

mod error;
mod metadata;
mod reader;
mod tensor;
mod value;
mod writer;

pub use error::GgufError;
pub use metadata::Metadata;
pub use quant::GgmlType;
pub use reader::{GgufFile, GgufHeader, Residency};
pub use tensor::TensorInfo;
pub use value::{Value, ValueType};
pub use writer::{GgufWriter, WRITE_VERSION};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Longest tensor name the writer accepts, in bytes (ggml's `GGML_MAX_NAME` is 64 with the NUL).
pub const MAX_TENSOR_NAME_LEN: usize = 63;

/// Reader cap: longest key or tensor name, in bytes (the spec's key limit: under 65536).
pub const MAX_NAME_LEN: u64 = 65_535;

/// Reader cap: longest string value, in bytes (1 GiB; embedded `tokenizer.json` files are tens of
/// MB at most).
pub const MAX_STRING_LEN: u64 = 1 << 30;

/// Reader cap: most elements in one metadata array (16 Mi; vocabularies have under 1 Mi tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;

/// Reader cap: most metadata entries (1 Mi; real files have under 100).
pub const MAX_KV_COUNT: u64 = 1 << 20;

/// Reader cap: most tensors (1 Mi; the largest models have tens of thousands).
pub const MAX_TENSOR_COUNT: u64 = 1 << 20;
