//! x86-64 kernels: AVX2 ([`avx2`]) and AVX-512 VNNI ([`avx512`]), plus the AVX2 helpers both use.
//!
//! Both levels keep the activations in their natural order and unpack the weights to match:
//! ternary codes stay *unsigned* bytes (0, 1, 2) so that `maddubs` (AVX2: u8 × i8 → i16 pairs)
//! and `vpdpbusd` (VNNI: u8 × i8 → i32 quads) take them directly against the signed int8
//! activations; `Σ(t − 1)·q = Σ t·q − Σq` with `Σq` precomputed per block (or per row for I2_S).
//!
//! Entry points are safe functions (`KernelFn`s) that call `#[target_feature]` code. They are
//! only handed out by `kernels::kernel_fn` for a level that `SimdLevel::is_available` confirmed,
//! which is what makes those calls sound.

pub(super) mod avx2;
pub(super) mod avx512;
pub(super) mod tile_epilogue;
pub(super) mod tile_i2s;
pub(super) mod tile_unpack;

use std::arch::x86_64::*;
use std::ops::Range;

use super::scalar::{block_epilogue, i2s_epilogue, i2s_factor};
use super::{token_rows, BlockActs, I8Acts, Out, QMatrix};

/// Unaligned 32-byte load.
///
/// # Safety
/// `p..p + 32` must be readable.
#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: per the caller's contract; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Prefetches the cache line at `p + ahead` into L1.
///
/// Decode walks 4 rows at a time, i.e. 4 short interleaved streams, which the hardware
/// prefetchers follow poorly; the kernels fetch the next row group's bytes themselves while
/// they work on the current one.
#[inline(always)]
fn prefetch(p: *const u8, ahead: usize) {
    // SAFETY: a prefetch is a hint that never faults, whatever the address; `wrapping_add`
    // forms the address without claiming it is in bounds.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast()) }
}

/// An f16 bit pattern to f32 with F16C (exact, as `half`; `half` itself checks for F16C at run
/// time on every call, which costs more than a whole block's dot product here).
#[target_feature(enable = "f16c")]
#[inline]
fn f16_to_f32(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The sum of the eight i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Eight lane sums at once: lane `i` of the result is the sum of the lanes of `v[i]`.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum8_i32(v: &[__m256i]) -> __m256i {
    let s01 = _mm256_hadd_epi32(v[0], v[1]);
    let s23 = _mm256_hadd_epi32(v[2], v[3]);
    let s45 = _mm256_hadd_epi32(v[4], v[5]);
    let s67 = _mm256_hadd_epi32(v[6], v[7]);
    // Per 128-bit half: lane i = that half's sum of v[i] (i < 4) or v[4 + i].
    let s0123 = _mm256_hadd_epi32(s01, s23);
    let s4567 = _mm256_hadd_epi32(s45, s67);
    let lo = _mm256_permute2x128_si256::<0x20>(s0123, s4567);
    let hi = _mm256_permute2x128_si256::<0x31>(s0123, s4567);
    _mm256_add_epi32(lo, hi)
}

/// The four lane sums of `v[0..4]` in one vector.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum4_i32(v: &[__m256i]) -> __m128i {
    let s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
}

/// Calls `$f::<R, T>(args…)` with `R` rows per group for a tile of `T` tokens: decode (1 token)
/// takes 4 rows at a time and 2 tokens 2 rows, so per-row overheads and reductions are shared
/// and there are enough independent accumulators; wider tiles take one row.
macro_rules! with_row_group {
    ($t:ident, $f:ident ( $($arg:expr),* $(,)? )) => {
        if $t == 1 {
            $f::<4, 1>($($arg),*)
        } else if $t == 2 {
            $f::<2, 2>($($arg),*)
        } else {
            $f::<1, $t>($($arg),*)
        }
    };
}
pub(super) use with_row_group;

/// `k·v` per lane; `k` is a constant at every call site (0, 1, 8 or 128), so this folds to a
/// shift instead of a 10-cycle `vpmulld`.
#[target_feature(enable = "avx2")]
#[inline]
fn times_k(v: __m256i, k: i32) -> __m256i {
    match k {
        0 => _mm256_setzero_si256(),
        1 => v,
        8 => _mm256_slli_epi32::<3>(v),
        128 => _mm256_slli_epi32::<7>(v),
        _ => _mm256_mullo_epi32(v, _mm256_set1_epi32(k)),
    }
}

/// The running block-scaled sums of an `R × T` tile, kept in registers: one vector across 8
/// tokens (R = 1, T = 8), one across 4 rows (R = 4, T = 1), scalars otherwise.
#[derive(Clone, Copy)]
struct BlockSums<const R: usize, const T: usize> {
    tokens8: __m256,
    rows4: __m128,
    each: [[f32; T]; R],
}

impl<const R: usize, const T: usize> BlockSums<R, T> {
    #[target_feature(enable = "avx2")]
    #[inline]
    fn new() -> Self {
        BlockSums {
            tokens8: _mm256_setzero_ps(),
            rows4: _mm_setzero_ps(),
            each: [[0.0; T]; R],
        }
    }

    /// Adds block `b`: `acc[i][t]` holds the raw integer dot `Σ code·q` in i32 lanes; the
    /// block's value is `Σ lanes − k·Σq`, and the sum becomes
    /// `block_epilogue(sum, value, d_x, d_w[i])`, exactly as in the scalar reference.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn add(
        &mut self,
        acc: &[[__m256i; T]; R],
        a: &BlockActs,
        (b, t0): (usize, usize),
        k: i32,
        d_w: &[f32; R],
    ) {
        if R == 1 && T == 8 {
            let at = b * a.n_tokens + t0;
            let (sums, ds) = (&a.sum[at..at + 8], &a.d[at..at + 8]);
            // SAFETY: `sums` and `ds` hold exactly 8 values each.
            let (s, d) = unsafe {
                (
                    _mm256_loadu_si256(sums.as_ptr().cast()),
                    _mm256_loadu_ps(ds.as_ptr()),
                )
            };
            let v = _mm256_sub_epi32(hsum8_i32(acc[0].as_slice()), times_k(s, k));
            let dd = _mm256_mul_ps(d, _mm256_set1_ps(d_w[0]));
            self.tokens8 = _mm256_add_ps(self.tokens8, _mm256_mul_ps(_mm256_cvtepi32_ps(v), dd));
        } else if R == 4 && T == 1 {
            let rows: &[[__m256i; T]] = acc;
            let v = hsum4_i32(&[rows[0][0], rows[1][0], rows[2][0], rows[3][0]]);
            let v = _mm_sub_epi32(v, _mm_set1_epi32(k.wrapping_mul(a.sum(b, t0))));
            let dw: &[f32] = d_w;
            let dw = _mm_set_ps(dw[3], dw[2], dw[1], dw[0]);
            let dd = _mm_mul_ps(_mm_set1_ps(a.d(b, t0)), dw);
            self.rows4 = _mm_add_ps(self.rows4, _mm_mul_ps(_mm_cvtepi32_ps(v), dd));
        } else {
            for i in 0..R {
                for t in 0..T {
                    let sumi = hsum_i32(acc[i][t]).wrapping_sub(k.wrapping_mul(a.sum(b, t0 + t)));
                    self.each[i][t] = block_epilogue(self.each[i][t], sumi, a.d(b, t0 + t), d_w[i]);
                }
            }
        }
    }

    /// The sums as `[row][token]`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn get(&self) -> [[f32; T]; R] {
        let mut out = self.each;
        let f = out.as_flattened_mut();
        if R == 1 && T == 8 {
            assert_eq!(f.len(), 8);
            // SAFETY: `f` holds 8 values.
            unsafe { _mm256_storeu_ps(f.as_mut_ptr(), self.tokens8) };
        } else if R == 4 && T == 1 {
            assert_eq!(f.len(), 4);
            // SAFETY: `f` holds 4 values.
            unsafe { _mm_storeu_ps(f.as_mut_ptr(), self.rows4) };
        }
        out
    }
}

/// The row groups a kernel walks, computed on demand (no list is built per call): `R` streams
/// per thread (groups of rows from `R` far-apart runs, see [`Groups::get`]) for decode and for
/// the float kernels at any token count, otherwise `R` consecutive rows.
pub(super) struct Groups<'w, const R: usize> {
    data: &'w [u8],
    row_bytes: usize,
    rows: Range<usize>,
    /// Rows per stream (0: consecutive rows).
    stream_len: usize,
}

/// One row group: its rows' indices, how many are real (a short last group repeats its last
/// row, and only the real ones are written), and the rows' bytes.
type Group<'w, const R: usize> = ([usize; R], usize, [&'w [u8]; R]);

impl<'w, const R: usize> Groups<'w, R> {
    /// Streams when `streams`, consecutive rows otherwise.
    pub(super) fn new(w: &QMatrix<'w>, rows: Range<usize>, streams: bool) -> Self {
        assert!(
            rows.end * w.row_bytes() <= w.data.len(),
            "rows outside the matrix"
        );
        Groups {
            data: w.data,
            row_bytes: w.row_bytes(),
            stream_len: if streams { rows.len() / R } else { 0 },
            rows,
        }
    }

    /// Number of groups.
    fn len(&self) -> usize {
        let q = self.stream_len;
        q + (self.rows.len() - R * q).div_ceil(R)
    }

    /// Group `g`: with streams, row `k` of each of the `R` runs of `⌊len/R⌋` rows for
    /// `g = k < ⌊len/R⌋` (a group's rows are then `R` sequential streams, which keeps more cache
    /// misses in flight than one stream of consecutive rows), then the rows past `R·⌊len/R⌋`
    /// consecutively; without, rows `R·g..R·g + R`.
    #[inline(always)]
    fn get(&self, g: usize) -> Group<'w, R> {
        let (q, rb, data) = (self.stream_len, self.row_bytes, self.data);
        assert!(g < self.len(), "row group {g} out of range");
        // SAFETY: every row index below is in `self.rows` (g < len()), whose bytes `new` checked
        // to be inside `data`. (One check per group instead of one per row: per-row bounds
        // checks showed up in decode profiles.)
        let row = |r: usize| unsafe { std::slice::from_raw_parts(data.as_ptr().add(r * rb), rb) };
        if g < q {
            let idx: [usize; R] = std::array::from_fn(|j| self.rows.start + j * q + g);
            (idx, R, idx.map(row))
        } else {
            let r = self.rows.start + R * q + R * (g - q);
            let n = (self.rows.end - r).min(R);
            let idx: [usize; R] = std::array::from_fn(|i| r + i.min(n - 1));
            (std::array::from_fn(|i| r + i), n, idx.map(row))
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = Group<'w, R>> + '_ {
        (0..self.len()).map(|g| self.get(g))
    }
}

/// The row groups a kernel walks: for decode (one token, memory-bound) `R` streams per thread,
/// otherwise consecutive rows (see [`Groups`]).
fn kernel_groups<'w, const R: usize, const T: usize>(
    w: &QMatrix<'w>,
    rows: Range<usize>,
) -> Groups<'w, R> {
    Groups::new(w, rows, T == 1)
}

/// Activation bytes a token tile keeps in L1 while it walks one column segment of its rows.
const L1_ACT_BYTES: usize = 16 << 10;

/// Column segments for a tile of `t` tokens, in units of `unit_cols` columns (an I2_S chunk or
/// a block): each segment's activations for the tile fit in [`L1_ACT_BYTES`], so rows longer
/// than that (the FFN down matrix's 6912) don't stream the activations from L2 once per row.
/// The integer results do not depend on the split; the float running sums continue across it.
fn segments(units: usize, unit_cols: usize, t: usize) -> impl Iterator<Item = Range<usize>> {
    let per = (L1_ACT_BYTES / (t * unit_cols)).max(1);
    (0..units)
        .step_by(per)
        .map(move |u| u..(u + per).min(units))
}

/// The I2_S driver: `dot(rows, q, chunks)` gives `Σ code·q` of each row of a group over the
/// 128-element chunks `chunks`; the sums of all segments then go through `i2s_epilogue`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn i2s_driver<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &I8Acts,
    rows: Range<usize>,
    out: &Out,
    dot: impl Fn(&[&[u8]; R], &[&[i8]; T], Range<usize>) -> [[i32; T]; R],
) {
    let q: [&[i8]; T] = token_rows(|t| a.row(t), t0);
    let w_scale = w.i2s_scale();
    let k: [f32; T] = std::array::from_fn(|t| i2s_factor(a.scale[t0 + t], w_scale));
    let groups = kernel_groups::<R, T>(w, rows);
    let write = |(r, n, _): &Group<R>, s: &[[i32; T]; R]| {
        for i in 0..*n {
            for t in 0..T {
                let (tt, y) = (t0 + t, s[i][t]);
                // SAFETY: this task owns rows `rows` (see `matmul_with`).
                unsafe { out.set(tt, r[i], i2s_epilogue(y, a.sum[tt], k[t])) };
            }
        }
    };
    let units = w.cols / 128;
    let segs: Vec<Range<usize>> = segments(units, 128, T).collect();
    if T == 1 && segs.len() == 1 {
        // Decode with one segment: each group's sums are final at once, so no list of groups
        // or of sums is built. (Several tokens keep the buffered loop below: the direct one
        // measured ~5 % slower on the 8-row Q6_K head.)
        for gi in 0..groups.len() {
            let g = groups.get(gi);
            let s = dot(&g.2, &q, 0..units);
            write(&g, &s);
        }
        return;
    }
    let groups: Vec<Group<R>> = groups.iter().collect();
    let mut sums = vec![[[0i32; T]; R]; groups.len()];
    for cs in segs {
        for (g, sum) in groups.iter().zip(sums.iter_mut()) {
            let s = dot(&g.2, &q, cs.clone());
            for i in 0..R {
                for t in 0..T {
                    sum[i][t] = sum[i][t].wrapping_add(s[i][t]);
                }
            }
        }
    }
    for (g, s) in groups.iter().zip(&sums) {
        write(g, s);
    }
}

/// Runs `block_dot` over the blocks of every row in `rows`, `R` rows at a time, for the tokens
/// `t0..t0 + T`. `block_dot(blks, b, q, acc)` writes the raw i32-lane dots of block `b` of each
/// row (whose `bbytes` bytes start at `blks[i]`) with each token; `k` and `d_at` are the `Σq`
/// multiplier and the f16 scale's offset in the block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn block_tile<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
    (bsize, bbytes, d_at, k): (usize, usize, usize, i32),
    block_dot: impl Fn(&[*const u8; R], usize, &[&[i8]; T], &mut [[__m256i; T]; R]),
) {
    let q: [&[i8]; T] = token_rows(|t| a.row(t), t0);
    let nb = w.cols / bsize;
    for q in &q {
        assert_eq!(q.len(), nb * bsize);
    }
    assert!(d_at + 2 <= bbytes);
    assert_eq!(w.row_bytes(), nb * bbytes);
    let ahead = R * nb * bbytes;
    // Cache lines to fetch per block: two for the small blocks (≤ 66 bytes, so a block and the
    // start of the next), four for Q6_K's 210 bytes (256 bytes per 210 advanced: every line).
    let lines = bbytes.div_ceil(64).max(2);
    // The blocks `$bs` of the rows `$wr` into `$sums`.
    macro_rules! blocks {
        ($wr:expr, $bs:expr, $sums:expr) => {
            for b in $bs {
                // SAFETY: b < nb and every row holds nb blocks of `bbytes` (asserted above), so
                // each pointer has `bbytes` readable bytes, the f16 scale among them.
                let (blks, d_w) = unsafe {
                    let blks: [*const u8; R] =
                        std::array::from_fn(|i| $wr[i].as_ptr().add(b * bbytes));
                    let d_w: [f32; R] = std::array::from_fn(|i| {
                        f16_to_f32(
                            std::ptr::read_unaligned(blks[i].add(d_at).cast::<u16>()).to_le(),
                        )
                    });
                    (blks, d_w)
                };
                for &p in &blks {
                    for l in 0..lines {
                        prefetch(p, ahead + 64 * l);
                    }
                }
                let mut acc = [[_mm256_setzero_si256(); T]; R];
                block_dot(&blks, b, &q, &mut acc);
                $sums.add(&acc, a, (b, t0), k, &d_w);
            }
        };
    }
    let write = |(r, n, _): &Group<R>, sums: &BlockSums<R, T>| {
        let y = sums.get();
        for i in 0..*n {
            for t in 0..T {
                // SAFETY: this task owns rows `rows`.
                unsafe { out.set(t0 + t, r[i], y[i][t]) };
            }
        }
    };
    let groups = kernel_groups::<R, T>(w, rows);
    if T == 1 && segments(nb, bsize, T).count() == 1 {
        // Decode with one segment: each group's sums are final at once, so no list of groups
        // or of sums is built. (Several tokens keep the buffered loop below: the direct one
        // measured ~5 % slower on the 8-row Q6_K head.)
        for gi in 0..groups.len() {
            let g = groups.get(gi);
            let mut sums = BlockSums::<R, T>::new();
            blocks!(g.2, 0..nb, sums);
            write(&g, &sums);
        }
        return;
    }
    let groups: Vec<Group<R>> = groups.iter().collect();
    let mut sums = vec![BlockSums::<R, T>::new(); groups.len()];
    for bs in segments(nb, bsize, T) {
        for ((_, _, wr), sums) in groups.iter().zip(sums.iter_mut()) {
            blocks!(wr, bs.clone(), sums);
        }
    }
    for (g, sums) in groups.iter().zip(&sums) {
        write(g, sums);
    }
}

/// `v·3` in every byte, modulo 256.
#[target_feature(enable = "avx2")]
#[inline]
fn mul3(v: __m256i) -> __m256i {
    _mm256_add_epi8(_mm256_add_epi8(v, v), v)
}

/// The top trit of every byte read as a base-3 fraction: `(v·3) >> 8` = `[v ≥ 86] + [v ≥ 171]`.
#[target_feature(enable = "avx2")]
#[inline]
fn top_trit(v: __m256i) -> __m256i {
    let ge86 = _mm256_cmpeq_epi8(_mm256_max_epu8(v, _mm256_set1_epi8(86)), v);
    let ge171 = _mm256_cmpeq_epi8(_mm256_max_epu8(v, _mm256_set1_epi8(171u8 as i8)), v);
    _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge86, ge171))
}

/// One TQ1_0 block's bytes shifted so that the top trit of byte lane `l` of vector `k` is the
/// trit of element `32k + l` (apply [`top_trit`] to get the codes).
///
/// Vectors 0..5 are `qs[0..32]·3^n` (elements `32n + m`). Vectors 5 and 6 are `qs[32..48]·3^n`
/// for n = 0, 1 and 2, 3 side by side (elements `160 + 16n + m`). Vector 7 is `qs[32..48]·81`
/// (elements 224..240) next to the four `qh` bytes times 1, 3, 9, 27 (elements `240 + 4n + j`).
///
/// # Safety
/// `blk..blk + 52` must be readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tq1_0_shifted(blk: *const u8) -> [__m256i; 8] {
    // SAFETY: bytes 0..52 of the block are readable per the contract.
    let (x, y) = unsafe {
        let qh = i32::from_le_bytes(std::ptr::read_unaligned(blk.add(48).cast::<[u8; 4]>()));
        let lo = _mm_loadu_si128(blk.add(32).cast());
        (
            load(blk),
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), _mm_set1_epi32(qh)),
        )
    };
    let (x3, y3) = (mul3(x), mul3(y));
    let (x9, y9) = (mul3(x3), mul3(y3));
    let (x27, y27) = (mul3(x9), mul3(y9));
    let (x81, y81) = (mul3(x27), mul3(y27));
    let v7 = _mm256_blend_epi32::<0x10>(y81, y);
    let v7 = _mm256_blend_epi32::<0x20>(v7, y3);
    let v7 = _mm256_blend_epi32::<0x40>(v7, y9);
    let v7 = _mm256_blend_epi32::<0x80>(v7, y27);
    [
        x,
        x3,
        x9,
        x27,
        x81,
        _mm256_permute2x128_si256::<0x20>(y, y3),
        _mm256_permute2x128_si256::<0x20>(y9, y27),
        v7,
    ]
}

/// The 6-bit codes (0..=63) of one half (128 elements) of a Q6_K super-block, as four vectors
/// of 32: vector `k` holds elements `128h + 32k + 0..32` (the layout of
/// [`crate::formats::q6_k`]).
///
/// # Safety
/// `blk..blk + 210` must be readable, and `h < 2`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn q6_k_codes(blk: *const u8, h: usize) -> [__m256i; 4] {
    // SAFETY: ql (64h..64h + 64) and qh (128 + 32h..160 + 32h) are inside the block.
    let (ql0, ql1, qh) = unsafe {
        (
            load(blk.add(64 * h)),
            load(blk.add(64 * h + 32)),
            load(blk.add(128 + 32 * h)),
        )
    };
    let (m4, m30) = (_mm256_set1_epi8(15), _mm256_set1_epi8(0x30));
    [
        _mm256_or_si256(
            _mm256_and_si256(ql0, m4),
            _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(ql1, m4),
            _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
            _mm256_and_si256(qh, m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
            _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
        ),
    ]
}

/// `32 · Σ_g sc_g · Σq_g` of one Q6_K block and token, spread over 8 i32 lanes: the offset
/// that turns `Σ sc·code·q` into `Σ sc·(code − 32)·q`. `sc16` holds the 16 group scales as
/// i16, `group_sums` the token's 16 group sums.
#[target_feature(enable = "avx2")]
#[inline]
fn q6_k_offset(sc16: __m256i, group_sums: &[i16; 16]) -> __m256i {
    // SAFETY: `group_sums` is 32 readable bytes.
    let g = unsafe { _mm256_loadu_si256(group_sums.as_ptr().cast()) };
    _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, g))
}

/// Float weight kinds for the float kernels' const parameter.
const F32_W: u8 = 0;
const F16_W: u8 = 1;
const BF16_W: u8 = 2;

/// Element `i` of a float weight row, widened (the scalar tail of the float kernels).
#[inline]
fn float_weight<const K: u8>(row: &[u8], i: usize) -> f32 {
    match K {
        F32_W => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
        F16_W => half::f16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32(),
        _ => f32::from_bits(u32::from(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])) << 16),
    }
}
