//! Q5_1 (ggml type 7), decode only: blocks of 32 elements, 24 bytes each.
//!
//! ```text
//! struct block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }
//! low nibble:  element j (< 16) = qs[j] & 15, element j + 16 = qs[j] >> 4
//! fifth bit:   element j = bit j of the little-endian u32 qh
//! ```
//! Decoding (llama.cpp `dequantize_row_q5_1`, gguf-py `Q5_1.dequantize_blocks`): `x = q * d + m`.

use super::f16;

/// Elements per block.
pub const BLOCK_SIZE: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 24;

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 32 or `bytes.len() != out.len() / 32 * 24`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        out.len() % BLOCK_SIZE,
        0,
        "Q5_1: element count must be a multiple of 32"
    );
    assert_eq!(
        bytes.len(),
        out.len() / BLOCK_SIZE * BLOCK_BYTES,
        "Q5_1: byte length does not match element count"
    );
    for (b, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_SIZE))
    {
        let d = f16::decode([b[0], b[1]]);
        let m = f16::decode([b[2], b[3]]);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..BLOCK_SIZE / 2 {
            let q = b[8 + j];
            let lo = (q & 15) as u32 | (((qh >> j) & 1) << 4);
            let hi = (q >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
            y[j] = lo as f32 * d + m;
            y[j + 16] = hi as f32 * d + m;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&super::f16::encode(0.25));
        b[2..4].copy_from_slice(&super::f16::encode(1.0));
        b[6] = 0b0000_0001; // fifth bit of element 16
        b[8] = 0x12; // element 0: 2 -> 1.5; element 16: 1 | 16 = 17 -> 5.25
        let mut y = [0.0; 32];
        super::dequantize(&b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (1.5, 5.25, 1.0));
    }
}
