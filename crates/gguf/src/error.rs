//! The one error type of the crate. Every variant names the thing at fault (file, key, tensor,
//! byte offset) so that a message is useful without a debugger.

use std::io;
use std::path::PathBuf;

use crate::value::ValueType;
use crate::GgmlType;

/// Everything that can go wrong reading, querying or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// A file system operation on `path` failed (open, map, create, sync, rename).
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done: `"open"`, `"map"`, `"create a temporary file next to"`, ...
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Writing to the output sink given to [`GgufWriter::write`](crate::GgufWriter::write) failed.
    #[error("writing the GGUF output failed: {0}")]
    Write(#[source] io::Error),

    /// The file does not start with the bytes `GGUF`.
    #[error(
        "not a GGUF file: it starts with {}, expected \"GGUF\" (47 47 55 46)",
        show_magic(found)
    )]
    BadMagic {
        /// The first four bytes of the file.
        found: [u8; 4],
    },

    /// The version field looks byte-swapped: a big-endian file.
    #[error(
        "big-endian GGUF not supported (the version field reads 0x{raw:08x} as little-endian)"
    )]
    BigEndian {
        /// The version field as read little-endian.
        raw: u32,
    },

    /// A version other than 2 or 3 (version 1 used 32-bit counts and is obsolete).
    #[error("unsupported GGUF version {0}: only versions 2 and 3 can be read")]
    UnsupportedVersion(u32),

    /// The file ends before a field it declares.
    #[error("file truncated while reading {what} at offset {offset}: {needed} bytes needed, {available} left")]
    Truncated {
        /// The field being read (`"length of key #3"`, `"value of key `general.name`"`, ...).
        what: String,
        /// Byte offset of the field in the file.
        offset: u64,
        /// Bytes the field needs (at least).
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// A count or length above the documented cap of this reader (see the `MAX_*` constants).
    #[error("absurd {what}: {value} (limit {limit})")]
    TooLarge {
        /// The count or length (`"metadata key/value count"`, `"length of key #0"`, ...).
        what: String,
        /// The value read from the file.
        value: u64,
        /// The largest value accepted.
        limit: u64,
    },

    /// A metadata key that must be present is not.
    #[error("missing key `{0}`")]
    MissingKey(String),

    /// A metadata value has another type than the one asked for.
    #[error("key `{key}` is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The stored type (`"u64"`, `"array<string>"`).
        found: String,
        /// The type asked for.
        expected: String,
    },

    /// An integer value that does not fit the integer type asked for.
    #[error("key `{key}` is {found} {value}, which does not fit in {expected}")]
    OutOfRange {
        /// The key (with `[index]` for an array element).
        key: String,
        /// The stored type.
        found: String,
        /// The stored value.
        value: String,
        /// The type asked for.
        expected: String,
    },

    /// A metadata value type id outside 0..=12.
    #[error("unknown metadata value type id {id} for key `{key}`")]
    UnknownValueType {
        /// The key whose value (or array element type) has the unknown id.
        key: String,
        /// The id read.
        id: u32,
    },

    /// A bool stored as a byte other than 0 or 1.
    #[error("key `{key}` holds a bool stored as byte {byte}; only 0 and 1 are valid")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte read.
        byte: u8,
    },

    /// A ggml type id this build does not know.
    #[error("tensor `{tensor}` has unknown ggml type id {id}")]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The id read.
        id: u32,
    },

    /// Type 39 in a file whose architecture starts with `bitnet`: the BitNet fork's TL2.
    #[error(
        "TL2 (type 39 in a bitnet file) is not supported: its layout depends on compile-time tile parameters; \
         re-convert to I2_S (tensor `{tensor}`)"
    )]
    Tl2NotSupported {
        /// The first tensor of type 39.
        tensor: String,
    },

    /// A key, string value or tensor name that is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string (`"key #2"`, `"value of key `general.name`"`, `"name of tensor #0"`).
        what: String,
        /// Byte offset of the string's bytes in the file.
        offset: u64,
    },

    /// The product of a tensor's dimensions overflows `i64`.
    #[error("tensor `{tensor}` has dimensions {dims:?} whose element count overflows")]
    DimsOverflow {
        /// The tensor.
        tensor: String,
        /// Its dimensions, ggml order.
        dims: Vec<u64>,
    },

    /// More than 4 dimensions.
    #[error("tensor `{tensor}` has {n_dims} dimensions; at most 4 are allowed")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// The number of dimensions given.
        n_dims: u64,
    },

    /// A tensor added to the writer without any dimension.
    #[error("tensor `{tensor}` has no dimensions; give at least one")]
    NoDims {
        /// The tensor.
        tensor: String,
    },

    /// A row length that is not a whole number of blocks of the tensor's type.
    #[error("tensor `{tensor}`: row length {row_len} is not a multiple of the {ty} block size {block_size}")]
    BadRowLength {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// `dims[0]`.
        row_len: u64,
        /// The type's elements per block.
        block_size: u64,
    },

    /// A tensor whose bytes would lie (partly) beyond the end of the file.
    #[error(
        "tensor `{tensor}` data (offset {offset} + {size} bytes in the data section at {data_offset}) \
         runs past the end of the file ({file_size} bytes)"
    )]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// Where the data section starts in the file.
        data_offset: u64,
        /// The file's size.
        file_size: u64,
    },

    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor `{tensor}` offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// The tensor.
        tensor: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// The same metadata key twice.
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),

    /// The same tensor name twice.
    #[error("duplicate tensor `{0}`")]
    DuplicateTensor(String),

    /// An alignment that is not a power of two (or, for writing, not a multiple of 8).
    #[error("bad alignment {value}: {reason}")]
    BadAlignment {
        /// The alignment given or read.
        value: u64,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An array of arrays (the spec allows them, ggml refuses them, so does this crate).
    #[error("key `{key}`: nested arrays are not supported")]
    NestedArray {
        /// The key.
        key: String,
    },

    /// An array element whose type differs from the array's element type.
    #[error("key `{key}`: array element {index} is {found}, but the array holds {expected}")]
    ArrayElementMismatch {
        /// The key.
        key: String,
        /// Index of the first wrong element.
        index: usize,
        /// The array's declared element type.
        expected: ValueType,
        /// The element's type.
        found: ValueType,
    },

    /// A metadata key the writer refuses (empty, or 65536 bytes or longer).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key (possibly shortened for display).
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A tensor name the writer refuses (empty, or longer than 63 bytes).
    #[error("invalid tensor name {name:?}: {reason}")]
    InvalidTensorName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The writer's data callback wrote another number of bytes than the tensor takes.
    #[error(
        "tensor `{tensor}`: the data callback wrote {written} bytes, expected exactly {expected}"
    )]
    DataSizeMismatch {
        /// The tensor.
        tensor: String,
        /// Its size in bytes.
        expected: u64,
        /// Bytes the callback wrote (or tried to write).
        written: u64,
    },

    /// The writer's data callback returned an error.
    #[error("tensor `{tensor}`: producing its data failed: {source}")]
    TensorData {
        /// The tensor.
        tensor: String,
        /// The callback's error.
        #[source]
        source: io::Error,
    },
}

/// `47 47 4d 4c ("GGML")`: hex, then the printable ASCII rendering.
fn show_magic(bytes: &[u8; 4]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} ({text:?})", hex.join(" "))
}
