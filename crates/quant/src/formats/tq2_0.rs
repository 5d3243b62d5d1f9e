//! TQ2_0 (ggml type 35): ternary, blocks of 256 elements, 66 bytes each (2.0625 bits/weight).
//!
//! ```text
//! struct block_tq2_0 { u8 qs[64]; f16 d; }     // d at byte 64
//! element e = 128h + 32n + b  (h < 2, n < 4, b < 32)  is  (qs[32h + b] >> 2n) & 3   (LSB first)
//! ```
//! So byte `b` of a half holds elements `b, b+32, b+64, b+96` in bit pairs 0, 2, 4, 6.
//!
//! Encoding (llama.cpp `quantize_row_tq2_0_ref`, gguf-py `TQ2_0`): `d = max|x|` over the block,
//! `id = 1/d` (0 when `d == 0`), `t = roundf(x * id) + 1` in 0..=2 (ties away from zero), `d`
//! stored as f16. Exact for ternary input `{-m, 0, m}` up to the f16 rounding of `m`.
//! Decoding: `x = (t - 1) * d`; the unused code 3 decodes as `2d`, as in llama.cpp and gguf-py.

use super::f16;

/// Elements per block.
pub const BLOCK_SIZE: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 66;

/// Ternary codes `t = roundf(x / max|x|) + 1` of one block (shared with TQ1_0), and the scale.
pub(crate) fn ternary_codes(x: &[f32]) -> ([u8; BLOCK_SIZE], f32) {
    assert_eq!(x.len(), BLOCK_SIZE);
    let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut t = [1u8; BLOCK_SIZE];
    for (t, &v) in t.iter_mut().zip(x) {
        // |v * id| <= 1 up to one rounding; the clamp only guards against NaN/inf input.
        *t = ((v * id).round().clamp(-1.0, 1.0) as i8 + 1) as u8;
    }
    (t, d)
}

/// Encodes one block of 256 values.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), BLOCK_BYTES);
    let (t, d) = ternary_codes(x);
    for h in 0..2 {
        for b in 0..32 {
            let e = 128 * h + b;
            out[32 * h + b] = t[e] | (t[e + 32] << 2) | (t[e + 64] << 4) | (t[e + 96] << 6);
        }
    }
    out[64..].copy_from_slice(&f16::encode(d));
}

/// Decodes one 66-byte block into 256 values.
pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    assert_eq!(b.len(), BLOCK_BYTES);
    assert_eq!(y.len(), BLOCK_SIZE);
    let d = f16::decode([b[64], b[65]]);
    for h in 0..2 {
        for n in 0..4 {
            for l in 0..32 {
                let t = (b[32 * h + l] >> (2 * n)) & 3;
                y[128 * h + 32 * n + l] = (t as i32 - 1) as f32 * d;
            }
        }
    }
}

/// Encodes `src` block by block.
///
/// # Panics
/// If `src.len()` is not a multiple of 256.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    super::quantize_blocks("TQ2_0", src, BLOCK_SIZE, BLOCK_BYTES, quantize_block)
}

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 256 or `bytes.len() != out.len() / 256 * 66`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    super::dequantize_blocks(
        "TQ2_0",
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
        // d = 2 (from x[200]); id = 0.5. x = 1 -> 0.5 -> rounds away to 1 -> t = 2.
        let mut x = [0.0f32; 256];
        x[0] = -2.0; // t 0, byte 0 bits 1:0
        x[32] = 1.0; // t 2 (tie away from zero), byte 0 bits 3:2
        x[64] = -1.0; // t 0 (tie away from zero), byte 0 bits 5:4
        x[96] = 0.9; // t 1, byte 0 bits 7:6
        x[200] = 2.0; // e = 128 + 64 + 8: byte 32 + 8 bits 5:4, t 2
        let b = quantize(&x);
        assert_eq!(b[0], 0b01_00_10_00);
        assert_eq!(b[40], 0b01_10_01_01);
        assert!(b
            .iter()
            .enumerate()
            .all(|(i, &v)| matches!(i, 0 | 40 | 64 | 65) || v == 0x55));
        assert_eq!(&b[64..], &[0x00, 0x40], "d = 2.0 as f16");
        let mut y = [0.0f32; 256];
        dequantize(&b, &mut y);
        assert_eq!(
            (y[0], y[32], y[64], y[96], y[200], y[1]),
            (-2.0, 2.0, -2.0, 0.0, 2.0, 0.0)
        );
    }

    #[test]
    fn code_three_decodes_as_two_d() {
        let mut b = [0u8; 66];
        b[0] = 3;
        b[64..].copy_from_slice(&f16::encode(0.5));
        let mut y = [0.0; 256];
        dequantize(&b, &mut y);
        assert_eq!((y[0], y[32]), (1.0, -0.5));
    }
}
