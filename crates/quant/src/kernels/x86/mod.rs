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

use std::arch::x86_64::*;
use std::ops::Range;

use super::scalar::block_epilogue;
use super::{token_rows, BlockActs, Out, QMatrix};

/// Unaligned 32-byte load.
///
/// # Safety
/// `p..p + 32` must be readable.
#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: per the caller's contract; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
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

/// Finishes block `b` of a block-scaled dot for the tokens `t0..t0 + T`: `acc[t]` holds the
/// raw integer dot `Σ code·q` in i32 lanes; the block's value is `Σ lanes − k·Σq`, and
/// `sumf[t] = block_epilogue(sumf[t], value, d_x, d_w)` exactly as the scalar reference does.
/// With 8 tokens the reduction and the epilogue run across tokens in one vector each.
#[target_feature(enable = "avx2")]
#[inline]
fn finish_block<const T: usize>(
    acc: &[__m256i; T],
    a: &BlockActs,
    b: usize,
    t0: usize,
    k: i32,
    d_w: f32,
    sumf: &mut [f32; T],
) {
    if T == 8 {
        let at = b * a.n_tokens + t0;
        let sums = &a.sum[at..at + 8];
        let ds = &a.d[at..at + 8];
        // SAFETY: `sums`, `ds` and `sumf` hold exactly 8 values each.
        unsafe {
            let v = hsum8_i32(acc);
            let v = _mm256_sub_epi32(
                v,
                _mm256_mullo_epi32(_mm256_loadu_si256(sums.as_ptr().cast()), _mm256_set1_epi32(k)),
            );
            let dd = _mm256_mul_ps(_mm256_loadu_ps(ds.as_ptr()), _mm256_set1_ps(d_w));
            let f = _mm256_add_ps(
                _mm256_loadu_ps(sumf.as_ptr()),
                _mm256_mul_ps(_mm256_cvtepi32_ps(v), dd),
            );
            _mm256_storeu_ps(sumf.as_mut_ptr(), f);
        }
    } else {
        for t in 0..T {
            let sumi = hsum_i32(acc[t]).wrapping_sub(k.wrapping_mul(a.sum(b, t0 + t)));
            sumf[t] = block_epilogue(sumf[t], sumi, a.d(b, t0 + t), d_w);
        }
    }
}

/// Runs `block_dot` over the blocks of every row in `rows` for the tokens `t0..t0 + T`.
/// `block_dot(blk, b, q, acc)` writes the raw i32-lane dot of block `b` (bytes `blk`) for each
/// token; `k` and `d_at` are the `Σq` multiplier and the f16 scale's offset in the block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn block_tile<const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
    (bsize, bbytes, d_at, k): (usize, usize, usize, i32),
    block_dot: impl Fn(&[u8], usize, &[&[i8]; T], &mut [__m256i; T]),
) {
    let q: [&[i8]; T] = token_rows(|t| a.row(t), t0);
    let nb = w.cols / bsize;
    for q in &q {
        assert_eq!(q.len(), nb * bsize);
    }
    for r in rows {
        let wr = w.row(r);
        let mut sumf = [0.0f32; T];
        for (b, blk) in wr.chunks_exact(bbytes).enumerate() {
            let d_w = half::f16::from_le_bytes([blk[d_at], blk[d_at + 1]]).to_f32();
            let mut acc = [_mm256_setzero_si256(); T];
            block_dot(blk, b, &q, &mut acc);
            finish_block::<T>(&acc, a, b, t0, k, d_w, &mut sumf);
        }
        for (i, &s) in sumf.iter().enumerate() {
            // SAFETY: this task owns rows `rows`.
            unsafe { out.set(t0 + i, r, s) };
        }
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
