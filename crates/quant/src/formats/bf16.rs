//! BF16 (ggml type 30): the upper 16 bits of an IEEE-754 binary32, little-endian, 2 bytes per
//! element.
//!
//! Encoding follows ggml's `ggml_compute_fp32_to_bf16` (ggml/src/ggml-impl.h) and gguf-py's
//! `BF16.quantize_blocks`: a NaN keeps its top 16 bits with the quiet bit (0x0040) forced on;
//! anything else rounds to nearest, ties to even (`bits + 0x7fff + ((bits >> 16) & 1)) >> 16`),
//! so large finite values may round to ±inf. `half::bf16::from_f32` implements exactly this.
//! Decoding (`bits << 16`) is exact.

use half::bf16;

/// Bytes per element.
pub const TYPE_SIZE: usize = 2;

/// One value to its little-endian bf16 bytes.
pub fn encode(x: f32) -> [u8; 2] {
    bf16::from_f32(x).to_le_bytes()
}

/// Little-endian bf16 bytes to the (exactly representable) f32 value.
pub fn decode(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// Encodes `src` as little-endian bf16.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    src.iter().flat_map(|&x| encode(x)).collect()
}

/// Decodes little-endian bf16 into `out`.
///
/// # Panics
/// If `bytes.len() != 2 * out.len()`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        bytes.len(),
        TYPE_SIZE * out.len(),
        "BF16: byte length does not match element count"
    );
    for (y, b) in out.iter_mut().zip(bytes.chunks_exact(TYPE_SIZE)) {
        *y = decode([b[0], b[1]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's formula, written out, as a second implementation to compare `half` against.
    fn ggml_fp32_to_bf16(x: f32) -> u16 {
        let u = x.to_bits();
        if u & 0x7fff_ffff > 0x7f80_0000 {
            return ((u >> 16) | 64) as u16;
        }
        ((u as u64 + 0x7fff + ((u as u64 >> 16) & 1)) >> 16) as u16
    }

    fn bits(x: f32) -> u16 {
        u16::from_le_bytes(encode(x))
    }

    #[test]
    fn rounding_and_nan_follow_ggml() {
        assert_eq!(bits(1.0), 0x3f80);
        assert_eq!(
            bits(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "tie to even (down)"
        );
        assert_eq!(
            bits(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "tie to even (up)"
        );
        assert_eq!(bits(f32::from_bits(0x3f80_8001)), 0x3f81, "above the tie");
        assert_eq!(bits(f32::MAX), 0x7f80, "rounds to +inf");
        assert_eq!(
            bits(f32::from_bits(0x7f80_0001)),
            0x7fc0,
            "signalling NaN is quieted"
        );
        assert_eq!(
            bits(f32::from_bits(0xffa1_2345)),
            0xffe1,
            "NaN keeps sign and top payload"
        );
        assert_eq!(bits(f32::NEG_INFINITY), 0xff80);
    }

    #[test]
    fn half_matches_the_ggml_formula_on_many_bit_patterns() {
        // A stride through all 2^32 patterns (odd stride so low bits vary too), plus every
        // pattern around the rounding point of one mantissa.
        let mut u: u32 = 0;
        for _ in 0..2_000_000 {
            let x = f32::from_bits(u);
            assert_eq!(bits(x), ggml_fp32_to_bf16(x), "bits {u:#010x}");
            u = u.wrapping_add(2_147_483_647 / 1_000_000 * 2 + 1);
        }
        for low in 0x7ff0..=0x8010u32 {
            for hi in [0x3f80_0000u32, 0x3f81_0000, 0xc2c7_0000, 0x0001_0000] {
                let x = f32::from_bits(hi | low);
                assert_eq!(bits(x), ggml_fp32_to_bf16(x), "bits {:#010x}", hi | low);
            }
        }
    }

    #[test]
    fn decode_is_exact() {
        for b in [0x3f80u16, 0x8000, 0x7f80, 0x0001, 0xc2c7] {
            let x = decode(b.to_le_bytes());
            assert_eq!(x.to_bits(), (b as u32) << 16);
            assert_eq!(bits(x), b);
        }
    }
}
