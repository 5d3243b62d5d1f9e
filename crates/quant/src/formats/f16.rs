//! F16 (ggml type 1): IEEE-754 binary16, little-endian, 2 bytes per element.
//!
//! Encoding rounds to nearest, ties to even (`half::f16::from_f32`, the same result as F16C
//! `vcvtps2ph` and numpy's `astype(float16)`); values beyond ±65504 (after rounding) become ±inf.
//! A NaN stays a NaN with its quiet bit set (numpy keeps a signalling NaN signalling; no model
//! weight is a signalling NaN). Decoding is exact.
//!
//! The helpers [`encode`] and [`decode`] are the f16 scale fields of the block formats.

use half::f16;

/// Bytes per element.
pub const TYPE_SIZE: usize = 2;

/// One value to its little-endian f16 bytes, rounding to nearest even.
pub fn encode(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// Little-endian f16 bytes to the (exactly representable) f32 value.
pub fn decode(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// Encodes `src` as little-endian f16.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    src.iter().flat_map(|&x| encode(x)).collect()
}

/// Decodes little-endian f16 into `out`.
///
/// # Panics
/// If `bytes.len() != 2 * out.len()`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        bytes.len(),
        TYPE_SIZE * out.len(),
        "F16: byte length does not match element count"
    );
    for (y, b) in out.iter_mut().zip(bytes.chunks_exact(TYPE_SIZE)) {
        *y = decode([b[0], b[1]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(x: f32) -> u16 {
        u16::from_le_bytes(encode(x))
    }

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1.0 (even mantissa) and 1 + 2^-10: ties go to 1.0.
        assert_eq!(bits(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3*2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even): goes up.
        assert_eq!(bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Just above the tie rounds up.
        assert_eq!(
            bits(f32::from_bits((1.0 + 2f32.powi(-11)).to_bits() + 1)),
            0x3c01
        );
        assert_eq!(bits(65504.0), 0x7bff);
        assert_eq!(bits(65519.0), 0x7bff);
        assert_eq!(bits(65520.0), 0x7c00, "65520 rounds to +inf");
        assert_eq!(bits(-0.0), 0x8000);
        assert_eq!(bits(2f32.powi(-24)), 0x0001, "smallest subnormal");
        assert_eq!(
            bits(2f32.powi(-25)),
            0x0000,
            "half of it ties to even (zero)"
        );
        assert_eq!(bits(f32::NAN), 0x7e00);
    }

    #[test]
    fn round_trip_error_is_within_half_an_ulp() {
        let src: Vec<f32> = (0..2000)
            .map(|i| ((i as f32) * 0.37).sin() * 100.0)
            .collect();
        let mut out = vec![0.0; src.len()];
        dequantize(&quantize(&src), &mut out);
        for (&x, &y) in src.iter().zip(&out) {
            assert!(
                (x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                "{x} -> {y}"
            );
        }
    }
}
