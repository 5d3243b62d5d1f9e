//! Weight formats of ggml / GGUF.

mod types;

pub use types::{GgmlType, TypeInfo};
