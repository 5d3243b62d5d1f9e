//! F32 (ggml type 0): IEEE-754 binary32, little-endian, 4 bytes per element. Exact, bit for bit
//! (NaN payloads included).

/// Bytes per element.
pub const TYPE_SIZE: usize = 4;

/// Encodes `src` as little-endian f32.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    src.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes little-endian f32 into `out`.
///
/// # Panics
/// If `bytes.len() != 4 * out.len()`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        bytes.len(),
        TYPE_SIZE * out.len(),
        "F32: byte length does not match element count"
    );
    for (y, b) in out.iter_mut().zip(bytes.chunks_exact(TYPE_SIZE)) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bit_exact_including_nan_payloads() {
        let src = [
            0.0,
            -0.0,
            1.5,
            f32::MIN_POSITIVE / 8.0,
            f32::INFINITY,
            f32::from_bits(0x7fa0_0001),
        ];
        let bytes = quantize(&src);
        assert_eq!(&bytes[8..12], &1.5f32.to_le_bytes());
        let mut out = [0.0; 6];
        dequantize(&bytes, &mut out);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&src));
    }
}
