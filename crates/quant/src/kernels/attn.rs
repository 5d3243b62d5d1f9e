//! The two inner loops of attention over float keys and values, for the model's attention:
//! the scores of a group of query heads against one key/value head's visible positions, and
//! the softmax-weighted mix of the values.
//!
//! Each is one portable definition, compiled a second time with AVX2+FMA (or AVX-512) enabled
//! and chosen at run time, so that a block-diffusion step's attention (every block row against
//! the whole prefix) runs on wide vectors although the workspace is built for the baseline
//! x86-64. The arithmetic is the same on every path (eight partial sums per dot product, in the
//! same order; products and sums rounded separately, never fused), so results are bit-identical
//! whatever the CPU.

use super::{selected_level, SimdLevel};

/// Lanes of the partial sums of a dot product.
const LANES: usize = 8;

/// `out[h·n + p] = scale · (q[h·d..(h + 1)·d] · keys[p])` for the `q.len() / d` query heads of
/// one group, with `n = keys.len()` and `d` the keys' length.
///
/// # Panics
/// If a key's length differs from `d`, `q.len()` is not a multiple of it, or
/// `out.len() != heads · n`.
pub fn attn_scores(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    let Some(d) = keys.first().map(|k| k.len()) else {
        return;
    };
    assert!(
        d > 0 && q.len().is_multiple_of(d) && keys.iter().all(|k| k.len() == d),
        "attn_scores: every key must have the head dimension"
    );
    assert_eq!(
        out.len(),
        q.len() / d * keys.len(),
        "attn_scores: out length"
    );
    match selected_level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is only selected when the CPU has its features.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { scores_avx512(q, keys, scale, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { scores_avx2(q, keys, scale, out) },
        _ => scores(q, keys, scale, out),
    }
}

/// `out[h·d..(h + 1)·d] = Σ_p w[h·n + p] · vals[p]` (in order of `p`) for each head `h` of
/// `out.len() / d`, with `n = vals.len()` and `d` the values' length.
///
/// # Panics
/// If a value's length differs from `d`, `out.len()` is not a multiple of it, or
/// `w.len() != heads · n`.
pub fn attn_mix(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    let Some(d) = vals.first().map(|v| v.len()) else {
        out.fill(0.0);
        return;
    };
    assert!(
        d > 0 && out.len().is_multiple_of(d) && vals.iter().all(|v| v.len() == d),
        "attn_mix: every value must have the head dimension"
    );
    assert_eq!(
        w.len(),
        out.len() / d * vals.len(),
        "attn_mix: weights length"
    );
    match selected_level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is only selected when the CPU has its features.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { mix_avx512(w, vals, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { mix_avx2(w, vals, out) },
        _ => mix(w, vals, out),
    }
}

/// Dot product with [`LANES`] independent partial sums, added up in lane order, then the tail.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn scores(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    let (n, d) = (keys.len(), keys[0].len());
    for (p, key) in keys.iter().enumerate() {
        for (h, qh) in q.chunks_exact(d).enumerate() {
            out[h * n + p] = dot(qh, key) * scale;
        }
    }
}

/// Sixteen output elements at a time, kept in registers over all positions; each element's
/// sum runs over `p` in order.
#[inline(always)]
fn mix(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    const C: usize = 16;
    let (n, d) = (vals.len(), vals[0].len());
    for (h, oh) in out.chunks_exact_mut(d).enumerate() {
        let wh = &w[h * n..(h + 1) * n];
        let mut c0 = 0;
        while c0 + C <= d {
            let mut acc = [0f32; C];
            for (wp, v) in wh.iter().zip(vals) {
                let v: &[f32; C] = v[c0..c0 + C].try_into().expect("C elements");
                for l in 0..C {
                    acc[l] += wp * v[l];
                }
            }
            oh[c0..c0 + C].copy_from_slice(&acc);
            c0 += C;
        }
        for (i, o) in oh.iter_mut().enumerate().skip(c0) {
            *o = 0.0;
            for (wp, v) in wh.iter().zip(vals) {
                *o += wp * v[i];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scores_avx2(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    scores(q, keys, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn scores_avx512(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    scores(q, keys, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn mix_avx2(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    mix(w, vals, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn mix_avx512(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    mix(w, vals, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// Every compiled path gives the portable definition's bits, for head sizes with and
    /// without a tail, and scores/mix agree with a plain f64 computation to rounding.
    #[test]
    fn every_path_equals_the_portable_definition() {
        for d in [8, 13, 64, 128] {
            let (g, n) = (3, 37);
            let q = data(g * d, 1);
            let kv: Vec<Vec<f32>> = (0..n).map(|p| data(d, 10 + p as u32)).collect();
            let keys: Vec<&[f32]> = kv.iter().map(|k| k.as_slice()).collect();
            let mut want = vec![0.0; g * n];
            scores(&q, &keys, 0.125, &mut want);
            for h in 0..g {
                for p in 0..n {
                    let exact: f64 = (0..d)
                        .map(|i| q[h * d + i] as f64 * keys[p][i] as f64)
                        .sum::<f64>()
                        * 0.125;
                    assert!((want[h * n + p] as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()));
                }
            }
            let w = data(g * n, 7);
            let mut mixed = vec![0.0; g * d];
            mix(&w, &keys, &mut mixed);
            let mut got = vec![0.0; g * n];
            let mut got_mix = vec![1.0; g * d];
            attn_scores(&q, &keys, 0.125, &mut got);
            attn_mix(&w, &keys, &mut got_mix);
            assert_eq!(got, want, "selected level, d = {d}");
            assert_eq!(got_mix, mixed, "selected level, d = {d}");
            #[cfg(target_arch = "x86_64")]
            {
                if SimdLevel::Avx2.is_available() {
                    // SAFETY: checked just above.
                    unsafe {
                        scores_avx2(&q, &keys, 0.125, &mut got);
                        mix_avx2(&w, &keys, &mut got_mix);
                    }
                    assert_eq!((&got, &got_mix), (&want, &mixed), "avx2, d = {d}");
                }
                if SimdLevel::Avx512Vnni.is_available() {
                    // SAFETY: checked just above.
                    unsafe {
                        scores_avx512(&q, &keys, 0.125, &mut got);
                        mix_avx512(&w, &keys, &mut got_mix);
                    }
                    assert_eq!((&got, &got_mix), (&want, &mixed), "avx512, d = {d}");
                }
            }
        }
    }
}
