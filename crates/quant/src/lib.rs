//! Weight formats of ggml / GGUF: the layout table, and a scalar reference codec per format.
//!
//! A GGUF tensor is a row-major array whose rows (ggml `ne[0]`, the innermost dimension) hold
//! `row_len` elements. A *block format* cuts each row into blocks of a fixed number of elements
//! and stores each block as a fixed number of bytes, usually a scale plus small integers (Q8_0:
//! 32 elements in 34 bytes). Blocks never straddle rows, so the row length must be a multiple of
//! the block size, and a tensor is then simply its blocks back to back. I2_S (BitNet) is the odd
//! one out: 2-bit codes for the whole tensor, then a single f32 scale for all of it.
//!
//! This crate encodes and decodes those bytes:
//!
//! * [`quantize`] / [`dequantize`] work on a whole tensor and validate the shape and sizes,
//!   returning a [`QuantError`] that names the type and the numbers when something does not fit;
//! * [`formats`] has one module per format with the raw codec (`quantize`, `dequantize`, and
//!   per-block helpers), which only asserts its preconditions;
//! * [`ternarize_absmean`] and [`is_ternary`] turn a BitNet b1.58 weight into exactly ternary
//!   values, and check for them, before it is stored as TQ1_0 / TQ2_0 / I2_S.
//!
//! Encoders: F32, F16, BF16, Q8_0, Q4_0, TQ1_0, TQ2_0, I2_S, Q6_K. Decoders: those plus Q4_1,
//! Q5_0 and Q5_1. The bytes are identical to what llama.cpp's gguf-py writes (tested against it), and
//! I2_S follows microsoft/BitNet. `docs/formats.md` describes every layout and rounding rule.

#![warn(missing_docs)]

mod error;
pub mod formats;
pub mod huge;
pub mod kernels;
mod types;

pub use error::QuantError;
pub use huge::HugeBytes;
pub use kernels::{matmul, QMatrix};
pub use types::{GgmlType, TypeInfo};

/// The types [`quantize`] can write.
pub const QUANTIZE_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
    GgmlType::Q6_K,
];

/// The types [`dequantize`] can read.
pub const DEQUANTIZE_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q6_K,
];

/// "F32, F16, ..." for error messages.
pub(crate) fn type_list(types: &[GgmlType]) -> String {
    types
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

type Encoder = fn(&[f32]) -> Vec<u8>;
type Decoder = fn(&[u8], &mut [f32]);

fn encoder(ty: GgmlType) -> Option<Encoder> {
    Some(match ty {
        GgmlType::F32 => formats::f32::quantize,
        GgmlType::F16 => formats::f16::quantize,
        GgmlType::BF16 => formats::bf16::quantize,
        GgmlType::Q8_0 => formats::q8_0::quantize,
        GgmlType::Q4_0 => formats::q4_0::quantize,
        GgmlType::TQ1_0 => formats::tq1_0::quantize,
        GgmlType::TQ2_0 => formats::tq2_0::quantize,
        GgmlType::I2_S => formats::i2_s::quantize,
        GgmlType::Q6_K => formats::q6_k::quantize,
        _ => return None,
    })
}

fn decoder(ty: GgmlType) -> Option<Decoder> {
    Some(match ty {
        GgmlType::F32 => formats::f32::dequantize,
        GgmlType::F16 => formats::f16::dequantize,
        GgmlType::BF16 => formats::bf16::dequantize,
        GgmlType::Q8_0 => formats::q8_0::dequantize,
        GgmlType::Q4_0 => formats::q4_0::dequantize,
        GgmlType::TQ1_0 => formats::tq1_0::dequantize,
        GgmlType::TQ2_0 => formats::tq2_0::dequantize,
        GgmlType::I2_S => formats::i2_s::dequantize,
        GgmlType::Q4_1 => formats::q4_1::dequantize,
        GgmlType::Q5_0 => formats::q5_0::dequantize,
        GgmlType::Q5_1 => formats::q5_1::dequantize,
        GgmlType::Q6_K => formats::q6_k::dequantize,
        _ => return None,
    })
}

/// The multiple a row length must be: the block size, or 128 for I2_S (its interleave groups,
/// which the BitNet kernels need to stay inside one row).
fn row_multiple(ty: GgmlType) -> usize {
    if ty == GgmlType::I2_S {
        formats::i2_s::BLOCK_SIZE
    } else {
        ty.info().map_or(1, |info| info.block_size as usize)
    }
}

fn check_row_len(ty: GgmlType, row_len: usize) -> Result<(), QuantError> {
    let block_size = row_multiple(ty);
    if row_len == 0 || !row_len.is_multiple_of(block_size) {
        return Err(QuantError::RowLength {
            ty,
            row_len,
            block_size,
        });
    }
    Ok(())
}

fn check_whole_rows(ty: GgmlType, n_elements: usize, row_len: usize) -> Result<(), QuantError> {
    if !n_elements.is_multiple_of(row_len) {
        return Err(QuantError::ElementCount {
            ty,
            n_elements,
            row_len,
        });
    }
    Ok(())
}

/// Whether `ty` can encode tensors with rows of `row_len` elements; Err explains why not.
///
/// Row lengths must be positive multiples of the block size (32 for Q8_0/Q4_0, 256 for
/// TQ1_0/TQ2_0/Q6_K, 128 for I2_S, 1 for F32/F16/BF16).
pub fn check_quantizable(ty: GgmlType, row_len: usize) -> Result<(), QuantError> {
    if encoder(ty).is_none() {
        return Err(QuantError::CannotQuantize { ty });
    }
    check_row_len(ty, row_len)
}

/// Whether `ty` can be decoded for tensors with rows of `row_len` elements; Err explains why not.
pub fn check_dequantizable(ty: GgmlType, row_len: usize) -> Result<(), QuantError> {
    if decoder(ty).is_none() {
        return Err(QuantError::CannotDequantize { ty });
    }
    check_row_len(ty, row_len)
}

/// The exact byte size of a tensor of `n_elements` elements of type `ty` with rows of `row_len`,
/// after checking that the type is decodable and the shape fits it.
pub fn tensor_nbytes(ty: GgmlType, row_len: usize, n_elements: usize) -> Result<usize, QuantError> {
    check_dequantizable(ty, row_len)?;
    check_whole_rows(ty, n_elements, row_len)?;
    ty.nbytes(row_len as u64, n_elements as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(QuantError::TooLarge { ty, n_elements })
}

/// Encodes a whole row-major tensor (rows of `row_len` elements) into `ty`'s on-disk bytes.
///
/// The result is exactly [`GgmlType::nbytes`] long (for I2_S that includes the 32-byte tail with
/// the tensor scale). Alignment padding between tensors is the container's business.
pub fn quantize(ty: GgmlType, src: &[f32], row_len: usize) -> Result<Vec<u8>, QuantError> {
    check_quantizable(ty, row_len)?;
    check_whole_rows(ty, src.len(), row_len)?;
    let encode = encoder(ty).ok_or(QuantError::CannotQuantize { ty })?;
    Ok(encode(src))
}

/// Decodes a whole tensor's bytes to f32 (n_elements = total element count).
///
/// `bytes` must be exactly the tensor's size ([`tensor_nbytes`]); no padding.
pub fn dequantize(
    ty: GgmlType,
    bytes: &[u8],
    row_len: usize,
    n_elements: usize,
) -> Result<Vec<f32>, QuantError> {
    // Validate the size before allocating: `n_elements` may come from an untrusted file.
    check_size(ty, bytes, row_len, n_elements)?;
    let mut out = vec![0.0f32; n_elements];
    dequantize_into(ty, bytes, row_len, &mut out)?;
    Ok(out)
}

/// Like [`dequantize`], but writes into `out` (whose length is the element count).
pub fn dequantize_into(
    ty: GgmlType,
    bytes: &[u8],
    row_len: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    check_size(ty, bytes, row_len, out.len())?;
    let decode = decoder(ty).ok_or(QuantError::CannotDequantize { ty })?;
    decode(bytes, out);
    Ok(())
}

fn check_size(
    ty: GgmlType,
    bytes: &[u8],
    row_len: usize,
    n_elements: usize,
) -> Result<(), QuantError> {
    let expected = tensor_nbytes(ty, row_len, n_elements)?;
    if bytes.len() != expected {
        return Err(QuantError::ByteLength {
            ty,
            n_elements,
            expected,
            got: bytes.len(),
        });
    }
    Ok(())
}

/// BitNet b1.58 absmean ternarization (HF transformers integrations/bitnet.py WeightQuant / BitNet weight_quant):
/// s = 1/max(mean|W|, 1e-5); W_t = clamp(round(W*s), -1, 1); replaces w in place by W_t / s (values in {-m, 0, +m}, m = max(mean|W|,1e-5))
/// and returns m. round = round-half-to-even like torch.round.
///
/// All arithmetic is f32 as in the PyTorch code, except that the mean is accumulated in f64
/// (torch sums in f32 with pairwise summation, so the mean may differ in its last bit). The value
/// returned is the magnitude actually written, `1 / s`, which equals `m` or is within one f32
/// rounding of it; every nonzero output is exactly `±` that value, so [`is_ternary`] holds.
/// An empty slice returns `1 / (1 / 1e-5)`. A NaN weight stays NaN.
pub fn ternarize_absmean(w: &mut [f32]) -> f32 {
    let sum: f64 = w.iter().map(|x| x.abs() as f64).sum();
    let mean = if w.is_empty() {
        0.0
    } else {
        (sum / w.len() as f64) as f32
    };
    let m = mean.max(1e-5);
    let s = 1.0 / m;
    for x in w.iter_mut() {
        *x = (*x * s).round_ties_even().clamp(-1.0, 1.0) / s;
    }
    1.0 / s
}

/// True when every value is in {-m, 0, +m} for one m (what the converter checks before a ternary outtype).
///
/// `-0.0` counts as zero; NaN and infinities are never ternary; an all-zero (or empty) slice is.
pub fn is_ternary(w: &[f32]) -> bool {
    let mut magnitude = None;
    for &x in w {
        if x == 0.0 {
            continue;
        }
        if !x.is_finite() {
            return false;
        }
        match magnitude {
            None => magnitude = Some(x.abs()),
            Some(m) if m == x.abs() => {}
            Some(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_type_and_the_numbers() {
        let e = quantize(GgmlType::TQ2_0, &[0.0; 3200], 3200).unwrap_err();
        assert_eq!(
            e,
            QuantError::RowLength {
                ty: GgmlType::TQ2_0,
                row_len: 3200,
                block_size: 256
            }
        );
        assert_eq!(
            e.to_string(),
            "TQ2_0 needs a row length that is a positive multiple of 256, got row length 3200"
        );
        let e = check_quantizable(GgmlType::I2_S, 8640).unwrap_err();
        assert_eq!(
            e,
            QuantError::RowLength {
                ty: GgmlType::I2_S,
                row_len: 8640,
                block_size: 128
            }
        );
        assert!(check_quantizable(GgmlType::I2_S, 2560).is_ok());
        assert!(check_quantizable(GgmlType::F16, 7).is_ok());
        assert!(matches!(
            check_quantizable(GgmlType::F16, 0),
            Err(QuantError::RowLength { .. })
        ));

        let e = quantize(GgmlType::Q4_1, &[0.0; 32], 32).unwrap_err();
        assert_eq!(e, QuantError::CannotQuantize { ty: GgmlType::Q4_1 });
        assert!(e
            .to_string()
            .starts_with("quantizing to Q4_1 is not supported (supported: F32, F16, BF16"));
        let e = dequantize(GgmlType(99), &[], 1, 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("dequantizing type99 is not supported"),
            "{e}"
        );

        let e = quantize(GgmlType::Q8_0, &[0.0; 96], 64).unwrap_err();
        assert_eq!(
            e,
            QuantError::ElementCount {
                ty: GgmlType::Q8_0,
                n_elements: 96,
                row_len: 64
            }
        );
        assert_eq!(
            e.to_string(),
            "Q8_0: element count 96 is not a multiple of the row length 64"
        );

        let e = dequantize(GgmlType::Q8_0, &[0; 67], 32, 64).unwrap_err();
        assert_eq!(
            e,
            QuantError::ByteLength {
                ty: GgmlType::Q8_0,
                n_elements: 64,
                expected: 68,
                got: 67
            }
        );
        assert_eq!(
            e.to_string(),
            "Q8_0 data for 64 elements must be 68 bytes, got 67"
        );
        // I2_S: 128 / 4 code bytes + the 32-byte tail.
        let e = dequantize(GgmlType::I2_S, &[0; 63], 128, 128).unwrap_err();
        assert_eq!(
            e,
            QuantError::ByteLength {
                ty: GgmlType::I2_S,
                n_elements: 128,
                expected: 64,
                got: 63
            }
        );
    }

    #[test]
    fn huge_element_counts_fail_before_allocating() {
        let e = dequantize(GgmlType::F32, &[0; 8], 1, usize::MAX).unwrap_err();
        assert!(
            matches!(
                e,
                QuantError::TooLarge { .. } | QuantError::ByteLength { .. }
            ),
            "{e}"
        );
        let e = dequantize(GgmlType::TQ1_0, &[0; 54], 256, 1 << 60).unwrap_err();
        assert!(matches!(e, QuantError::ByteLength { .. }), "{e}");
    }

    #[test]
    fn sizes_match_the_type_table() {
        for &ty in QUANTIZE_TYPES {
            let row_len = row_multiple(ty) * 2;
            let bytes = quantize(ty, &vec![0.5; row_len * 3], row_len).unwrap();
            assert_eq!(
                Some(bytes.len() as u64),
                ty.nbytes(row_len as u64, row_len as u64 * 3),
                "{ty}"
            );
            assert_eq!(tensor_nbytes(ty, row_len, row_len * 3), Ok(bytes.len()));
        }
    }

    #[test]
    fn ternarize_matches_hand_computed_absmean() {
        // mean|w| = (0.25 + 0.75 + 1.25 + 0 + 0.375 + 0.375) / 6 = 0.5 exactly; s = 2.
        // w*s = 0.5, -1.5, 2.5, 0, 0.75, -0.75 -> round half even: 0, -2, 2, 0, 1, -1 -> clamp
        // to 0, -1, 1, 0, 1, -1 (torch.round would give the same; half-away would give 1 first).
        let mut w = [0.25f32, -0.75, 1.25, 0.0, 0.375, -0.375];
        let m = ternarize_absmean(&mut w);
        assert_eq!(m, 0.5);
        assert_eq!(w, [0.0, -0.5, 0.5, 0.0, 0.5, -0.5]);
        assert!(is_ternary(&w));
    }

    #[test]
    fn ternarize_floors_the_mean_at_1e_5() {
        let mut w = [1e-7f32, -2e-7, 0.0, 3e-5];
        let m = ternarize_absmean(&mut w);
        assert!((m - 1e-5).abs() < 1e-11);
        // 1e-7 * 1e5 = 0.01 -> 0; 3e-5 * 1e5 = 3 -> clamped to 1.
        assert_eq!(w, [0.0, -0.0, 0.0, m]);
    }

    #[test]
    fn is_ternary_cases() {
        assert!(is_ternary(&[]));
        assert!(is_ternary(&[0.0, -0.0]));
        assert!(is_ternary(&[0.5, -0.5, 0.0, 0.5]));
        assert!(!is_ternary(&[0.5, -0.25]));
        assert!(!is_ternary(&[0.5, f32::NAN]));
        assert!(!is_ternary(&[f32::INFINITY, f32::NEG_INFINITY]));
        assert!(!is_ternary(&[0.5, f32::from_bits(0.5f32.to_bits() + 1)]));
    }
}
