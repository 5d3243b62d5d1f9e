//! The tensor directory entry and the one size rule both the reader and the writer use.

use crate::error::GgufError;
use crate::metadata::Metadata;
use crate::GgmlType;

/// One entry of the tensor directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`"blk.0.attn_q.weight"`).
    pub name: String,
    /// Dimensions in ggml `ne` order: `dims[0]` is the row length (the contiguous dimension),
    /// i.e. the numpy shape reversed.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (from the type's size rule, not from the file).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements: the product of `dims` (1 for no dims). Saturates at `u64::MAX` for
    /// dims that overflow, which a reader or writer of this crate never produces.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

/// The value of `general.architecture` starts with `bitnet`: ggml type 39 then means the BitNet
/// fork's TL2, not upstream's MXFP4.
pub(crate) fn is_bitnet(metadata: &Metadata) -> bool {
    metadata
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .is_some_and(|arch| arch.starts_with("bitnet"))
}

/// Bytes taken by tensor `name` of type `ty` with dimensions `dims`, or the precise reason it
/// has none: unknown type, TL2, element count overflowing `i64`, row length not a whole number
/// of blocks.
pub(crate) fn tensor_size(
    name: &str,
    dims: &[u64],
    ty: GgmlType,
    bitnet: bool,
) -> Result<u64, GgufError> {
    let overflow = || GgufError::DimsOverflow {
        tensor: name.to_string(),
        dims: dims.to_vec(),
    };
    // ggml counts elements in int64_t: keep every dim and the product within i64.
    let mut n_elements: u64 = 1;
    for &d in dims {
        if d > i64::MAX as u64 {
            return Err(overflow());
        }
        n_elements = n_elements
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(overflow)?;
    }
    if ty == GgmlType::MXFP4 && bitnet {
        return Err(GgufError::Tl2NotSupported {
            tensor: name.to_string(),
        });
    }
    let info = ty.info().ok_or_else(|| GgufError::UnknownTensorType {
        tensor: name.to_string(),
        id: ty.0,
    })?;
    let row_len = dims.first().copied().unwrap_or(1);
    match ty.nbytes(row_len, n_elements) {
        Some(n) => Ok(n),
        None if !ty.is_per_tensor_packed()
            && info.block_size != 0
            && !row_len.is_multiple_of(info.block_size) =>
        {
            Err(GgufError::BadRowLength {
                tensor: name.to_string(),
                ty,
                row_len,
                block_size: info.block_size,
            })
        }
        None => Err(overflow()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(
            tensor_size("t", &[256, 2], GgmlType::TQ2_0, false).unwrap(),
            132
        );
        assert_eq!(
            tensor_size("t", &[128, 2], GgmlType::I2_S, true).unwrap(),
            64 + 32
        );
        assert_eq!(tensor_size("t", &[3, 0], GgmlType::F32, false).unwrap(), 0);
        assert_eq!(tensor_size("t", &[], GgmlType::F32, false).unwrap(), 4);
        assert_eq!(tensor_size("t", &[64], GgmlType::MXFP4, false).unwrap(), 34);
    }

    #[test]
    fn size_errors_name_the_problem() {
        let e = tensor_size("w", &[33, 1], GgmlType::Q8_0, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor `w`: row length 33 is not a multiple of the Q8_0 block size 32"
        );
        let e = tensor_size("w", &[1 << 32, 1 << 32], GgmlType::F32, false).unwrap_err();
        assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
        let e = tensor_size("w", &[u64::MAX], GgmlType::F32, false).unwrap_err();
        assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
        let e = tensor_size("w", &[32], GgmlType(37), false).unwrap_err();
        assert_eq!(e.to_string(), "tensor `w` has unknown ggml type id 37");
        let e = tensor_size("w", &[32], GgmlType(39), true).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TL2 (type 39 in a bitnet file) is not supported"),
            "{e}"
        );
        // F32 of 2^61 elements is 2^63 bytes: fits i64 elements but overflows nothing in u64.
        assert_eq!(
            tensor_size("w", &[1 << 61], GgmlType::F32, false).unwrap(),
            1 << 63
        );
        let e = tensor_size("w", &[1 << 62], GgmlType::F32, false).unwrap_err();
        assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
    }

    #[test]
    fn n_elements_saturates() {
        let t = TensorInfo {
            name: "t".into(),
            dims: vec![u64::MAX, 2],
            ggml_type: GgmlType::F32,
            offset: 0,
            n_bytes: 0,
        };
        assert_eq!(t.n_elements(), u64::MAX);
        let t = TensorInfo {
            dims: vec![8, 4],
            ..t
        };
        assert_eq!(t.n_elements(), 32);
    }
}
