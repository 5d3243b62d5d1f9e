//! Q4_1 (ggml type 3), decode only: blocks of 32 elements, 20 bytes each.
//!
//! ```text
//! struct block_q4_1 { f16 d; f16 m; u8 qs[16]; }   // element j (< 16) = qs[j] & 15, element j + 16 = qs[j] >> 4
//! ```
//! Decoding (llama.cpp `dequantize_row_q4_1`, gguf-py `Q4_1.dequantize_blocks`): `x = q * d + m`.

use super::f16;

/// Elements per block.
pub const BLOCK_SIZE: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 20;

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 32 or `bytes.len() != out.len() / 32 * 20`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        out.len() % BLOCK_SIZE,
        0,
        "Q4_1: element count must be a multiple of 32"
    );
    assert_eq!(
        bytes.len(),
        out.len() / BLOCK_SIZE * BLOCK_BYTES,
        "Q4_1: byte length does not match element count"
    );
    for (b, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_SIZE))
    {
        let d = f16::decode([b[0], b[1]]);
        let m = f16::decode([b[2], b[3]]);
        for j in 0..BLOCK_SIZE / 2 {
            let q = b[4 + j];
            y[j] = (q & 15) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; 20];
        b[..2].copy_from_slice(&super::f16::encode(0.5));
        b[2..4].copy_from_slice(&super::f16::encode(-1.0));
        b[4] = 0x3f; // element 0: 15 -> 6.5; element 16: 3 -> 0.5
        let mut y = [0.0; 32];
        super::dequantize(&b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (6.5, 0.5, -1.0));
    }
}
