//! The two inner loops of attention over float keys and values, for the model's attention:
//! the scores of a group of query heads against one key/value head's visible positions, and
//! the softmax-weighted mix of the values.
//!
//! Each is one portable definition, compiled a second time with AVX2+FMA (or AVX-512) enabled
//! and chosen at run time, so that a block-diffusion step's attention (every block row against
//! the whole prefix) runs on wide vectors although the workspace is built for the baseline
//! x86-64. Both are written once against 16 f32 lanes ([`Lanes`]: an array, two AVX registers
//! or one AVX-512 register) with fused multiply-adds and a fixed summation tree, so results are
//! bit-identical whatever the CPU. The query heads that share a key/value head are computed up
//! to four at a time, each key and value piece loaded once for them.

use super::{selected_level, SimdLevel};

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
        _ => scores::<Portable>(q, keys, scale, out),
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
        _ => mix::<Portable>(w, vals, out),
    }
}

/// Sixteen f32 lanes: what the score and mix loops are written against, so that the portable
/// code, AVX2 (two registers) and AVX-512 (one) run the same operations in the same order.
/// A load or store of `n < 16` elements leaves the other lanes zero / untouched.
trait Lanes: Copy {
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// # Safety
    /// `p..p + n` readable, `n ≤ 16`; the level's features present.
    unsafe fn load(p: *const f32, n: usize) -> Self;
    /// # Safety
    /// `p..p + n` writable, `n ≤ 16`; the level's features present.
    unsafe fn store(self, p: *mut f32, n: usize);
    /// `a·b + self` per lane, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    /// Σ lanes as `((l + l⁺⁸) + (·)⁺⁴) + (·)⁺² …`: pairs 8 apart, then 4, 2 and 1.
    fn sum(self) -> f32;
}

/// The portable lanes.
#[derive(Clone, Copy)]
struct Portable([f32; 16]);

impl Lanes for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; 16])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; 16])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> Self {
        let mut v = [0.0; 16];
        for (i, x) in v.iter_mut().enumerate().take(n) {
            // SAFETY: i < n, readable per the contract.
            *x = unsafe { *p.add(i) };
        }
        Portable(v)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, n: usize) {
        for (i, x) in self.0.iter().enumerate().take(n) {
            // SAFETY: i < n, writable per the contract.
            unsafe { *p.add(i) = *x };
        }
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], self.0[l])))
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        let mut v = self.0;
        for half in [8, 4, 2, 1] {
            for l in 0..half {
                v[l] += v[l + half];
            }
        }
        v[0]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// The last step of [`Lanes::sum`] from 8 lanes, for both x86 levels.
    #[inline(always)]
    unsafe fn sum8(v: __m256) -> f32 {
        // SAFETY: AVX is implied by both levels using this (the caller's contract).
        unsafe {
            let r4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let r2 = _mm_add_ps(r4, _mm_movehl_ps(r4, r4));
            _mm_cvtss_f32(_mm_add_ss(r2, _mm_shuffle_ps::<1>(r2, r2)))
        }
    }

    /// Lanes 0–7 and 8–15 in two AVX registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256, __m256);

    impl Lanes for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: only used inside functions compiled with AVX2 (see `scores_avx2`).
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: as above.
            unsafe { Avx2(_mm256_set1_ps(v), _mm256_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> Self {
            // SAFETY: full loads read 16 readable elements; partial ones go through a copy.
            unsafe {
                if n == 16 {
                    Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                } else {
                    let mut t = [0f32; 16];
                    std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), n);
                    Avx2(
                        _mm256_loadu_ps(t.as_ptr()),
                        _mm256_loadu_ps(t.as_ptr().add(8)),
                    )
                }
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, n: usize) {
            // SAFETY: as `load`.
            unsafe {
                if n == 16 {
                    _mm256_storeu_ps(p, self.0);
                    _mm256_storeu_ps(p.add(8), self.1);
                } else {
                    let mut t = [0f32; 16];
                    _mm256_storeu_ps(t.as_mut_ptr(), self.0);
                    _mm256_storeu_ps(t.as_mut_ptr().add(8), self.1);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
                }
            }
        }
        #[inline(always)]
        fn fma(self, a: Self, b: Self) -> Self {
            // SAFETY: as `zero`.
            unsafe {
                Avx2(
                    _mm256_fmadd_ps(a.0, b.0, self.0),
                    _mm256_fmadd_ps(a.1, b.1, self.1),
                )
            }
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            // SAFETY: as `zero`.
            unsafe { sum8(_mm256_add_ps(self.0, self.1)) }
        }
    }

    /// All sixteen lanes in one AVX-512 register.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Lanes for Avx512 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: only used inside functions compiled with AVX-512 (see `scores_avx512`).
            unsafe { Avx512(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: as above.
            unsafe { Avx512(_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> Self {
            // SAFETY: masked-off lanes are not read; the others are readable per the contract.
            unsafe { Avx512(_mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, n: usize) {
            // SAFETY: masked-off lanes are not written.
            unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, self.0) }
        }
        #[inline(always)]
        fn fma(self, a: Self, b: Self) -> Self {
            // SAFETY: as `zero`.
            unsafe { Avx512(_mm512_fmadd_ps(a.0, b.0, self.0)) }
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            // SAFETY: as `zero`.
            unsafe {
                let v = _mm512_castps_pd(self.0);
                let lo = _mm256_castpd_ps(_mm512_castpd512_pd256(v));
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(v));
                sum8(_mm256_add_ps(lo, hi))
            }
        }
    }
}

/// Four query heads (or fewer: `hs`) against one key, each 16-lane piece of the key loaded
/// once for all of them: per head, fused multiply-adds into 16 lanes over the pieces (the last
/// one zero-padded), then [`Lanes::sum`].
#[inline(always)]
fn dots<V: Lanes>(q: &[f32], d: usize, hs: usize, key: &[f32]) -> [f32; 4] {
    let mut acc = [V::zero(); 4];
    let mut c = 0;
    while c < d {
        let n = (d - c).min(16);
        // SAFETY: c + n ≤ d = every slice's length (checked by the callers).
        unsafe {
            let k = V::load(key.as_ptr().add(c), n);
            for (j, a) in acc.iter_mut().enumerate().take(hs) {
                *a = a.fma(V::load(q.as_ptr().add(j * d + c), n), k);
            }
        }
        c += 16;
    }
    std::array::from_fn(|j| if j < hs { acc[j].sum() } else { 0.0 })
}

#[inline(always)]
fn scores<V: Lanes>(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    let (n, d) = (keys.len(), keys[0].len());
    let heads = q.len() / d;
    let mut h0 = 0;
    while h0 < heads {
        let hs = (heads - h0).min(4);
        let qh = &q[h0 * d..(h0 + hs) * d];
        for (p, key) in keys.iter().enumerate() {
            let s = dots::<V>(qh, d, hs, key);
            for j in 0..hs {
                out[(h0 + j) * n + p] = s[j] * scale;
            }
        }
        h0 += hs;
    }
}

/// Sixteen output elements of up to four heads at a time, kept in registers over all
/// positions (each value piece loaded once for the heads); each element's sum runs over `p` in
/// order, with fused multiply-adds.
#[inline(always)]
fn mix<V: Lanes>(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    let (n, d) = (vals.len(), vals[0].len());
    let heads = out.len() / d;
    let mut h0 = 0;
    while h0 < heads {
        let hs = (heads - h0).min(4);
        let mut c = 0;
        while c < d {
            let m = (d - c).min(16);
            let mut acc = [V::zero(); 4];
            for (p, v) in vals.iter().enumerate() {
                // SAFETY: c + m ≤ d = every value's length (checked by the callers).
                let v = unsafe { V::load(v.as_ptr().add(c), m) };
                for (j, a) in acc.iter_mut().enumerate().take(hs) {
                    *a = a.fma(V::splat(w[(h0 + j) * n + p]), v);
                }
            }
            for (j, a) in acc.iter().enumerate().take(hs) {
                let o = &mut out[(h0 + j) * d + c..(h0 + j) * d + c + m];
                // SAFETY: `o` holds m elements.
                unsafe { a.store(o.as_mut_ptr(), m) };
            }
            c += 16;
        }
        h0 += hs;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scores_avx2(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    scores::<x86::Avx2>(q, keys, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn scores_avx512(q: &[f32], keys: &[&[f32]], scale: f32, out: &mut [f32]) {
    scores::<x86::Avx512>(q, keys, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn mix_avx2(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    mix::<x86::Avx2>(w, vals, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn mix_avx512(w: &[f32], vals: &[&[f32]], out: &mut [f32]) {
    mix::<x86::Avx512>(w, vals, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// The definition written out plainly: 16 lane sums of fused multiply-adds over the
    /// zero-padded pieces, added 8 apart, then 4, 2, 1.
    fn reference_dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 16];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            lanes[i % 16] = x.mul_add(*y, lanes[i % 16]);
        }
        for half in [8, 4, 2, 1] {
            for l in 0..half {
                lanes[l] += lanes[l + half];
            }
        }
        lanes[0]
    }

    /// Every compiled path gives the definition's bits, for head sizes with and without a
    /// partial last piece and group sizes around the four-head blocking, and the scores agree
    /// with an f64 computation to rounding.
    #[test]
    fn every_path_equals_the_definition() {
        for (d, g) in [8, 13, 64, 128]
            .into_iter()
            .flat_map(|d| [1, 3, 4, 7].map(|g| (d, g)))
        {
            let n = 37;
            let q = data(g * d, 1);
            let kv: Vec<Vec<f32>> = (0..n).map(|p| data(d, 10 + p as u32)).collect();
            let keys: Vec<&[f32]> = kv.iter().map(|k| k.as_slice()).collect();
            let w = data(g * n, 7);
            let mut want = vec![0.0; g * n];
            let mut mixed = vec![0.0; g * d];
            for h in 0..g {
                for p in 0..n {
                    let qh = &q[h * d..(h + 1) * d];
                    want[h * n + p] = reference_dot(qh, keys[p]) * 0.125;
                    let exact: f64 = qh
                        .iter()
                        .zip(keys[p])
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * 0.125;
                    assert!((want[h * n + p] as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()));
                }
                for i in 0..d {
                    // Each element: the positions in order, fused multiply-adds.
                    let mut o = 0f32;
                    for p in 0..n {
                        o = w[h * n + p].mul_add(keys[p][i], o);
                    }
                    mixed[h * d + i] = o;
                }
            }
            let mut got = vec![0.0; g * n];
            let mut got_mix = vec![1.0; g * d];
            scores::<Portable>(&q, &keys, 0.125, &mut got);
            mix::<Portable>(&w, &keys, &mut got_mix);
            assert_eq!(
                (&got, &got_mix),
                (&want, &mixed),
                "portable, d = {d}, g = {g}"
            );
            attn_scores(&q, &keys, 0.125, &mut got);
            attn_mix(&w, &keys, &mut got_mix);
            assert_eq!(
                (&got, &got_mix),
                (&want, &mixed),
                "selected, d = {d}, g = {g}"
            );
            #[cfg(target_arch = "x86_64")]
            {
                if SimdLevel::Avx2.is_available() {
                    // SAFETY: checked just above.
                    unsafe {
                        scores_avx2(&q, &keys, 0.125, &mut got);
                        mix_avx2(&w, &keys, &mut got_mix);
                    }
                    assert_eq!((&got, &got_mix), (&want, &mixed), "avx2, d = {d}, g = {g}");
                }
                if SimdLevel::Avx512Vnni.is_available() {
                    // SAFETY: checked just above.
                    unsafe {
                        scores_avx512(&q, &keys, 0.125, &mut got);
                        mix_avx512(&w, &keys, &mut got_mix);
                    }
                    assert_eq!(
                        (&got, &got_mix),
                        (&want, &mixed),
                        "avx512, d = {d}, g = {g}"
                    );
                }
            }
        }
    }
}
