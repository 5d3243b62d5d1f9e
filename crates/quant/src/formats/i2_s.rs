//! I2_S (ggml type 36, BitNet's llama.cpp fork only): ternary, 2 bits per weight, one f32 scale
//! per *tensor*. A tensor of `n` elements takes `n / 4 + 32` bytes.
//!
//! ```text
//! codes:  0 = -1, 1 = 0, 2 = +1   (3 is never written; decoded as 0)
//! for block k < n/128, lane g < 32, group j < 4:
//!     element 128k + 32j + g   is   (bytes[32k + g] >> (6 - 2j)) & 3        (MSB first)
//! bytes[n/4 .. n/4 + 4]:  the scale, f32 little-endian;  bytes[n/4 + 4 .. n/4 + 32]: zero
//! x = (code - 1) * scale
//! ```
//! So byte `g` of a 128-block holds elements `g, g+32, g+64, g+96` in bits 7:6, 5:4, 3:2, 1:0 —
//! TQ2_0's interleave with the bit pairs in the opposite order, and no per-block scale.
//! This is the x86 "128/32" layout of microsoft/BitNet `quantize_i2_s` (src/ggml-bitnet-mad.cpp),
//! which every official GGUF uses; the ARM-only 64/16 layout is never written or read here.
//!
//! Encoding: `scale = max|x|` over the whole tensor; `code = clamp(round_half_even(x / scale),
//! -1, 1) + 1` (all codes 1 and scale 0 for an all-zero tensor). For exactly ternary input
//! `{-m, 0, m}` this is what bitnet.cpp writes (it uses `|x| < 1e-6 → 0, else sign(x)`), so the
//! round trip is exact (the scale is f32). For other input it is nearest-level rounding rather
//! than bitnet.cpp's sign, which only makes sense for ternary weights anyway. The 28 padding bytes
//! are written as zero (bitnet.cpp leaves whatever its buffer held; the Python writer zeroes them);
//! readers ignore them.

/// Elements per interleave block (and the multiple the row length must be).
pub const BLOCK_SIZE: usize = 128;
/// Bytes per interleave block.
pub const BLOCK_BYTES: usize = 32;
/// Bytes after the packed codes: the f32 scale and 28 bytes of padding.
pub const TAIL_BYTES: usize = 32;

/// The byte size of an I2_S tensor of `n` elements: `n / 4 + 32`.
pub fn nbytes(n: usize) -> usize {
    n / 4 + TAIL_BYTES
}

/// The tensor scale stored at byte `bytes.len() - 32`.
///
/// # Panics
/// If `bytes` is shorter than 32 bytes.
pub fn scale(bytes: &[u8]) -> f32 {
    let at = bytes.len() - TAIL_BYTES;
    f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Encodes a whole tensor (flattened row-major).
///
/// # Panics
/// If `src.len()` is not a multiple of 128.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    assert_eq!(
        src.len() % BLOCK_SIZE,
        0,
        "I2_S: element count must be a multiple of 128"
    );
    let n = src.len();
    let scale = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let code = |v: f32| -> u8 {
        // An all-zero tensor (scale 0) gets code 1 everywhere; the clamp guards NaN/inf input.
        let r = if scale != 0.0 { v / scale } else { 0.0 };
        (r.round_ties_even().clamp(-1.0, 1.0) as i8 + 1) as u8
    };
    let mut out = vec![0u8; nbytes(n)];
    for (x, b) in src
        .chunks_exact(BLOCK_SIZE)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
    {
        for g in 0..32 {
            b[g] = (code(x[g]) << 6)
                | (code(x[32 + g]) << 4)
                | (code(x[64 + g]) << 2)
                | code(x[96 + g]);
        }
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// Decodes a whole tensor into `out` (`out.len()` elements).
///
/// # Panics
/// If `out.len()` is not a multiple of 128 or `bytes.len() != out.len() / 4 + 32`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        out.len() % BLOCK_SIZE,
        0,
        "I2_S: element count must be a multiple of 128"
    );
    assert_eq!(
        bytes.len(),
        nbytes(out.len()),
        "I2_S: byte length does not match element count"
    );
    let s = scale(bytes);
    // code 0, 1, 2, 3 -> -s, 0, +s, 0
    let lut = [-s, 0.0, s, 0.0];
    for (b, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_SIZE))
    {
        for g in 0..32 {
            for j in 0..4 {
                y[32 * j + g] = lut[((b[g] >> (6 - 2 * j)) & 3) as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of 128 elements, worked out by hand from the layout above (bitnet.cpp
    /// `quantize_i2_s`: byte g = code(e_g) << 6 | code(e_32+g) << 4 | code(e_64+g) << 2 | code(e_96+g)).
    #[test]
    fn hand_computed_bytes_one_row() {
        let s = 0.75f32;
        let mut x = [0.0f32; 128];
        x[0] = s; //         byte 0 bits 7:6 = 2
        x[32] = -s; //       byte 0 bits 5:4 = 0
        x[64] = 0.0; //      byte 0 bits 3:2 = 1
        x[96] = s; //        byte 0 bits 1:0 = 2      -> byte 0 = 0b10_00_01_10 = 0x86
        x[1] = -s; //        byte 1 bits 7:6 = 0
        x[33] = -s; //       byte 1 bits 5:4 = 0
        x[65] = -s; //       byte 1 bits 3:2 = 0
        x[97] = -s; //       byte 1 bits 1:0 = 0      -> byte 1 = 0x00
        x[31] = s; //        byte 31: 2,1,1,1         -> 0b10_01_01_01 = 0x95
        x[127] = -s; //      byte 31 bits 1:0 = 0     -> 0x94
        let b = quantize(&x);
        let mut want = vec![0x55u8; 32]; // all-zero elements: code 1 in every pair
        want[0] = 0x86;
        want[1] = 0x00;
        want[31] = 0x94;
        want.extend_from_slice(&[0x00, 0x00, 0x40, 0x3f]); // 0.75f32 = 0x3f400000, LE
        want.extend_from_slice(&[0u8; 28]);
        assert_eq!(b, want);
        let mut y = [1.0f32; 128];
        dequantize(&b, &mut y);
        assert_eq!(y, x);
    }

    /// Two rows of 128: the scale is one per tensor (the max over both rows), and the second row
    /// starts at byte 32.
    #[test]
    fn hand_computed_bytes_two_rows() {
        let mut x = [0.0f32; 256];
        x[5] = 0.25; // row 0: byte 5 bits 7:6 = 2 (0.25 / 0.25 = 1)
        x[128 + 32 + 7] = -0.25; // row 1: element 39 of its block -> byte 32 + 7, bits 5:4 = 0
        x[128 + 96 + 31] = 0.25; // row 1: byte 32 + 31, bits 1:0 = 2
        let b = quantize(&x);
        assert_eq!(b.len(), 256 / 4 + 32);
        let mut want = vec![0x55u8; 64];
        want[5] = 0b10_01_01_01;
        want[39] = 0b01_00_01_01;
        want[63] = 0b01_01_01_10;
        want.extend_from_slice(&0.25f32.to_le_bytes());
        want.extend_from_slice(&[0u8; 28]);
        assert_eq!(b, want);
        assert_eq!(&b[64..68], &[0x00, 0x00, 0x80, 0x3e]);
    }

    #[test]
    fn all_zero_tensor_has_scale_zero_and_code_one() {
        let b = quantize(&[0.0; 256]);
        assert!(b[..64].iter().all(|&v| v == 0x55));
        assert!(b[64..].iter().all(|&v| v == 0));
        let mut y = [1.0f32; 256];
        dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn rounding_is_half_to_even_and_code_three_reads_as_zero() {
        let mut x = [0.0f32; 128];
        x[0] = 2.0; // scale 2
        x[1] = 1.0; // 0.5 -> 0 (half to even)
        x[2] = -1.0; // -0.5 -> -0 -> code 1
        x[3] = 1.5; // 0.75 -> 1 -> code 2
        let b = quantize(&x);
        assert_eq!(b[0] >> 6, 2);
        assert_eq!(b[1] >> 6, 1);
        assert_eq!(b[2] >> 6, 1);
        assert_eq!(b[3] >> 6, 2);
        let mut bytes = b.clone();
        bytes[0] = 0xff; // every code 3
        let mut y = [9.0f32; 128];
        dequantize(&bytes, &mut y);
        assert_eq!((y[0], y[32], y[64], y[96]), (0.0, 0.0, 0.0, 0.0));
    }
}
