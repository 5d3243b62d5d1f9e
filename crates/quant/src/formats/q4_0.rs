//! Q4_0 (ggml type 2): blocks of 32 elements, 18 bytes each.
//!
//! ```text
//! struct block_q4_0 { f16 d; u8 qs[16]; }      // element j (< 16) = qs[j] & 15, element j + 16 = qs[j] >> 4
//! ```
//! Encoding (llama.cpp `quantize_row_q4_0_ref`, gguf-py `Q4_0`): `max` = the first element with
//! the largest magnitude, keeping its sign; `d = max / -8`, `id = 1/d` (0 when `d == 0`);
//! `q = min(15, trunc(x * id + 8.5))`, all in f32 (so the extreme element maps to 0 and ties round
//! up). `d` is stored as f16. Decoding: `x = (q - 8) * d`.
//!
//! A block of zeros whose first element is `-0.0` gets `d = +0.0` here and in gguf-py (which takes
//! the element itself), but `d = -0.0` in the C reference (which starts from `max = 0.0`); every
//! other input gives the same bytes in all three.

use super::f16;

/// Elements per block.
pub const BLOCK_SIZE: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;

/// Encodes one block of 32 values.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len(), BLOCK_SIZE);
    assert_eq!(out.len(), BLOCK_BYTES);
    // First index of the largest |x| (numpy argmax), then that element with its sign.
    let mut imax = 0;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[imax].abs() {
            imax = i;
        }
    }
    let d = x[imax] / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::encode(d));
    let q = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
    for j in 0..BLOCK_SIZE / 2 {
        out[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// Decodes one 18-byte block into 32 values.
pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    assert_eq!(b.len(), BLOCK_BYTES);
    assert_eq!(y.len(), BLOCK_SIZE);
    let d = f16::decode([b[0], b[1]]);
    for j in 0..BLOCK_SIZE / 2 {
        let q = b[2 + j];
        y[j] = ((q & 15) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Encodes `src` block by block.
///
/// # Panics
/// If `src.len()` is not a multiple of 32.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    super::quantize_blocks("Q4_0", src, BLOCK_SIZE, BLOCK_BYTES, quantize_block)
}

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 32 or `bytes.len() != out.len() / 32 * 18`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    super::dequantize_blocks(
        "Q4_0",
        bytes,
        out,
        BLOCK_SIZE,
        BLOCK_BYTES,
        dequantize_block,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // max = -8 (the first largest magnitude, negative) gives d = 1, id = 1: q = trunc(x + 8.5).
        let mut x = [0.0f32; 32];
        x[0] = 0.5; // 9.0 -> 9   (tie rounds up)
        x[1] = -0.5; // 8.0 -> 8
        x[2] = -8.0; // 0.5 -> 0  (the max element itself)
        x[3] = 8.0; // 16.5 -> 16 -> clamped to 15 (decodes as 7)
        x[16] = 3.2; // 11.7 -> 11
        x[17] = -7.6; // 0.9 -> 0
        let b = quantize(&x);
        assert_eq!(&b[..2], &[0x00, 0x3c], "d = +1.0 as f16");
        assert_eq!(b[2], 9 | (11 << 4));
        assert_eq!(b[3], 8);
        assert_eq!(b[4], 8 << 4);
        assert_eq!(b[5], 15 | (8 << 4));
        let mut y = [0.0f32; 32];
        dequantize(&b, &mut y);
        assert_eq!(&y[..4], &[1.0, 0.0, -8.0, 7.0]);
        assert_eq!(&y[16..18], &[3.0, -8.0]);
    }

    #[test]
    fn all_zero_block_stores_negative_zero_scale() {
        // max = +0.0, d = 0.0 / -8 = -0.0 (f16 0x8000), every q = trunc(0 + 8.5) = 8.
        let b = quantize(&[0.0; 32]);
        assert_eq!(&b[..2], &[0x00, 0x80]);
        assert!(b[2..].iter().all(|&q| q == 0x88));
    }
}
