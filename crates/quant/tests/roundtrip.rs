//! Round trips through every encoder on seeded random data: the error stays within what each
//! format can represent, exactly representable inputs come back exactly, and encoding a decoded
//! tensor again gives the same bytes.

use quant::{dequantize, formats, quantize, GgmlType, QUANTIZE_TYPES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const F16_EPS: f32 = 1.0 / 2048.0; // half an ulp of f16, relative
const BF16_EPS: f32 = 1.0 / 256.0; // half an ulp of bf16, relative
const F16_MIN_SUBNORMAL: f32 = 5.960_464_5e-8; // 2^-24

/// Values whose magnitude changes from block to block (1e-3 .. 1e2), with occasional outliers and
/// some all-zero and one-signed 32-element groups: what real weights and activations look like.
fn mixed(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let scale = 10f32.powf(rng.random_range(-3.0..2.0));
        let kind = rng.random_range(0..10);
        for _ in 0..32 {
            let mut x = rng.random_range(-1.0f32..1.0) * scale;
            match kind {
                0 => x = 0.0,
                1 => x = -x.abs(),
                2 => x = x.abs(),
                _ if rng.random_bool(0.02) => x *= 20.0,
                _ => {}
            }
            v.push(x);
        }
    }
    v.truncate(n);
    v
}

/// Exactly ternary values `{-m, 0, m}`, about a third of them zero.
fn ternary(rng: &mut ChaCha8Rng, n: usize, m: f32) -> Vec<f32> {
    (0..n)
        .map(|_| [-m, 0.0, m][rng.random_range(0..3)])
        .collect()
}

fn round_trip(ty: GgmlType, x: &[f32], row_len: usize) -> (Vec<u8>, Vec<f32>) {
    let bytes = quantize(ty, x, row_len).unwrap();
    let y = dequantize(ty, &bytes, row_len, x.len()).unwrap();
    (bytes, y)
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn f32_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..1000).map(|_| f32::from_bits(rng.random())).collect();
    let (_, y) = round_trip(GgmlType::F32, &x, 10);
    assert!(x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn f16_and_bf16_errors_are_within_half_an_ulp() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = mixed(&mut rng, 4096);
    let (_, y) = round_trip(GgmlType::F16, &x, 64);
    for (a, b) in x.iter().zip(&y) {
        assert!(
            (a - b).abs() <= a.abs() * F16_EPS + F16_MIN_SUBNORMAL / 2.0,
            "F16 {a} -> {b}"
        );
    }
    let (_, y) = round_trip(GgmlType::BF16, &x, 64);
    for (a, b) in x.iter().zip(&y) {
        assert!((a - b).abs() <= a.abs() * BF16_EPS, "BF16 {a} -> {b}");
    }
    // Representable values come back exactly.
    let (_, z) = round_trip(GgmlType::F16, &y, 64); // y is bf16: 8-bit mantissa fits f16 if in range
    for (a, b) in y.iter().zip(&z) {
        if a.abs() >= 6.2e-5 && a.abs() <= 65504.0 {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn q8_0_error_is_half_a_step_plus_scale_rounding() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = mixed(&mut rng, 32 * 200);
    let (_, y) = round_trip(GgmlType::Q8_0, &x, 320);
    for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
        let a = amax(xb);
        // rounding: d/2 = amax/254; the f16 scale: |q| <= 127 times half an f16 ulp of d.
        let bound = a / 254.0 + a * F16_EPS + 127.0 * F16_MIN_SUBNORMAL / 2.0 + a * 1e-6;
        for (p, q) in xb.iter().zip(yb) {
            assert!((p - q).abs() <= bound, "{p} -> {q} (amax {a})");
        }
    }
    // Integers times a power of two, with 127 present, are exact.
    let x: Vec<f32> = (0..64)
        .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.125)
        .collect();
    assert_eq!(round_trip(GgmlType::Q8_0, &x, 32).1, x);
}

#[test]
fn q4_0_error_is_half_a_step_except_at_the_clamp() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = mixed(&mut rng, 32 * 200);
    let (_, y) = round_trip(GgmlType::Q4_0, &x, 64);
    for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
        let a = amax(xb);
        let step = a / 8.0;
        let scale_err = 8.0 * (step * F16_EPS + F16_MIN_SUBNORMAL / 2.0) + a * 1e-6;
        for (p, q) in xb.iter().zip(yb) {
            // Values near the opposite extreme of the max clamp to code 15, a full step off.
            let bound = if p.abs() > a - step / 2.0 {
                step
            } else {
                step / 2.0
            };
            assert!((p - q).abs() <= bound + scale_err, "{p} -> {q} (amax {a})");
        }
    }
    let x: Vec<f32> = (0..32)
        .map(|i| ((i * 5 % 16) as f32 - 8.0) * 0.25)
        .collect();
    assert_eq!(
        round_trip(GgmlType::Q4_0, &x, 32).1,
        x,
        "(q - 8) * d with max = -8d is exact"
    );
}

#[test]
fn ternary_formats_error_is_half_a_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = mixed(&mut rng, 256 * 40);
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let (_, y) = round_trip(ty, &x, 512);
        for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
            let d = amax(xb);
            let bound = d / 2.0 + d * F16_EPS + F16_MIN_SUBNORMAL / 2.0 + d * 1e-6;
            for (p, q) in xb.iter().zip(yb) {
                assert!((p - q).abs() <= bound, "{ty}: {p} -> {q} (d {d})");
            }
        }
    }
    let (_, y) = round_trip(GgmlType::I2_S, &x, 512);
    let s = amax(&x);
    for (p, q) in x.iter().zip(&y) {
        assert!(
            (p - q).abs() <= s / 2.0 * (1.0 + 1e-6),
            "I2_S: {p} -> {q} (scale {s})"
        );
    }
}

#[test]
fn ternary_input_round_trips_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // m exactly representable in f16: every ternary format is exact.
    let m = half::f16::from_f32(0.037_109_375).to_f32();
    assert_eq!(m, 0.037_109_375);
    let mut x = ternary(&mut rng, 256 * 12, m);
    x[256..512].fill(0.0); // an all-zero block
    for v in &mut x[512..768] {
        *v = -v.abs(); // a block with no positive value
    }
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S] {
        let (_, y) = round_trip(ty, &x, 768);
        assert_eq!(y, x, "{ty}");
    }
    // Any m: I2_S (f32 scale) is exact; TQ1_0/TQ2_0 are exact up to the f16 rounding of m.
    let m = 0.123_456_79f32;
    let x = ternary(&mut rng, 256 * 4, m);
    assert_eq!(round_trip(GgmlType::I2_S, &x, 256).1, x);
    let m16 = half::f16::from_f32(m).to_f32();
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let (_, y) = round_trip(ty, &x, 256);
        for (p, q) in x.iter().zip(&y) {
            assert_eq!(
                *q,
                p.signum() * m16 * (*p != 0.0) as i32 as f32,
                "{ty}: {p} -> {q}"
            );
        }
    }
}

#[test]
fn ternarized_weights_survive_every_ternary_format() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut w: Vec<f32> = (0..256 * 10)
        .map(|_| rng.random_range(-0.1f32..0.1))
        .collect();
    let m = quant::ternarize_absmean(&mut w);
    assert!(quant::is_ternary(&w));
    assert!(m > 0.04 && m < 0.06, "mean |U(-0.1, 0.1)| is 0.05, got {m}");
    let (bytes, y) = round_trip(GgmlType::I2_S, &w, 256);
    assert_eq!(y, w);
    assert_eq!(formats::i2_s::scale(&bytes), m);
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let (_, y) = round_trip(ty, &w, 256);
        let m16 = half::f16::from_f32(m).to_f32();
        assert!(y
            .iter()
            .zip(&w)
            .all(|(q, p)| *q == p.signum() * m16 || (*q == 0.0 && *p == 0.0)));
    }
}

#[test]
fn encoding_decoded_data_again_gives_the_same_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x = mixed(&mut rng, 256 * 8);
    for &ty in QUANTIZE_TYPES {
        let (bytes, y) = round_trip(ty, &x, 256);
        let mut again = quantize(ty, &y, 256).unwrap();
        if ty == GgmlType::Q6_K {
            // Not a fixed point: the scale search (make_qx_quants) weighs each element by x²
            // and the 16 group scales are re-rounded to 8 bits of a new super-block scale, so
            // decoded data can pick slightly different scales. It must stay as close to the
            // decoded values as a first encoding is to its input (< 2.5 % relative RMS).
            let mut z = vec![0.0f32; y.len()];
            formats::q6_k::dequantize(&again, &mut z);
            let err: f64 = y
                .iter()
                .zip(&z)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let rms: f64 = y.iter().map(|a| f64::from(*a).powi(2)).sum();
            assert!((err / rms).sqrt() < 0.025, "{ty}: {}", (err / rms).sqrt());
            continue;
        }
        if ty == GgmlType::Q4_0 {
            // An all-zero block stores d = 0.0 / -8 = -0.0 and decodes to -0.0s, whose max is
            // -0.0, so re-encoding gives d = +0.0: the one allowed difference (the sign of zero).
            for (b, a) in again.chunks_mut(18).zip(bytes.chunks(18)) {
                if a[..2] == [0x00, 0x80] && b[..2] == [0x00, 0x00] {
                    b[1] = 0x80;
                }
            }
        }
        assert!(
            again == bytes,
            "{ty}: re-encoding the decoded tensor changed its bytes"
        );
    }
}
