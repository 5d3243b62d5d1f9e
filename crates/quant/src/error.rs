//! The one error type of this crate.

use crate::GgmlType;

/// Why a tensor cannot be encoded or decoded.
///
/// Every variant names the type and the numbers involved, so that a caller can print it as is
/// ("TQ2_0 needs a row length that is a positive multiple of 256, got 3200").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no encoder in this crate.
    #[error(
        "quantizing to {ty} is not supported (supported: {})",
        crate::type_list(crate::QUANTIZE_TYPES)
    )]
    CannotQuantize {
        /// The requested output type.
        ty: GgmlType,
    },
    /// The type has no decoder in this crate.
    #[error(
        "dequantizing {ty} is not supported (supported: {})",
        crate::type_list(crate::DEQUANTIZE_TYPES)
    )]
    CannotDequantize {
        /// The type of the stored data.
        ty: GgmlType,
    },
    /// The type has no matmul kernel in [`crate::kernels`].
    #[error(
        "no matmul kernel for {ty} (supported: {})",
        crate::type_list(crate::kernels::KERNEL_TYPES)
    )]
    NoKernel {
        /// The type of the weight matrix.
        ty: GgmlType,
    },
    /// The row length (ggml `ne[0]`) is zero or not a multiple of the type's block size.
    #[error(
        "{ty} needs a row length that is a positive multiple of {block_size}, got row length {row_len}"
    )]
    RowLength {
        /// The type whose blocks must tile each row.
        ty: GgmlType,
        /// The row length asked for.
        row_len: usize,
        /// The number of elements one block (or, for I2_S, one 128-element group) covers.
        block_size: usize,
    },
    /// The element count is not a whole number of rows.
    #[error("{ty}: element count {n_elements} is not a multiple of the row length {row_len}")]
    ElementCount {
        /// The type being encoded or decoded.
        ty: GgmlType,
        /// The total number of elements.
        n_elements: usize,
        /// The row length.
        row_len: usize,
    },
    /// The byte buffer does not have the size the type and element count imply.
    #[error("{ty} data for {n_elements} elements must be {expected} bytes, got {got}")]
    ByteLength {
        /// The type of the data.
        ty: GgmlType,
        /// The element count the caller gave.
        n_elements: usize,
        /// The size implied by the type and the element count.
        expected: usize,
        /// The size of the buffer given.
        got: usize,
    },
    /// A per-tensor scale (I2_S: the f32 after the codes) is NaN or infinite: every weight of
    /// the tensor would be NaN or infinite.
    #[error("the {ty} per-tensor scale is {}; it must be finite", f32::from_bits(*scale_bits))]
    NonFiniteScale {
        /// The type of the data.
        ty: GgmlType,
        /// The scale's bit pattern (kept as bits so that the error stays `Eq`).
        scale_bits: u32,
    },
    /// The element count is so large that the byte size does not fit in `usize`.
    #[error("{ty}: {n_elements} elements is too large a tensor for this platform")]
    TooLarge {
        /// The type of the data.
        ty: GgmlType,
        /// The element count the caller gave.
        n_elements: usize,
    },
}
