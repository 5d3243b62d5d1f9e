//! Q5_0 (ggml type 6), decode only: blocks of 32 elements, 22 bytes each.
//!
//! ```text
//! struct block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }
//! low nibble:  element j (< 16) = qs[j] & 15, element j + 16 = qs[j] >> 4
//! fifth bit:   element j = bit j of the little-endian u32 qh
//! ```
//! Decoding (llama.cpp `dequantize_row_q5_0`, gguf-py `Q5_0.dequantize_blocks`):
//! `x = (q - 16) * d`.

use super::f16;

/// Elements per block.
pub const BLOCK_SIZE: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 22;

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 32 or `bytes.len() != out.len() / 32 * 22`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        out.len() % BLOCK_SIZE,
        0,
        "Q5_0: element count must be a multiple of 32"
    );
    assert_eq!(
        bytes.len(),
        out.len() / BLOCK_SIZE * BLOCK_BYTES,
        "Q5_0: byte length does not match element count"
    );
    for (b, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_SIZE))
    {
        let d = f16::decode([b[0], b[1]]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..BLOCK_SIZE / 2 {
            let q = b[6 + j];
            let lo = (q & 15) as u32 | (((qh >> j) & 1) << 4);
            let hi = (q >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
            y[j] = (lo as i32 - 16) as f32 * d;
            y[j + 16] = (hi as i32 - 16) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; 22];
        b[..2].copy_from_slice(&super::f16::encode(2.0));
        b[2] = 0b0000_0001; // fifth bit of element 0
        b[5] = 0b1000_0000; // fifth bit of element 31
        b[6] = 0xf1; // element 0: 1 | 16 = 17 -> 2.0; element 16: 15 -> -2.0
        b[21] = 0xf0; // element 15: 0 -> -32.0; element 31: 15 | 16 = 31 -> 30.0
        let mut y = [0.0; 32];
        super::dequantize(&b, &mut y);
        assert_eq!(
            (y[0], y[16], y[15], y[31], y[1]),
            (2.0, -2.0, -32.0, 30.0, -32.0)
        );
    }
}
