//! Q8_0 (ggml type 8): blocks of 32 elements, 34 bytes each.
//!
//! ```text
//! struct block_q8_0 { f16 d; i8 qs[32]; }      // d at byte 0, element j at byte 2 + j
//! ```
//! Encoding (llama.cpp `quantize_row_q8_0_ref` in ggml/src/ggml-quants.c; gguf-py `Q8_0`, which
//! is bit-exact with it): `amax = max|x|`, `d = amax / 127`, `id = 1/d` (0 when `d == 0`),
//! `q = roundf(x * id)` with ties rounded away from zero, all in f32; only then is `d` stored as
//! f16 (round to nearest even). Decoding: `x = q * d`.

use super::f16;

/// Elements per block.
pub const BLOCK_SIZE: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 34;

/// Encodes one block of 32 values.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len(), BLOCK_SIZE);
    assert_eq!(out.len(), BLOCK_BYTES);
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::encode(d));
    for (q, &v) in out[2..].iter_mut().zip(x) {
        // `f32::round` rounds half away from zero, like C `roundf`; `as` saturates.
        *q = ((v * id).round() as i8) as u8;
    }
}

/// Decodes one 34-byte block into 32 values.
pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    assert_eq!(b.len(), BLOCK_BYTES);
    assert_eq!(y.len(), BLOCK_SIZE);
    let d = f16::decode([b[0], b[1]]);
    for (y, &q) in y.iter_mut().zip(&b[2..]) {
        *y = (q as i8) as f32 * d;
    }
}

/// Encodes `src` block by block.
///
/// # Panics
/// If `src.len()` is not a multiple of 32.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    super::quantize_blocks("Q8_0", src, BLOCK_SIZE, BLOCK_BYTES, quantize_block)
}

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 32 or `bytes.len() != out.len() / 32 * 34`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    super::dequantize_blocks(
        "Q8_0",
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
        // amax = 127 gives d = 1 exactly, so q = roundf(x): ties go away from zero.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.49;
        x[4] = -126.6;
        let b = quantize(&x);
        assert_eq!(&b[..2], &[0x00, 0x3c], "d = 1.0 as f16");
        assert_eq!(&b[2..7], &[127, 3, (-3i8) as u8, 0, (-127i8) as u8]);
        assert!(b[7..].iter().all(|&q| q == 0));
        let mut y = [0.0f32; 32];
        dequantize(&b, &mut y);
        assert_eq!(&y[..5], &[127.0, 3.0, -3.0, 0.0, -127.0]);
    }

    #[test]
    fn all_zero_block_has_zero_scale() {
        let b = quantize(&[0.0; 64]);
        assert!(b.iter().all(|&v| v == 0));
    }
}
