//! Q6_K (ggml type 14), decode only: super-blocks of 256 elements, 210 bytes each.
//!
//! ```text
//! struct block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }   // d at byte 208
//! ```
//! Two halves of 128 elements; half `h` uses `ql[64h..64h+64]`, `qh[32h..32h+32]`,
//! `scales[8h..8h+8]`. Within a half, for `l` in 0..32 (`s = l / 16`):
//! ```text
//! element 128h + l      = (ql[l]      & 15) | ((qh[l] >> 0) & 3) << 4,  scale scales[s]
//! element 128h + l + 32 = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4,  scale scales[s + 2]
//! element 128h + l + 64 = (ql[l]      >> 4) | ((qh[l] >> 4) & 3) << 4,  scale scales[s + 4]
//! element 128h + l + 96 = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4,  scale scales[s + 6]
//! x = d * scale * (q - 32)          (evaluated as (d * scale) * (q - 32) in f32)
//! ```
//! Follows llama.cpp `dequantize_row_q6_K` (ggml/src/ggml-quants.c) and gguf-py
//! `Q6_K.dequantize_blocks`.

use super::f16;

/// Elements per super-block.
pub const BLOCK_SIZE: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;

/// Decodes whole super-blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 256 or `bytes.len() != out.len() / 256 * 210`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        out.len() % BLOCK_SIZE,
        0,
        "Q6_K: element count must be a multiple of 256"
    );
    assert_eq!(
        bytes.len(),
        out.len() / BLOCK_SIZE * BLOCK_BYTES,
        "Q6_K: byte length does not match element count"
    );
    for (b, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_SIZE))
    {
        let d = f16::decode([b[208], b[209]]);
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            let y = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let s = l / 16;
                let q = [
                    (ql[l] & 15) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &q) in q.iter().enumerate() {
                    let scale = d * (sc[s + 2 * k] as i8) as f32;
                    y[l + 32 * k] = scale * (q as i32 - 32) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_computed_block() {
        let mut b = [0u8; 210];
        b[208..].copy_from_slice(&super::f16::encode(0.5));
        b[192] = 2; // scale of elements 0..16 (first half)
        b[192 + 4] = (-1i8) as u8; // scale of elements 64..80
        b[0] = 0x21; // element 0 low nibble 1, element 64 low nibble 2
        b[128] = 0b0001_0011; // element 0 high bits 3, element 64 high bits 1
        let mut y = [0.0; 256];
        super::dequantize(&b, &mut y);
        // element 0: q = 1 | 3 << 4 = 49 -> 0.5 * 2 * 17 = 17
        // element 64: q = 2 | 1 << 4 = 18 -> 0.5 * -1 * -14 = 7
        assert_eq!((y[0], y[64]), (17.0, 7.0));
        // element 1: q = 0 -> 0.5 * 2 * -32
        assert_eq!(y[1], -32.0);
    }
}
