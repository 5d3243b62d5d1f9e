//! The ggml type ids and their block layouts, as GGUF files name them.
//!
//! A tensor of `n` elements in a block type with block size `B` and `T` bytes per block takes
//! `n / B * T` bytes. I2_S (BitNet fork, id 36) and TL1 (id 38) are the exceptions: `n / 4 + 32`
//! bytes (2-bit codes for the whole tensor, then one f32 scale and 28 padding bytes).

use std::fmt;

/// A ggml type id as stored in a GGUF tensor info. Kept as the raw `u32` so that unknown ids can
/// be carried and reported instead of being undefined behaviour.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// Block layout of one ggml type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    /// Canonical upper-case name (`"TQ2_0"`).
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

macro_rules! ggml_types {
    ($( $konst:ident = $id:literal, $name:literal, $blck:literal, $size:literal; )*) => {
        impl GgmlType {
            $( #[allow(missing_docs)] pub const $konst: GgmlType = GgmlType($id); )*
        }
        const TABLE: &[(u32, TypeInfo)] = &[
            $( ($id, TypeInfo { name: $name, block_size: $blck, type_size: $size }), )*
        ];
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 36;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    I2_S = 36, "I2_S", 1, 1;
    TL1 = 38, "TL1", 1, 1;
    MXFP4 = 39, "MXFP4", 32, 17;
}

impl GgmlType {
    /// Layout of this type, or `None` for an id this build does not know.
    pub fn info(self) -> Option<TypeInfo> {
        TABLE
            .iter()
            .find(|(id, _)| *id == self.0)
            .map(|(_, info)| *info)
    }

    /// Canonical name, or `"type<id>"` for an unknown id.
    pub fn name(self) -> String {
        match self.info() {
            Some(info) => info.name.to_string(),
            None => format!("type{}", self.0),
        }
    }

    /// Parses a canonical name, case-insensitively (`"tq2_0"` → `TQ2_0`).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|(_, info)| info.name.eq_ignore_ascii_case(name))
            .map(|(id, _)| GgmlType(*id))
    }

    /// Whether the type stores one scale per whole tensor (I2_S, TL1: `n/4 + 32` bytes).
    pub fn is_per_tensor_packed(self) -> bool {
        self == GgmlType::I2_S || self == GgmlType::TL1
    }

    /// Bytes taken by a tensor of this type whose row length is `row_len` (ggml `ne[0]`) and
    /// whose total element count is `n_elements`. `None` for an unknown type, a row length that
    /// is not a multiple of the block size, or arithmetic overflow.
    pub fn nbytes(self, row_len: u64, n_elements: u64) -> Option<u64> {
        let info = self.info()?;
        if self.is_per_tensor_packed() {
            return (n_elements / 4).checked_add(32);
        }
        if info.block_size == 0 || !row_len.is_multiple_of(info.block_size) {
            return None;
        }
        (n_elements / info.block_size).checked_mul(info.type_size)
    }
}

impl fmt::Debug for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_ggml_table() {
        assert_eq!(GgmlType::TQ2_0.nbytes(256, 512), Some(132));
        assert_eq!(GgmlType::TQ1_0.nbytes(256, 256), Some(54));
        assert_eq!(GgmlType::Q8_0.nbytes(64, 128), Some(136));
        assert_eq!(GgmlType::I2_S.nbytes(128, 256), Some(96));
        assert_eq!(GgmlType::F16.nbytes(3, 6), Some(12));
        assert_eq!(GgmlType::Q8_0.nbytes(33, 33), None);
        assert_eq!(GgmlType(1000).nbytes(1, 1), None);
        assert_eq!(GgmlType::from_name("tq2_0"), Some(GgmlType::TQ2_0));
        assert_eq!(GgmlType(77).name(), "type77");
    }
}
