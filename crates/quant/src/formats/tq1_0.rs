//! TQ1_0 (ggml type 34): ternary, blocks of 256 elements, 54 bytes each (1.6875 bits/weight),
//! five trits per byte in base-3 fixed point.
//!
//! ```text
//! struct block_tq1_0 { u8 qs[48]; u8 qh[4]; f16 d; }     // d at byte 52
//! qs[m]      (m < 32): trits of elements        32n + m   for n = 0..5   (elements   0..160)
//! qs[32 + m] (m < 16): trits of elements  160 + 16n + m   for n = 0..5   (elements 160..240)
//! qh[j]      (j < 4) : trits of elements  240 +  4n + j   for n = 0..4   (elements 240..256)
//! ```
//! Encoding: `t` as in TQ2_0 (`roundf(x / max|x|) + 1`). A byte's value `q = Σ t_n·3^(4-n)`
//! (trit `n = 0` most significant; the 4-trit `qh` bytes use `Σ t_n·3^(4-n)` over n < 4, i.e. a
//! fifth trit of 0), stored as `ceil(q·256/243) = (q·256 + 242) / 243`.
//! Decoding trit `n` of byte `b`: `v = b·3^n mod 256`, `t = (v·3) >> 8` — multiplying by `3^n`
//! shifts trit `n` to the top of the fixed-point fraction, and `·3 >> 8` reads the top trit.
//! Then `x = (t - 1)·d`.
//!
//! Follows llama.cpp `quantize_row_tq1_0_ref` / `dequantize_row_tq1_0` (ggml/src/ggml-quants.c)
//! and gguf-py `TQ1_0`.

use super::f16;
use super::tq2_0::ternary_codes;

/// Elements per block.
pub const BLOCK_SIZE: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 54;

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Packs up to five trits (most significant first, each 0..=2) into one byte; fewer than five
/// trits are padded with zero trits at the low end (the `qh` bytes hold four).
///
/// # Panics
/// If more than five trits are given or one is above 2.
pub fn encode_trits(trits: &[u8]) -> u8 {
    assert!(
        trits.len() <= 5 && trits.iter().all(|&t| t <= 2),
        "invalid trits {trits:?}"
    );
    let mut q: u16 = 0;
    for n in 0..5 {
        q = q * 3 + trits.get(n).copied().unwrap_or(0) as u16;
    }
    // ceil(q * 256 / 243) = (q * 256 + 242) / 243, with q <= 242 so the byte fits.
    (q * 256).div_ceil(243) as u8
}

/// Trit `n` (0 = most significant, `n < 5`) of an encoded byte, in 0..=2.
pub fn decode_trit(byte: u8, n: usize) -> u8 {
    let v = byte.wrapping_mul(POW3[n]);
    ((v as u16 * 3) >> 8) as u8
}

/// Encodes one block of 256 values.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), BLOCK_BYTES);
    let (t, d) = ternary_codes(x);
    for m in 0..32 {
        out[m] = encode_trits(&[t[m], t[32 + m], t[64 + m], t[96 + m], t[128 + m]]);
    }
    for m in 0..16 {
        let e = 160 + m;
        out[32 + m] = encode_trits(&[t[e], t[e + 16], t[e + 32], t[e + 48], t[e + 64]]);
    }
    for j in 0..4 {
        let e = 240 + j;
        out[48 + j] = encode_trits(&[t[e], t[e + 4], t[e + 8], t[e + 12]]);
    }
    out[52..].copy_from_slice(&f16::encode(d));
}

/// Decodes one 54-byte block into 256 values.
pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    assert_eq!(b.len(), BLOCK_BYTES);
    assert_eq!(y.len(), BLOCK_SIZE);
    let d = f16::decode([b[52], b[53]]);
    let value = |byte: u8, n: usize| (decode_trit(byte, n) as i32 - 1) as f32 * d;
    for n in 0..5 {
        for m in 0..32 {
            y[32 * n + m] = value(b[m], n);
        }
    }
    for n in 0..5 {
        for m in 0..16 {
            y[160 + 16 * n + m] = value(b[32 + m], n);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            y[240 + 4 * n + j] = value(b[48 + j], n);
        }
    }
}

/// Encodes `src` block by block.
///
/// # Panics
/// If `src.len()` is not a multiple of 256.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    super::quantize_blocks("TQ1_0", src, BLOCK_SIZE, BLOCK_BYTES, quantize_block)
}

/// Decodes whole blocks into `out`.
///
/// # Panics
/// If `out.len()` is not a multiple of 256 or `bytes.len() != out.len() / 256 * 54`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    super::dequantize_blocks(
        "TQ1_0",
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

    /// The base-3 digits of `q` (< 243), most significant first.
    fn digits(q: u16) -> [u8; 5] {
        let mut d = [0u8; 5];
        let mut r = q;
        for n in (0..5).rev() {
            d[n] = (r % 3) as u8;
            r /= 3;
        }
        d
    }

    #[test]
    fn every_valid_byte_decodes_to_its_base3_digits() {
        let mut seen = [false; 256];
        for q in 0..243u16 {
            let trits = digits(q);
            let byte = encode_trits(&trits);
            assert_eq!(byte as u16, (q * 256).div_ceil(243), "q = {q}");
            assert!(!seen[byte as usize], "two values encode to byte {byte}");
            seen[byte as usize] = true;
            for (n, &t) in trits.iter().enumerate() {
                assert_eq!(decode_trit(byte, n), t, "q = {q} byte = {byte} trit {n}");
            }
        }
        // The four-trit qh bytes: q = (Σ t_n 3^(3-n)) * 3, fifth trit 0.
        for q4 in 0..81u16 {
            let trits = digits(q4 * 3);
            assert_eq!(trits[4], 0);
            let byte = encode_trits(&trits[..4]);
            for (n, &t) in trits[..4].iter().enumerate() {
                assert_eq!(decode_trit(byte, n), t, "q4 = {q4} trit {n}");
            }
        }
    }

    #[test]
    fn hand_computed_bytes() {
        assert_eq!(encode_trits(&[0, 0, 0, 0, 0]), 0);
        assert_eq!(encode_trits(&[1, 1, 1, 1, 1]), 128); // q = 121: (121*256 + 242) / 243 = 128
        assert_eq!(encode_trits(&[2, 2, 2, 2, 2]), 255); // q = 242
        assert_eq!(encode_trits(&[2, 0, 1, 0, 0]), 181); // q = 171: (43776 + 242) / 243 = 181
    }

    #[test]
    fn element_order_matches_the_layout() {
        // A different trit pattern in every position, checked against the documented order.
        let t = |e: usize| ((e * 7 + e / 5) % 3) as u8;
        let x: Vec<f32> = (0..256).map(|e| t(e) as f32 - 1.0).collect();
        let b = quantize(&x);
        assert_eq!(&b[52..], &[0x00, 0x3c], "d = 1");
        for (m, &byte) in b[..32].iter().enumerate() {
            let want: Vec<u8> = (0..5).map(|n| t(32 * n + m)).collect();
            let got: Vec<u8> = (0..5).map(|n| decode_trit(byte, n)).collect();
            assert_eq!(got, want, "qs[{m}]");
        }
        for m in 0..16 {
            let want: Vec<u8> = (0..5).map(|n| t(160 + 16 * n + m)).collect();
            let got: Vec<u8> = (0..5).map(|n| decode_trit(b[32 + m], n)).collect();
            assert_eq!(got, want, "qs[{}]", 32 + m);
        }
        for j in 0..4 {
            let want: Vec<u8> = (0..4).map(|n| t(240 + 4 * n + j)).collect();
            let got: Vec<u8> = (0..4).map(|n| decode_trit(b[48 + j], n)).collect();
            assert_eq!(got, want, "qh[{j}]");
        }
        let mut y = vec![0.0; 256];
        dequantize(&b, &mut y);
        assert_eq!(y, x);
    }
}
