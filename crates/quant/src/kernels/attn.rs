//! Attention of many query vectors against one key/value head, shaped like two small GEMMs.
//!
//! A block-diffusion step or a prefill asks for the attention of every row of the call times
//! every query head of a key/value head's group (32 rows × 4 heads = 128 query vectors for a
//! BitNet-2B-shaped 32-row step), all against the same keys and values. [`attend`] takes such
//! a set of query vectors at once:
//!
//! 1. the queries are transposed once per call, sixteen to a register (lanes = query vectors),
//!    and the scores are a register tile of query vectors × keys: each key element is loaded
//!    once (broadcast) for 16 or 32 queries and there is no horizontal reduction;
//! 2. the softmax runs down those columns with a vectorized, defined exp ([`softmax_exp`]);
//! 3. the mix is a second small GEMM with lanes over the value's elements, a register tile of
//!    query vectors × value pieces, each value piece loaded once for several queries.
//!
//! # The definition
//!
//! Every level (portable, AVX2, AVX-512) and every way of grouping queries into calls and
//! tiles computes, for one query `q` that sees keys/values `0..L`, exactly:
//!
//! - `s_p = fl(dot(q, k_p) · scale)`, where `dot` is the chain of fused multiply-adds
//!   `a ← q[c]·k_p[c] + a` over `c = 0, 1, …, d−1` from `a = +0`;
//! - `m = max_p s_p`, folded over `p = 0 … L−1` from `−∞` as `if s > m { s } else { m }`;
//! - `e_p = softmax_exp(s_p − m)`;
//! - `Z = Σ e_p`, plain additions in order of `p` from `+0`;
//! - `out[c] = o_c / Z` (one IEEE division), where `o_c` is the chain of fused multiply-adds
//!   `o ← e_p·v_p[c] + o` over `p = 0 … L−1` from `+0`.
//!
//! Each lane of each SIMD register holds one query's (or one output element's) scalar chain,
//! so the result of one query does not depend on the SIMD width, on the tile it shares, or on
//! how many queries the call has: decode, an 8-row sub-block and a 32-row block give the same
//! bits for the same row. Positions a query does not see (`p ≥ L`) never enter its chains.

use super::{selected_level, SimdLevel};

/// Per-thread buffers of [`attend`], reused across calls (they only grow).
#[derive(Default)]
pub struct AttnBuf {
    /// The queries, transposed: per block of 16 query vectors, `d` rows of 16 lanes.
    qt: Vec<f32>,
    /// Scores, then softmax numerators: per block, `L` rows of 16 lanes.
    s: Vec<f32>,
    /// The softmax denominators, one per query vector (padded to whole blocks).
    z: Vec<f32>,
}

/// Attention of the `m = limits.len()` query vectors in `q` (`m × d`, `d` the keys' length)
/// against one key/value head: query `i` sees `keys[..limits[i]]` and `vals[..limits[i]]`, and
/// its output goes to `out[i·d..(i + 1)·d]`. Computes the definition in the module
/// documentation on the selected SIMD level.
///
/// # Panics
/// If a key or value differs in length from the first key, `q.len() != m·d`,
/// `out.len() != m·d`, a limit is 0 or exceeds the number of keys or values.
pub fn attend(
    q: &[f32],
    limits: &[usize],
    keys: &[&[f32]],
    vals: &[&[f32]],
    scale: f32,
    buf: &mut AttnBuf,
    out: &mut [f32],
) {
    attend_on(selected_level(), q, limits, keys, vals, scale, buf, out)
}

/// [`attend`] on `level` (which must be available).
#[allow(clippy::too_many_arguments)]
fn attend_on(
    level: SimdLevel,
    q: &[f32],
    limits: &[usize],
    keys: &[&[f32]],
    vals: &[&[f32]],
    scale: f32,
    buf: &mut AttnBuf,
    out: &mut [f32],
) {
    let m = limits.len();
    if m == 0 {
        return;
    }
    let d = keys.first().map_or(0, |k| k.len());
    let lmax = limits.iter().copied().max().unwrap_or(0);
    assert!(
        d > 0 && keys.iter().chain(vals).all(|k| k.len() == d),
        "attend: every key and value must have the head dimension"
    );
    assert!(
        limits.iter().all(|&l| l > 0) && lmax <= keys.len() && lmax <= vals.len(),
        "attend: every query must see between 1 and the number of keys/values positions"
    );
    assert!(
        q.len() == m * d && out.len() == m * d,
        "attend: queries and output must be {m} × {d}"
    );
    let blocks = m.div_ceil(16);
    buf.qt.clear();
    buf.qt.resize(blocks * d * 16, 0.0);
    buf.s.clear();
    buf.s.resize(blocks * lmax * 16, 0.0);
    buf.z.clear();
    buf.z.resize(blocks * 16, 0.0);
    for (i, qi) in q.chunks_exact(d).enumerate() {
        let (b, l) = (i / 16, i % 16);
        for (c, x) in qi.iter().enumerate() {
            buf.qt[(b * d + c) * 16 + l] = *x;
        }
    }
    let a = Args {
        d,
        lmax,
        limits,
        keys,
        vals,
        scale,
    };
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            assert!(level.is_available(), "attend: {level:?} is not available");
            // SAFETY: the CPU has the level's features (checked just above).
            unsafe { attend_avx512(&a, buf, out) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            assert!(level.is_available(), "attend: {level:?} is not available");
            // SAFETY: as above.
            unsafe { attend_avx2(&a, buf, out) }
        }
        _ => run::<Portable, 1, 4, 2, 2>(&a, buf, out),
    }
}

/// The checked arguments of one [`attend`] call.
struct Args<'a, 'k> {
    d: usize,
    lmax: usize,
    limits: &'a [usize],
    keys: &'a [&'k [f32]],
    vals: &'a [&'k [f32]],
    scale: f32,
}

/// `exp(x)` as every level computes it inside the softmax: accurate to a few ulp for
/// `−87 ≤ x ≤ 0` (where the result is a normal f32), exactly 0 below −87, NaN for NaN.
/// Meant for `x ≤ 0`; larger arguments are outside its range.
///
/// `n = round(x·log₂e)` (by the 1.5·2²³ rounding constant), `r = x − n·ln2` in two fused
/// steps (Cody–Waite), `exp(r) ≈ 1 + r + r²·P(r)` with Cephes' degree-5 `expf` polynomial in
/// Horner form with fused multiply-adds, then scaled by `2ⁿ` built from its exponent bits.
pub fn softmax_exp(x: f32) -> f32 {
    let v = exp_def(Portable::splat(x));
    v.0[0]
}

/// `g[i] ← g[i]·σ(g[i])·u[i]`: the SiLU-gated product of a SwiGLU feed-forward, on the
/// selected SIMD level (every level gives the same bits: the definition is lane-wise).
///
/// `σ(g)` is computed from `e = softmax_exp(−|g|)`, so the exponential never overflows:
/// `1/(1 + e)` for `g ≥ 0` and `e/(1 + e)` otherwise; then `(g·σ)·u`. Within a few ulp of the
/// exact value (tested against f64); NaN in `g` gives NaN.
///
/// # Panics
/// If the lengths differ.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    silu_mul_on(selected_level(), g, u)
}

/// [`silu_mul`] on `level` (which must be available).
fn silu_mul_on(level: SimdLevel, g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "silu_mul: the slices differ in length");
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            assert!(level.is_available(), "silu_mul: {level:?} is not available");
            // SAFETY: the CPU has the level's features (checked just above), AVX-512 F/BW/VL.
            unsafe { silu_mul_avx512(g, u) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            assert!(level.is_available(), "silu_mul: {level:?} is not available");
            // SAFETY: as above; the level includes AVX2 and FMA.
            unsafe { silu_mul_avx2(g, u) }
        }
        _ => silu_mul_lanes::<Portable>(g, u),
    }
}

/// The definition of [`silu_mul`], sixteen elements at a time.
#[inline(always)]
fn silu_mul_lanes<V: Lanes>(g: &mut [f32], u: &[f32]) {
    for (g, u) in g.chunks_mut(16).zip(u.chunks(16)) {
        let n = g.len();
        // SAFETY: `g` and `u` hold `n ≤ 16` floats each.
        unsafe {
            let (x, y) = (V::load(g.as_ptr(), n), V::load(u.as_ptr(), n));
            let zero = V::zero();
            let e = exp_def(zero.sub(x.max(zero.sub(x))));
            let one = V::splat(1.0);
            let sigma = x.select_nonneg(one, e).div(one.add(e));
            x.mul(sigma).mul(y).store(g.as_mut_ptr(), n);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_mul_avx2(g: &mut [f32], u: &[f32]) {
    silu_mul_lanes::<x86::Avx2>(g, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn silu_mul_avx512(g: &mut [f32], u: &[f32]) {
    silu_mul_lanes::<x86::Avx512>(g, u)
}

/// `Σ softmax_exp((x[i] − max) / t)` over `x`, for a softmax's denominator (`max` ≥ every
/// element, so the arguments are ≤ 0), on the selected SIMD level. The terms are added in f64,
/// sixteen lanes then the lanes in order, so the result is the same on every level and, to
/// f64 rounding, does not depend on where in `x` a value sits (two rows holding the same
/// values in another order give the same probabilities once rounded to f32). NaN elements make
/// the sum NaN.
pub fn exp_sum(x: &[f32], max: f32, t: f32) -> f64 {
    exp_sum_on(selected_level(), x, max, t)
}

/// [`exp_sum`] on `level` (which must be available).
fn exp_sum_on(level: SimdLevel, x: &[f32], max: f32, t: f32) -> f64 {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            assert!(level.is_available(), "exp_sum: {level:?} is not available");
            // SAFETY: the CPU has the level's features (checked just above), AVX-512 F/BW/VL.
            unsafe { exp_sum_avx512(x, max, t) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            assert!(level.is_available(), "exp_sum: {level:?} is not available");
            // SAFETY: as above; the level includes AVX2 and FMA.
            unsafe { exp_sum_avx2(x, max, t) }
        }
        _ => exp_sum_lanes::<Portable>(x, max, t),
    }
}

/// The definition of [`exp_sum`].
#[inline(always)]
fn exp_sum_lanes<V: Lanes>(x: &[f32], max: f32, t: f32) -> f64 {
    let (m, t) = (V::splat(max), V::splat(t));
    let mut acc = [0.0f64; 16];
    for piece in x.chunks(16) {
        let n = piece.len();
        let mut e = [0.0f32; 16];
        // SAFETY: `piece` holds `n ≤ 16` floats, `e` 16.
        unsafe {
            exp_def(V::load(piece.as_ptr(), n).sub(m).div(t)).store(e.as_mut_ptr(), n);
        }
        for (a, e) in acc.iter_mut().zip(e) {
            *a += f64::from(e);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_sum_avx2(x: &[f32], max: f32, t: f32) -> f64 {
    exp_sum_lanes::<x86::Avx2>(x, max, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn exp_sum_avx512(x: &[f32], max: f32, t: f32) -> f64 {
    exp_sum_lanes::<x86::Avx512>(x, max, t)
}

/// Rounds `x·log₂e` to an integer held in the low mantissa bits of a float.
const EXP_ROUND: f32 = 12_582_912.0;
const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·EXP_LN2_HI` is exact for the `n` in range.
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// Below this the result is 0 (exp(−87) ≈ 1.6e−38 is the last normal result).
const EXP_CUTOFF: f32 = -87.0;
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// The definition of [`softmax_exp`], lane-wise.
#[inline(always)]
fn exp_def<V: Lanes>(x: V) -> V {
    let t = x.fma_s(EXP_LOG2E, V::splat(EXP_ROUND));
    let n = t.sub(V::splat(EXP_ROUND));
    let r = n.fma_s(-EXP_LN2_HI, x);
    let r = n.fma_s(-EXP_LN2_LO, r);
    let z = r.mul(r);
    // Horner: y ← y·r + P[i], then y·z + r, then + 1.
    let mut y = V::splat(EXP_P[0]);
    for p in &EXP_P[1..] {
        y = V::splat(*p).fma(y, r);
    }
    let y = r.fma(y, z).add(V::splat(1.0));
    y.mul(t.pow2_of_rounded()).zero_below(x, EXP_CUTOFF)
}

/// Sixteen f32 lanes: what the kernels are written against, so that the portable code, AVX2
/// (two registers) and AVX-512 (one) run the same operations. Every operation is lane-wise and
/// rounds once as IEEE 754 says, so a lane's result depends only on that lane's inputs.
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
    /// `a·b + self`, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    /// `self·k + c`, rounded once.
    #[inline(always)]
    fn fma_s(self, k: f32, c: Self) -> Self {
        c.fma(self, Self::splat(k))
    }
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// `if self > o { self } else { o }` (so NaN in `self` gives `o`, as x86's `maxps`).
    fn max(self, o: Self) -> Self;
    /// `2ⁿ` for `self = 1.5·2²³ + n`, `−126 ≤ n ≤ 127`, from the exponent bits.
    fn pow2_of_rounded(self) -> Self;
    /// `if x < bound { 0 } else { self }` (NaN `x` keeps `self`).
    fn zero_below(self, x: Self, bound: f32) -> Self;
    /// `if self >= 0 { a } else { b }` (NaN `self` gives `b`).
    fn select_nonneg(self, a: Self, b: Self) -> Self;
}

/// The portable lanes.
#[derive(Clone, Copy)]
struct Portable([f32; 16]);

impl Portable {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Portable(std::array::from_fn(|l| f(self.0[l], o.0[l])))
    }
}

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
    fn add(self, o: Self) -> Self {
        self.map2(o, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.map2(o, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.map2(o, |a, b| a * b)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self.map2(o, |a, b| a / b)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        self.map2(o, |a, b| if a > b { a } else { b })
    }
    #[inline(always)]
    fn pow2_of_rounded(self) -> Self {
        Portable(self.0.map(|t| {
            let e = (t.to_bits() as i32).wrapping_add(127 - 0x4B40_0000);
            f32::from_bits((e as u32).wrapping_shl(23))
        }))
    }
    #[inline(always)]
    fn zero_below(self, x: Self, bound: f32) -> Self {
        self.map2(x, |s, x| if x < bound { 0.0 } else { s })
    }
    #[inline(always)]
    fn select_nonneg(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| {
            if self.0[l] >= 0.0 {
                a.0[l]
            } else {
                b.0[l]
            }
        }))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// Lanes 0–7 and 8–15 in two AVX registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256, __m256);

    impl Avx2 {
        #[inline(always)]
        fn map2(self, o: Self, f: impl Fn(__m256, __m256) -> __m256) -> Self {
            Avx2(f(self.0, o.0), f(self.1, o.1))
        }
    }

    // SAFETY (every `unsafe` block in this impl): only used inside functions compiled with
    // AVX2 + FMA (`attend_avx2`), which run only when the CPU has them.
    impl Lanes for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: the features are enabled (see the impl).
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
            // SAFETY: the features are enabled (see the impl).
            unsafe {
                Avx2(
                    _mm256_fmadd_ps(a.0, b.0, self.0),
                    _mm256_fmadd_ps(a.1, b.1, self.1),
                )
            }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            self.map2(o, |a, b| unsafe { _mm256_add_ps(a, b) })
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            self.map2(o, |a, b| unsafe { _mm256_sub_ps(a, b) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            self.map2(o, |a, b| unsafe { _mm256_mul_ps(a, b) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            self.map2(o, |a, b| unsafe { _mm256_div_ps(a, b) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            self.map2(o, |a, b| unsafe { _mm256_max_ps(a, b) })
        }
        #[inline(always)]
        fn pow2_of_rounded(self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            let f = |t: __m256| unsafe {
                let e =
                    _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127 - 0x4B40_0000));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
            };
            Avx2(f(self.0), f(self.1))
        }
        #[inline(always)]
        fn zero_below(self, x: Self, bound: f32) -> Self {
            // SAFETY: the features are enabled (see the impl).
            self.map2(x, |s, x| unsafe {
                _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(bound)), s)
            })
        }
        #[inline(always)]
        fn select_nonneg(self, a: Self, b: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            let pick = |x: __m256, a: __m256, b: __m256| unsafe {
                _mm256_blendv_ps(b, a, _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps()))
            };
            Avx2(pick(self.0, a.0, b.0), pick(self.1, a.1, b.1))
        }
    }

    /// All sixteen lanes in one AVX-512 register.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    // SAFETY (every `unsafe` block in this impl): only used inside functions compiled with
    // AVX-512 F (`attend_avx512`), which run only when the CPU has it.
    impl Lanes for Avx512 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: the features are enabled (see the impl).
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
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_fmadd_ps(a.0, b.0, self.0)) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_div_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe { Avx512(_mm512_max_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn pow2_of_rounded(self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe {
                let e = _mm512_add_epi32(
                    _mm512_castps_si512(self.0),
                    _mm512_set1_epi32(127 - 0x4B40_0000),
                );
                Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(e)))
            }
        }
        #[inline(always)]
        fn zero_below(self, x: Self, bound: f32) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe {
                let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x.0, _mm512_set1_ps(bound));
                Avx512(_mm512_mask_blend_ps(below, self.0, _mm512_setzero_ps()))
            }
        }
        #[inline(always)]
        fn select_nonneg(self, a: Self, b: Self) -> Self {
            // SAFETY: the features are enabled (see the impl).
            unsafe {
                let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, _mm512_setzero_ps());
                Avx512(_mm512_mask_blend_ps(ge, b.0, a.0))
            }
        }
    }
}

/// The whole call on lanes `V`, with score tiles of `QB` query blocks × `KT` keys and mix
/// tiles of `MQ` queries × `MC` 16-element value pieces (tile shapes change speed, not bits).
#[inline(always)]
fn run<V: Lanes, const QB: usize, const KT: usize, const MQ: usize, const MC: usize>(
    a: &Args,
    buf: &mut AttnBuf,
    out: &mut [f32],
) {
    let blocks = a.limits.len().div_ceil(16);
    let mut b = 0;
    while b + QB <= blocks {
        scores_rows::<V, QB, KT>(a, buf, b);
        b += QB;
    }
    while b < blocks {
        scores_rows::<V, 1, KT>(a, buf, b);
        b += 1;
    }
    // Positions a query does not see: −∞, which the max skips and whose exp is exactly 0.
    for (i, &l) in a.limits.iter().enumerate() {
        for p in l..a.lmax {
            buf.s[((i / 16) * a.lmax + p) * 16 + i % 16] = f32::NEG_INFINITY;
        }
    }
    for b in 0..blocks {
        softmax_block::<V>(
            a.lmax,
            &mut buf.s[b * a.lmax * 16..(b + 1) * a.lmax * 16],
            &mut buf.z[b * 16..(b + 1) * 16],
        );
    }
    // The mix, over chunks of MIX_CHUNK positions (their values stay in L1 while every
    // query takes them), the running sums kept in `out` between chunks; then / z.
    let m = a.limits.len();
    out.fill(0.0);
    let mut p0 = 0;
    while p0 < a.lmax {
        let p1 = (p0 + MIX_CHUNK).min(a.lmax);
        let mut i = 0;
        while i + MQ <= m {
            mix_rows::<V, MQ, MC>(a, buf, i, p0..p1, out);
            i += MQ;
        }
        while i < m {
            mix_rows::<V, 1, MC>(a, buf, i, p0..p1, out);
            i += 1;
        }
        p0 = p1;
    }
    for (o, z) in out.chunks_exact_mut(a.d).zip(&buf.z) {
        let z = V::splat(*z);
        for piece in o.chunks_mut(16) {
            // SAFETY: `piece` holds `piece.len() ≤ 16` floats.
            unsafe {
                V::load(piece.as_ptr(), piece.len())
                    .div(z)
                    .store(piece.as_mut_ptr(), piece.len())
            };
        }
    }
}

/// Positions per chunk of the mix: 64 values of 128 floats (32 KiB) stay in L1.
const MIX_CHUNK: usize = 64;

/// Scores of query blocks `b0..b0 + QB` against every key `0..lmax`, in tiles of `KT` keys.
#[inline(always)]
fn scores_rows<V: Lanes, const QB: usize, const KT: usize>(a: &Args, buf: &mut AttnBuf, b0: usize) {
    let mut p = 0;
    while p + KT <= a.lmax {
        score_tile::<V, QB, KT>(a, buf, b0, p);
        p += KT;
    }
    while p < a.lmax {
        score_tile::<V, QB, 1>(a, buf, b0, p);
        p += 1;
    }
}

/// One register tile: `s[b][p][lane] = fl(dot(q_lane, k_p)·scale)` for `QB` query blocks and
/// keys `p0..p0 + KT`, each `dot` the chain of fused multiply-adds over `c` in order.
#[inline(always)]
fn score_tile<V: Lanes, const QB: usize, const KT: usize>(
    a: &Args,
    buf: &mut AttnBuf,
    b0: usize,
    p0: usize,
) {
    let d = a.d;
    let kp: [*const f32; KT] = std::array::from_fn(|t| a.keys[p0 + t].as_ptr());
    let qt = buf.qt[b0 * d * 16..(b0 + QB) * d * 16].as_ptr();
    let mut acc = [[V::zero(); KT]; QB];
    for c in 0..d {
        // SAFETY: c < d = every key's length; the transposed queries hold QB·d·16 floats
        // from `qt`.
        unsafe {
            let qv: [V; QB] = std::array::from_fn(|j| V::load(qt.add((j * d + c) * 16), 16));
            for t in 0..KT {
                let k = V::splat(*kp[t].add(c));
                for j in 0..QB {
                    acc[j][t] = acc[j][t].fma(qv[j], k);
                }
            }
        }
    }
    let scale = V::splat(a.scale);
    for (j, row) in acc.iter().enumerate() {
        for (t, s) in row.iter().enumerate() {
            let at = ((b0 + j) * a.lmax + p0 + t) * 16;
            // SAFETY: the score buffer holds blocks·lmax·16 floats.
            unsafe { s.mul(scale).store(buf.s[at..at + 16].as_mut_ptr(), 16) };
        }
    }
}

/// The softmax numerators of one block of 16 query vectors (in place of their scores) and
/// their sums `z`.
#[inline(always)]
fn softmax_block<V: Lanes>(lmax: usize, s: &mut [f32], z: &mut [f32]) {
    let mut m = V::splat(f32::NEG_INFINITY);
    for row in s.chunks_exact(16) {
        // SAFETY: 16 floats.
        m = unsafe { V::load(row.as_ptr(), 16) }.max(m);
    }
    let mut sum = V::zero();
    for row in s.chunks_exact_mut(16).take(lmax) {
        // SAFETY: 16 floats.
        unsafe {
            let e = exp_def(V::load(row.as_ptr(), 16).sub(m));
            e.store(row.as_mut_ptr(), 16);
            sum = sum.add(e);
        }
    }
    // SAFETY: 16 floats.
    unsafe { sum.store(z.as_mut_ptr(), 16) };
}

/// The running sums of queries `i0..i0 + MQ` over positions `ps`, in tiles of `MC`
/// 16-element value pieces.
#[inline(always)]
fn mix_rows<V: Lanes, const MQ: usize, const MC: usize>(
    a: &Args,
    buf: &AttnBuf,
    i0: usize,
    ps: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let pieces = a.d.div_ceil(16);
    let mut c = 0;
    // Whole pieces with constant-width loads, then the rest.
    while (c + MC) * 16 <= a.d {
        mix_tile::<V, MQ, MC, true>(a, buf, i0, c, ps.clone(), out);
        c += MC;
    }
    while c < pieces {
        mix_tile::<V, MQ, 1, false>(a, buf, i0, c, ps.clone(), out);
        c += 1;
    }
}

/// One register tile: `out[i][c] += e_p[i]·v_p[c]` for queries `i0..i0 + MQ`, value pieces
/// `c0..c0 + MC` and the positions of `ps` each query sees, as fused multiply-adds in order of
/// `p` (positions all the tile's queries see first, then each query's own further ones: the
/// same chain per query). `FULL`: every piece has 16 elements.
#[inline(always)]
fn mix_tile<V: Lanes, const MQ: usize, const MC: usize, const FULL: bool>(
    a: &Args,
    buf: &AttnBuf,
    i0: usize,
    c0: usize,
    ps: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let d = a.d;
    let ends: [usize; MQ] = std::array::from_fn(|j| a.limits[i0 + j].clamp(ps.start, ps.end));
    let shared = ends.iter().copied().min().unwrap_or(ps.start);
    let width: [usize; MC] = std::array::from_fn(|k| {
        if FULL {
            16
        } else {
            (d - (c0 + k) * 16).min(16)
        }
    });
    // The numerators of query i0 + j: one every 16 floats, from position 0.
    let e: [*const f32; MQ] = std::array::from_fn(|j| {
        let i = i0 + j;
        buf.s[(i / 16) * a.lmax * 16 + i % 16..].as_ptr()
    });
    let o: [*mut f32; MQ] = std::array::from_fn(|j| out[(i0 + j) * d + c0 * 16..].as_mut_ptr());
    // Every access below: (c0 + k)·16 + width[k] ≤ d = every value's length and the length
    // of a query's output; a query's numerators hold lmax ≥ ps.end rows of 16.
    let mut acc: [[V; MC]; MQ] = std::array::from_fn(|j| {
        std::array::from_fn(|k| {
            // SAFETY: as stated above.
            unsafe { V::load(o[j].add(k * 16), width[k]) }
        })
    });
    for p in ps.start..shared {
        let vp = a.vals[p].as_ptr();
        let v: [V; MC] = std::array::from_fn(|k| {
            // SAFETY: as stated above.
            unsafe { V::load(vp.add((c0 + k) * 16), width[k]) }
        });
        for j in 0..MQ {
            // SAFETY: as stated above.
            let w = V::splat(unsafe { *e[j].add(p * 16) });
            for k in 0..MC {
                acc[j][k] = acc[j][k].fma(w, v[k]);
            }
        }
    }
    for j in 0..MQ {
        for p in shared..ends[j] {
            let vp = a.vals[p].as_ptr();
            // SAFETY: as stated above.
            let w = V::splat(unsafe { *e[j].add(p * 16) });
            for k in 0..MC {
                // SAFETY: as stated above.
                let v = unsafe { V::load(vp.add((c0 + k) * 16), width[k]) };
                acc[j][k] = acc[j][k].fma(w, v);
            }
        }
    }
    for j in 0..MQ {
        for k in 0..MC {
            // SAFETY: as stated above.
            unsafe { acc[j][k].store(o[j].add(k * 16), width[k]) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_avx2(a: &Args, buf: &mut AttnBuf, out: &mut [f32]) {
    run::<x86::Avx2, 1, 4, 2, 2>(a, buf, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn attend_avx512(a: &Args, buf: &mut AttnBuf, out: &mut [f32]) {
    run::<x86::Avx512, 2, 8, 4, 4>(a, buf, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform values in `[-1, 1)` (xorshift).
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The definition in the module documentation, written out one query at a time with
    /// scalar operations (and [`softmax_exp`] for the exp).
    fn definition(q: &[f32], keys: &[&[f32]], vals: &[&[f32]], scale: f32, out: &mut [f32]) {
        let d = q.len();
        let s: Vec<f32> = keys
            .iter()
            .map(|k| q.iter().zip(*k).fold(0f32, |a, (x, y)| x.mul_add(*y, a)) * scale)
            .collect();
        let m = s
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        let e: Vec<f32> = s.iter().map(|x| softmax_exp(x - m)).collect();
        let z = e.iter().fold(0f32, |z, x| z + x);
        for c in 0..d {
            let o = e
                .iter()
                .zip(vals)
                .fold(0f32, |o, (w, v)| w.mul_add(v[c], o));
            out[c] = o / z;
        }
    }

    /// Plain f64 attention: softmax(q·kᵀ·scale)·v.
    fn reference_f64(q: &[f32], keys: &[&[f32]], vals: &[&[f32]], scale: f32) -> Vec<f64> {
        let s: Vec<f64> = keys
            .iter()
            .map(|k| {
                q.iter()
                    .zip(*k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..q.len())
            .map(|c| {
                e.iter()
                    .zip(vals)
                    .map(|(w, v)| w * v[c] as f64)
                    .sum::<f64>()
                    / z
            })
            .collect()
    }

    /// The number of positions query row `r` of a call sees: `prefix` cached positions, then
    /// `rows` new ones under the causal or block-causal (blocks of 8, aligned to absolute
    /// positions) rule.
    fn limit(prefix: usize, rows: usize, r: usize, block: Option<usize>) -> usize {
        let pos = prefix + r;
        match block {
            None => pos + 1,
            Some(b) => ((pos / b + 1) * b).min(prefix + rows),
        }
    }

    /// Every level computes the definition bit for bit and stays within a stated bound of f64
    /// attention, for 1, 8, 32 and 33 rows, GQA groups 1 and 4, causal and block-causal rules
    /// over cached prefixes, and head sizes with and without a partial last piece. A query's
    /// result is the same when it is computed alone (a decode) or in a chunk of 8 rows (a
    /// sub-block).
    #[test]
    fn attend_is_the_definition_on_every_level_and_close_to_f64() {
        let levels = super::super::available_levels();
        let mut worst = 0f64;
        for (d, rows, group, prefix, block, amp) in [
            (128, 1, 4, 0, None, 1.0),
            (128, 1, 4, 40, None, 4.0),
            (128, 8, 4, 17, Some(8), 1.0),
            (128, 32, 4, 64, Some(8), 3.0),
            (128, 32, 1, 5, None, 1.0),
            (128, 33, 4, 30, None, 2.0),
            (128, 33, 1, 9, Some(8), 8.0),
            (64, 8, 1, 3, None, 1.0),
            (13, 33, 4, 7, Some(8), 1.0),
            (13, 1, 1, 0, None, 1.0),
            // Limits on both sides of the mix's chunks of 64 positions.
            (128, 33, 4, 100, None, 1.0),
            (13, 8, 1, 60, None, 2.0),
        ] {
            let total = prefix + rows;
            let scale = 1.0 / (d as f32).sqrt();
            let kv: Vec<Vec<f32>> = (0..2 * total).map(|p| random(d, 100 + p as u64)).collect();
            let keys: Vec<&[f32]> = kv[..total].iter().map(|k| k.as_slice()).collect();
            let vals: Vec<&[f32]> = kv[total..].iter().map(|v| v.as_slice()).collect();
            let m = rows * group;
            let q: Vec<f32> = random(m * d, 7).iter().map(|x| x * amp).collect();
            let limits: Vec<usize> = (0..m)
                .map(|i| limit(prefix, rows, i / group, block))
                .collect();
            let mut want = vec![0f32; m * d];
            for i in 0..m {
                let l = limits[i];
                definition(
                    &q[i * d..(i + 1) * d],
                    &keys[..l],
                    &vals[..l],
                    scale,
                    &mut want[i * d..(i + 1) * d],
                );
                let exact = reference_f64(&q[i * d..(i + 1) * d], &keys[..l], &vals[..l], scale);
                for (w, x) in want[i * d..(i + 1) * d].iter().zip(&exact) {
                    worst = worst.max((*w as f64 - x).abs());
                }
            }
            let what = format!("d {d}, {rows} rows, group {group}, prefix {prefix}, {block:?}");
            let mut buf = AttnBuf::default();
            for &level in &levels {
                let mut got = vec![f32::NAN; m * d];
                attend_on(level, &q, &limits, &keys, &vals, scale, &mut buf, &mut got);
                assert!(
                    got == want,
                    "{level:?}, {what}: differs from the definition"
                );
                // One query at a time, and in chunks of 8 rows.
                for chunk in [group, 8 * group] {
                    let mut part = vec![f32::NAN; m * d];
                    for (i, o) in part.chunks_mut(chunk * d).enumerate() {
                        let at = i * chunk;
                        let n = o.len() / d;
                        attend_on(
                            level,
                            &q[at * d..(at + n) * d],
                            &limits[at..at + n],
                            &keys,
                            &vals,
                            scale,
                            &mut buf,
                            o,
                        );
                    }
                    assert!(part == want, "{level:?}, {what}: chunks of {chunk} differ");
                }
            }
            let mut got = vec![0f32; m * d];
            attend(&q, &limits, &keys, &vals, scale, &mut buf, &mut got);
            assert!(got == want, "selected level, {what}");
        }
        // Inputs in [-1, 1): outputs are convex combinations of values in [-1, 1).
        assert!(
            worst < 3e-6,
            "largest difference from f64 attention {worst:e}"
        );
    }

    /// Positions beyond a query's limit never enter its result, even when their keys or values
    /// are NaN or infinite.
    #[test]
    fn invisible_positions_never_contribute() {
        let d = 32;
        let kv: Vec<Vec<f32>> = (0..12).map(|p| random(d, p)).collect();
        let mut bad = kv.clone();
        bad[9] = vec![f32::NAN; d];
        bad[11] = vec![f32::INFINITY; d];
        let q = random(3 * d, 5);
        let limits = [9, 4, 1];
        let mut buf = AttnBuf::default();
        for level in super::super::available_levels() {
            let run = |kv: &[Vec<f32>], buf: &mut AttnBuf| {
                let r: Vec<&[f32]> = kv.iter().map(|k| k.as_slice()).collect();
                let mut out = vec![0f32; 3 * d];
                attend_on(level, &q, &limits, &r, &r, 0.3, buf, &mut out);
                out
            };
            let (clean, dirty) = (run(&kv, &mut buf), run(&bad, &mut buf));
            assert!(clean == dirty, "{level:?}");
            // One visible position: the output is that value.
            assert_eq!(&clean[2 * d..], &kv[0][..], "{level:?}");
        }
    }

    /// The exp against f64 over the softmax's range: within 2 ulp of the correctly rounded
    /// value from −87 to 0, 1 at 0, exactly 0 below −87 and at −∞, NaN for NaN.
    #[test]
    fn softmax_exp_is_accurate() {
        let mut worst_ulp = 0f64;
        let mut x = 0f32;
        while x >= -87.0 {
            let want = (x as f64).exp();
            let ulp = f32::EPSILON as f64 * 2f64.powi((want as f32).log2().floor() as i32);
            worst_ulp = worst_ulp.max((softmax_exp(x) as f64 - want).abs() / ulp);
            x = f32::from_bits(x.to_bits() + 997).min(x - 1e-7);
        }
        for x in random(100_000, 3) {
            let x = x.abs() * -87.0;
            let want = (x as f64).exp();
            let ulp = f32::EPSILON as f64 * 2f64.powi((want as f32).log2().floor() as i32);
            worst_ulp = worst_ulp.max((softmax_exp(x) as f64 - want).abs() / ulp);
        }
        assert!(worst_ulp <= 2.0, "worst error {worst_ulp} ulp");
        assert_eq!(softmax_exp(0.0), 1.0);
        assert_eq!(softmax_exp(-0.0), 1.0);
        for x in [-87.01, -100.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(softmax_exp(x), 0.0, "{x}");
        }
        assert!(softmax_exp(f32::NAN).is_nan());
    }

    /// Every level's exp gives the portable bits.
    #[test]
    fn softmax_exp_is_the_same_on_every_level() {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn avx2(x: &[f32; 16]) -> [f32; 16] {
                let mut o = [0f32; 16];
                // SAFETY: 16 floats each; compiled with the features `Avx2` needs.
                unsafe { exp_def(x86::Avx2::load(x.as_ptr(), 16)).store(o.as_mut_ptr(), 16) };
                o
            }
            #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
            fn avx512(x: &[f32; 16]) -> [f32; 16] {
                let mut o = [0f32; 16];
                // SAFETY: as above, for `Avx512`.
                unsafe { exp_def(x86::Avx512::load(x.as_ptr(), 16)).store(o.as_mut_ptr(), 16) };
                o
            }
            let xs: Vec<f32> = random(1 << 16, 9)
                .iter()
                .map(|x| x.abs() * -90.0)
                .chain([0.0, -0.0, -87.0, f32::NEG_INFINITY, -1e-30, -0.346_573_6])
                .collect();
            for x in xs.chunks(16) {
                let mut v = [0f32; 16];
                v[..x.len()].copy_from_slice(x);
                let want = v.map(softmax_exp);
                if SimdLevel::Avx2.is_available() {
                    assert_eq!(
                        // SAFETY: checked just above.
                        unsafe { avx2(&v) }.map(f32::to_bits),
                        want.map(f32::to_bits)
                    );
                }
                if SimdLevel::Avx512Vnni.is_available() {
                    assert_eq!(
                        // SAFETY: checked just above.
                        unsafe { avx512(&v) }.map(f32::to_bits),
                        want.map(f32::to_bits)
                    );
                }
            }
        }
    }

    /// `silu_mul` gives the same bits on every level (including ragged tails), and is within
    /// a few ulp of `g·u/(1 + e^−g)` computed in f64, over small, large, huge and special inputs.
    #[test]
    fn silu_mul_is_the_same_on_every_level_and_close_to_f64() {
        let mut g: Vec<f32> = random(1000, 7).iter().map(|x| x * 12.0).collect();
        g.extend([
            0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30, 0.5,
        ]);
        g.extend((0..200).map(|i| (i as f32 - 100.0) * 0.9));
        let u: Vec<f32> = random(g.len(), 8).iter().map(|x| x * 3.0 + 0.25).collect();
        let mut want = g.clone();
        silu_mul_lanes::<Portable>(&mut want, &u);
        for (i, (&x, &y)) in g.iter().zip(&u).enumerate() {
            let exact = f64::from(x) / (1.0 + (-f64::from(x)).exp()) * f64::from(y);
            let got = f64::from(want[i]);
            // Below g = −87 the exponential is flushed to 0 (results under 1e−35 in magnitude).
            let tol = 4.0 * f64::from(f32::EPSILON) * exact.abs() + 1e-33;
            assert!((got - exact).abs() <= tol, "g {x} u {y}: {got} vs {exact}");
        }
        let mut nan = [f32::NAN, 1.0];
        silu_mul_lanes::<Portable>(&mut nan, &[1.0, 1.0]);
        assert!(nan[0].is_nan());
        for level in super::super::available_levels() {
            for len in [g.len(), 17, 16, 3] {
                let mut got = g[..len].to_vec();
                silu_mul_on(level, &mut got, &u[..len]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want[..len]), "{level:?}, {len} elements");
            }
        }
    }

    /// `exp_sum` gives the same bits on every level, is within 1e-6 relative of the f64 sum of
    /// `exp((x − max)/t)`, counts −∞ elements as 0 and ignores the padding of a ragged tail.
    #[test]
    fn exp_sum_is_the_same_on_every_level_and_close_to_f64() {
        let mut x: Vec<f32> = random(128_256 + 7, 3).iter().map(|v| v * 9.0).collect();
        x[10] = f32::NEG_INFINITY;
        x[77] = 25.0;
        for len in [x.len(), 1000, 17, 3, 1] {
            let x = &x[..len];
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for t in [1.0f32, 0.7] {
                let exact: f64 = x
                    .iter()
                    .map(|&v| ((f64::from(v) - f64::from(max)) / f64::from(t)).exp())
                    .sum();
                let want = exp_sum_lanes::<Portable>(x, max, t);
                assert!(
                    ((want - exact) / exact).abs() < 1e-6,
                    "{len} elements, t {t}: {want} vs {exact}"
                );
                for level in super::super::available_levels() {
                    let got = exp_sum_on(level, x, max, t);
                    assert_eq!(got.to_bits(), want.to_bits(), "{level:?}, {len} elements");
                }
            }
        }
        assert!(exp_sum_lanes::<Portable>(&[1.0, f32::NAN], 1.0, 1.0).is_nan());
    }
}
