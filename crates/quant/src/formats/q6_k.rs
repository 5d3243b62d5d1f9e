//! Q6_K (ggml type 14): super-blocks of 256 elements, 210 bytes each (6.5625 bits per weight).
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
//!
//! Encoding is llama.cpp's `quantize_row_q6_K_ref` (what `llama-quantize` writes without an
//! importance matrix), step for step in f32:
//!
//! 1. each of the 16 sub-blocks of 16 gets a scale from [`make_qx_quants`] (`nmax` 32,
//!    `rmse_type` 1: weights `x²`, 19 candidate inverse scales `-(32 + 0.1·k)/max`,
//!    `k ∈ {0, ±1 … ±9}`, keeping the one that maximises `(Σw·x·l)² / Σw·l²`);
//! 2. the scale of largest magnitude (the first one, with its sign) sets `iscale = -128/max`,
//!    `d = f16(1/iscale)`, and each sub-block scale becomes `min(127, nearest_int(iscale·s))`;
//! 3. each element is requantized against its stored scale: `l = nearest_int(x / (d·sc))`
//!    clamped to `-32..=31`, code `l + 32`; a sub-block whose `d·sc` is 0 keeps the codes of
//!    step 1;
//! 4. a super-block whose largest scale is below `1e-15` (all zero) is stored as 210 zero bytes.
//!
//! `nearest_int` is ggml's round-half-to-even trick. The products and sums are evaluated as
//! written (no fused multiply-add); a llama.cpp built with FMA contraction (`-march=native`
//! under GCC's default `-ffp-contract=fast`) may differ in rare last-bit ties.

use super::f16;
use crate::kernels::nearest_int;

/// Elements per super-block.
pub const BLOCK_SIZE: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;

/// Below this magnitude a group counts as all zero (ggml `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// llama.cpp `make_qx_quants(n, nmax, x, L, rmse_type = 1, NULL)`: writes codes `l + nmax`
/// (`l` in `-nmax..nmax`) into `codes` and returns the scale with `x ≈ scale·l`.
///
/// The first element of largest magnitude (`max`, signed) gives `iscale = -nmax/max`; each
/// candidate `-(nmax + 0.1·k)/max` (`k = ±1 … ±9`) replaces it when
/// `(Σw·x·l)² > best·Σw·l²` with `w = x²`, and the scale is `Σw·x·l / Σw·l²` of the winner.
pub fn make_qx_quants(x: &[f32], nmax: i32, codes: &mut [i8]) -> f32 {
    assert_eq!(x.len(), codes.len());
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // Σw·x·l and Σw·l² for one inverse scale, summed in element order as the C loop does.
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let write = |iscale: f32, codes: &mut [i8]| {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = (level(iscale, v) + nmax) as i8;
        }
    };
    let iscale = -nmax_f / max;
    write(iscale, codes);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax_f + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            write(iscale, codes);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Encodes one super-block of 256 values into 210 bytes (see the module docs).
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len(), BLOCK_SIZE);
    assert_eq!(out.len(), BLOCK_BYTES);
    let mut codes = [0i8; BLOCK_SIZE];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        let r = 16 * ib..16 * ib + 16;
        *s = make_qx_quants(&x[r.clone()], 32, &mut codes[r]);
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = *s;
        }
    }
    out.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d_bytes = f16::encode(1.0 / iscale);
    out[208..].copy_from_slice(&d_bytes);
    let d = f16::decode(d_bytes);
    for (ib, &s) in scales.iter().enumerate() {
        let sc = nearest_int(iscale * s).min(127) as i8;
        out[192 + ib] = sc as u8;
        let dj = d * sc as f32;
        if dj == 0.0 {
            continue;
        }
        for i in 16 * ib..16 * ib + 16 {
            codes[i] = (nearest_int(x[i] / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    // Pack: half h, l in 0..32 holds elements 128h + l + 32k (k = 0..4).
    for h in 0..2 {
        let c = &codes[128 * h..128 * h + 128];
        for l in 0..32 {
            let q = [
                c[l] as u8,
                c[l + 32] as u8,
                c[l + 64] as u8,
                c[l + 96] as u8,
            ];
            out[64 * h + l] = (q[0] & 15) | (q[2] & 15) << 4;
            out[64 * h + l + 32] = (q[1] & 15) | (q[3] & 15) << 4;
            out[128 + 32 * h + l] =
                (q[0] >> 4) | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6;
        }
    }
}

/// Encodes `src` super-block by super-block, in parallel on the current rayon pool (the scale
/// search costs ~20 passes over every group; each block's bytes depend on that block only).
///
/// # Panics
/// If `src.len()` is not a multiple of 256.
pub fn quantize(src: &[f32]) -> Vec<u8> {
    use rayon::prelude::*;
    assert_eq!(
        src.len() % BLOCK_SIZE,
        0,
        "Q6_K: element count must be a multiple of 256"
    );
    let mut out = vec![0u8; src.len() / BLOCK_SIZE * BLOCK_BYTES];
    src.par_chunks(BLOCK_SIZE * 64)
        .zip(out.par_chunks_mut(BLOCK_BYTES * 64))
        .for_each(|(x, b)| {
            for (x, b) in x
                .chunks_exact(BLOCK_SIZE)
                .zip(b.chunks_exact_mut(BLOCK_BYTES))
            {
                quantize_block(x, b);
            }
        });
    out
}

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
    use super::*;

    #[test]
    fn all_zero_block_is_all_zero_bytes() {
        assert!(quantize(&[0.0; 512]).iter().all(|&b| b == 0));
        // Below GROUP_MAX_EPS counts as zero too.
        assert!(quantize(&[1e-16; 256]).iter().all(|&b| b == 0));
    }

    /// Worked by hand from the C source. One value v = ±32 in element 0, zeros elsewhere.
    /// Group 0: max = v, iscale = -32/v, l0 = -32 (code 0), the other 15 get l = 0 (code 32),
    /// scale = Σw·x·l / Σw·l² = -v/32 (w = x² is zero except for element 0, so every candidate
    /// ties and the first stays). Groups 1..15 are all zero: codes 0, scale 0.
    /// max_scale = -v/32, iscale = -128/max_scale = 4096/v, d = f16(v/4096) (= ∓1/128 exactly),
    /// sc0 = nearest_int(iscale·max_scale) = -128; d·sc0 = -v/32; element 0 requantizes to
    /// nearest_int(v / (-v/32)) = -32 → code 0, the zeros to code 32.
    #[test]
    fn one_value_block_hand_computed_for_both_signs() {
        for v in [32.0f32, -32.0] {
            let mut x = [0.0f32; 256];
            x[0] = v;
            let b = quantize(&x);
            assert_eq!(b.len(), 210);
            let d_bits: [u8; 2] = if v > 0.0 { [0x00, 0x20] } else { [0x00, 0xA0] };
            assert_eq!(&b[208..], &d_bits, "d = {} as f16", v / 4096.0);
            assert_eq!(b[192], 0x80, "sc0 = -128");
            assert!(b[193..208].iter().all(|&s| s == 0));
            // Codes: element 0 → 0; elements 1..16 → 32 (high bits 2 in qh, low nibble 0);
            // groups 1..15 keep make_qx_quants' zero codes.
            assert!(b[..128].iter().all(|&q| q == 0), "ql");
            assert_eq!(b[128], 0);
            assert!(b[129..144].iter().all(|&q| q == 2), "qh of elements 1..16");
            assert!(b[144..192].iter().all(|&q| q == 0));
            let mut y = [0.0f32; 256];
            dequantize(&b, &mut y);
            assert_eq!(y[0], v);
            assert!(y[1..].iter().all(|&y| y == 0.0));
        }
    }

    /// A huge value next to ordinary ones: the group scales are 8-bit multiples of one
    /// super-block scale, so groups 1000× smaller than the largest get scale 0 and decode to
    /// exactly 0 (as in llama.cpp), while the huge value itself stays within one step.
    #[test]
    fn one_huge_value_zeroes_much_smaller_groups() {
        let mut x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        x[5] = -1000.0;
        let b = quantize(&x);
        let mut y = vec![0.0f32; 256];
        dequantize(&b, &mut y);
        assert!((y[5] + 1000.0).abs() <= 1000.0 / 64.0, "{}", y[5]);
        assert_eq!(
            b[192] as i8, -128,
            "the huge value's group sets the super-block scale"
        );
        // Group j's scale ≈ 1/32 against 1000/32 for group 0: iscale·s ≈ -0.13 → 0.
        assert!(b[193..208].iter().all(|&s| s == 0));
        assert!(y[16..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn round_trip_error_is_small_on_gaussian_like_data() {
        // Sum of 4 uniforms: roughly normal (σ ≈ 0.58). A group of 16 has max ≈ 1.8σ, so the
        // step is ≈ 1.8σ/32 and a uniform rounding error has RMS step/√12 ≈ 1.6 % of σ
        // (measured 1.7 %); assert < 2.5 %.
        let mut s = 0x1234_5678u32;
        let mut u = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32 - 0.5
        };
        let x: Vec<f32> = (0..4096).map(|_| u() + u() + u() + u()).collect();
        let mut y = vec![0.0f32; 4096];
        dequantize(&quantize(&x), &mut y);
        let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        let rms: f32 = x.iter().map(|a| a * a).sum();
        let rel = (err / rms).sqrt();
        assert!(rel < 0.025, "relative RMS error {rel}");
    }

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
