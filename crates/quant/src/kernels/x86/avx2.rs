//! AVX2 kernels (+ FMA, F16C): `maddubs` on unsigned codes × int8 activations.
//!
//! Every kernel walks a row chunk once per tile of up to 8 tokens; per weight block it unpacks
//! the codes once into registers and multiplies them with each token of the tile. Decode tiles
//! (1 token) take 4 rows per step instead (see `with_row_group!`), the float kernels a 3-row ×
//! 3-token register tile.
//!
//! `maddubs` sums pairs into i16 lanes, so the integer kernels bound how long they stay in i16:
//! a code is at most 3 (I2_S/TQ2_0 2-bit fields, even the never-written 3) or 15 (Q4_0) and an
//! activation at most 128 in magnitude, so one `maddubs` lane is within ±768 for 2-bit codes
//! and four of them (one 32-byte I2_S chunk) within ±3072. I2_S widens to i32 every 8 chunks
//! (±24576 < 32767), the block formats after every block.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{
    block_tile, float_weight, hsum_i32, i2s_driver, load, prefetch, q6_k_codes, q6_k_offset,
    top_trit, tq1_0_shifted, with_row_group, BF16_W, F16_W, F32_W,
};
use crate::kernels::{
    for_token_tiles, token_rows, Acts, BlockActs, I8Acts, KernelFn, Out, QMatrix,
};
use crate::GgmlType;

pub(in crate::kernels) fn kernel(ty: GgmlType) -> KernelFn {
    match ty {
        GgmlType::I2_S => i2s,
        GgmlType::TQ2_0 => tq2_0,
        GgmlType::TQ1_0 => tq1_0,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q6_K => q6_k,
        GgmlType::F32 => f32_weights,
        GgmlType::F16 => f16_weights,
        GgmlType::BF16 => bf16_weights,
        _ => unreachable!("no kernel for {ty}: QMatrix::validate admits only KERNEL_TYPES"),
    }
}

// The safe entry points. SAFETY (for every `unsafe` call below): `kernel` is only called by
// `kernels::kernel_fn` for `SimdLevel::Avx2`, after `matmul_with` checked that the CPU has AVX2,
// FMA and F16C.

fn i2s(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above: the CPU has AVX2.
    unsafe { i2s_avx2(w, acts.i8(), rows, out) }
}
fn tq2_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { tq2_0_avx2(w, acts.blocks(), rows, out) }
}
fn tq1_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { tq1_0_avx2(w, acts.blocks(), rows, out) }
}
fn q8_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { q8_0_avx2(w, acts.blocks(), rows, out) }
}
fn q4_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { q4_0_avx2(w, acts.blocks(), rows, out) }
}
fn q6_k(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { q6_k_avx2(w, acts.blocks(), rows, out) }
}
fn f32_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { float_avx2::<F32_W>(w, acts.f32(), rows, out) }
}
fn f16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { float_avx2::<F16_W>(w, acts.f32(), rows, out) }
}
fn bf16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { float_avx2::<BF16_W>(w, acts.f32(), rows, out) }
}

/// `Σ_j maddubs(codes[j], q[32j..32j + 32])` in i16 lanes.
///
/// # Safety
/// `q..q + 128` must be readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot4(codes: &[__m256i; 4], q: *const i8) -> __m256i {
    // SAFETY: the four 32-byte loads stay inside `q..q + 128`.
    unsafe {
        let p0 = _mm256_maddubs_epi16(codes[0], load(q.cast()));
        let p1 = _mm256_maddubs_epi16(codes[1], load(q.add(32).cast()));
        let p2 = _mm256_maddubs_epi16(codes[2], load(q.add(64).cast()));
        let p3 = _mm256_maddubs_epi16(codes[3], load(q.add(96).cast()));
        _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3))
    }
}

// ---------------------------------------------------------------------------------------------
// I2_S: 32 bytes hold 128 weights; byte g has elements g, g+32, g+64, g+96 in bits 7:6 … 1:0.

#[target_feature(enable = "avx2,fma,f16c")]
fn i2s_avx2(w: &QMatrix, a: &I8Acts, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.scale.len(), i2s_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn i2s_tile<const T: usize>(t0: usize, w: &QMatrix, a: &I8Acts, rows: Range<usize>, out: &Out) {
    with_row_group!(T, i2s_rows(t0, w, a, rows, out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn i2s_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &I8Acts,
    rows: Range<usize>,
    out: &Out,
) {
    i2s_driver::<R, T>(t0, w, a, rows, out, |wr, q, cs| i2s_dot::<R, T>(wr, q, cs));
}

/// `Σ code·q` of `R` I2_S rows against `T` tokens over the 128-element chunks `cs`.
#[target_feature(enable = "avx2")]
fn i2s_dot<const R: usize, const T: usize>(
    w: &[&[u8]; R],
    q: &[&[i8]; T],
    cs: Range<usize>,
) -> [[i32; T]; R] {
    let chunks = w[0].len() / 32;
    assert!(cs.end <= chunks);
    for w in w {
        assert_eq!(w.len(), 32 * chunks);
    }
    for q in q {
        assert!(q.len() >= 128 * chunks);
    }
    // The same row of the next group (rows are contiguous).
    let ahead = R * 32 * chunks;
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc32 = [[_mm256_setzero_si256(); T]; R];
    let mut c0 = cs.start;
    while c0 < cs.end {
        let c1 = cs.end.min(c0 + 8);
        let mut acc16 = [[_mm256_setzero_si256(); T]; R];
        for c in c0..c1 {
            for i in 0..R {
                if c % 2 == 0 {
                    prefetch(w[i].as_ptr(), 32 * c + ahead);
                }
                // SAFETY: c < cs.end ≤ chunks, so bytes 32c..32c + 32 are inside each row.
                let x = unsafe { load(w[i].as_ptr().add(32 * c)) };
                let codes = [
                    _mm256_and_si256(_mm256_srli_epi16::<6>(x), mask),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(x), mask),
                    _mm256_and_si256(x, mask),
                ];
                for t in 0..T {
                    // SAFETY: every token row holds at least 128·chunks codes (asserted above).
                    let d = unsafe { dot4(&codes, q[t].as_ptr().add(128 * c)) };
                    acc16[i][t] = _mm256_add_epi16(acc16[i][t], d);
                }
            }
        }
        for i in 0..R {
            for t in 0..T {
                acc32[i][t] = _mm256_add_epi32(acc32[i][t], _mm256_madd_epi16(acc16[i][t], ones));
            }
        }
        c0 = c1;
    }
    let mut s = [[0i32; T]; R];
    for i in 0..R {
        for t in 0..T {
            s[i][t] = hsum_i32(acc32[i][t]);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Block formats: per block an exact i32 dot for each row and token, then `finish_block` (in
// `block_tile`).

#[target_feature(enable = "avx2,fma,f16c")]
fn tq2_0_avx2(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, tq2_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tq2_0_tile<const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    with_row_group!(T, tq2_0_rows(t0, w, a, rows, out));
}

/// TQ2_0: element `128h + 32n + l` is bits `2n+1:2n` of byte `32h + l`.
#[target_feature(enable = "avx2,fma,f16c")]
fn tq2_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    block_tile::<R, T>(t0, w, a, rows, out, (256, 66, 64, 1), |blks, b, q, acc| {
        for i in 0..R {
            let mut acc16 = [_mm256_setzero_si256(); T];
            for h in 0..2 {
                // SAFETY: `blks[i]` points at a whole 66-byte block (block_tile), so bytes
                // 32h..32h + 32 (h < 2) are readable.
                let x = unsafe { load(blks[i].add(32 * h)) };
                // One code vector live at a time keeps 8 tokens' accumulators in registers.
                let shifted = [
                    x,
                    _mm256_srli_epi16::<2>(x),
                    _mm256_srli_epi16::<4>(x),
                    _mm256_srli_epi16::<6>(x),
                ];
                for (n, &v) in shifted.iter().enumerate() {
                    let codes = _mm256_and_si256(v, mask);
                    for t in 0..T {
                        // SAFETY: token rows hold 256·nb codes (asserted in block_tile), b < nb.
                        let x =
                            unsafe { load(q[t].as_ptr().add(256 * b + 128 * h + 32 * n).cast()) };
                        acc16[t] = _mm256_add_epi16(acc16[t], _mm256_maddubs_epi16(codes, x));
                    }
                }
            }
            for t in 0..T {
                acc[i][t] = _mm256_madd_epi16(acc16[t], ones);
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tq1_0_avx2(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, tq1_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tq1_0_tile<const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    with_row_group!(T, tq1_0_rows(t0, w, a, rows, out));
}

/// TQ1_0: the 8 code vectors of [`tq1_0_shifted`] match the activations' 32-element groups.
#[target_feature(enable = "avx2,fma,f16c")]
fn tq1_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let ones = _mm256_set1_epi16(1);
    block_tile::<R, T>(t0, w, a, rows, out, (256, 54, 52, 1), |blks, b, q, acc| {
        for i in 0..R {
            // SAFETY: `blks[i]` points at a whole 54-byte block (block_tile).
            let v = unsafe { tq1_0_shifted(blks[i]) };
            let mut acc16 = [_mm256_setzero_si256(); T];
            for (k, &v) in v.iter().enumerate() {
                let codes = top_trit(v);
                for t in 0..T {
                    // SAFETY: token rows hold 256·nb codes, b < nb, k < 8.
                    let x = unsafe { load(q[t].as_ptr().add(256 * b + 32 * k).cast()) };
                    acc16[t] = _mm256_add_epi16(acc16[t], _mm256_maddubs_epi16(codes, x));
                }
            }
            for t in 0..T {
                acc[i][t] = _mm256_madd_epi16(acc16[t], ones);
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_avx2(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, q8_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_tile<const T: usize>(t0: usize, w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    with_row_group!(T, q8_0_rows(t0, w, a, rows, out));
}

/// Q8_0: `|w| · sign(q, w)` turns signed × signed into `maddubs`' unsigned × signed. The
/// activations are in -127..=127, so negating them never overflows; `|−128|` read as the
/// unsigned byte 128 is exact too.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let ones = _mm256_set1_epi16(1);
    block_tile::<R, T>(t0, w, a, rows, out, (32, 34, 0, 0), |blks, b, q, acc| {
        for i in 0..R {
            // SAFETY: `blks[i]` points at a whole 34-byte block (block_tile); codes are bytes 2..34.
            let wq = unsafe { load(blks[i].add(2)) };
            let aw = _mm256_abs_epi8(wq);
            for t in 0..T {
                // SAFETY: token rows hold 32·nb codes, b < nb.
                let x = unsafe { load(q[t].as_ptr().add(32 * b).cast()) };
                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, wq));
                acc[i][t] = _mm256_madd_epi16(p, ones);
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_avx2(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, q4_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_tile<const T: usize>(t0: usize, w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    with_row_group!(T, q4_0_rows(t0, w, a, rows, out));
}

/// Q4_0: nibbles 0..=15 as unsigned codes; the −8 comes off with `8·Σq`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let ones = _mm256_set1_epi16(1);
    let low = _mm_set1_epi8(15);
    block_tile::<R, T>(t0, w, a, rows, out, (32, 18, 0, 8), |blks, b, q, acc| {
        for i in 0..R {
            // SAFETY: `blks[i]` points at a whole 18-byte block (block_tile); nibbles are bytes 2..18.
            let x = unsafe { _mm_loadu_si128(blks[i].add(2).cast()) };
            let codes = _mm256_set_m128i(
                _mm_and_si128(_mm_srli_epi16::<4>(x), low),
                _mm_and_si128(x, low),
            );
            for t in 0..T {
                // SAFETY: token rows hold 32·nb codes, b < nb.
                let x = unsafe { load(q[t].as_ptr().add(32 * b).cast()) };
                acc[i][t] = _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), ones);
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_avx2(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, q6_k_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_tile<const T: usize>(t0: usize, w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    with_row_group!(T, q6_k_rows(t0, w, a, rows, out));
}

/// `_mm_shuffle_epi8` masks that put group scale `2v` in bytes 0..8 and `2v + 1` in 8..16.
const Q6_K_SCALE_PAIRS: [[u8; 16]; 8] = {
    let mut m = [[0u8; 16]; 8];
    let mut v = 0;
    while v < 8 {
        let mut i = 0;
        while i < 16 {
            m[v][i] = (2 * v + i / 8) as u8;
            i += 1;
        }
        v += 1;
    }
    m
};

/// Q6_K: `maddubs(code, q)` (codes 0..=63 unsigned: a pair is ≤ 2·63·128 = 16128, no i16
/// overflow), `madd` with the group scale of each 16 lanes into i32, then
/// `− 32·Σ_g sc_g·Σq_g` from the activations' group sums.
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    // SAFETY: the masks are 16 readable bytes each.
    let pairs: [__m128i; 8] =
        std::array::from_fn(|v| unsafe { _mm_loadu_si128(Q6_K_SCALE_PAIRS[v].as_ptr().cast()) });
    block_tile::<R, T>(
        t0,
        w,
        a,
        rows,
        out,
        (256, 210, 208, 0),
        |blks, b, q, acc| {
            for i in 0..R {
                // SAFETY: `blks[i]` points at a whole 210-byte block (block_tile); the group
                // scales are bytes 192..208.
                let sc8 = unsafe { _mm_loadu_si128(blks[i].add(192).cast()) };
                let sc16 = _mm256_cvtepi8_epi16(sc8);
                let mut acc32: [__m256i; T] = std::array::from_fn(|t| {
                    _mm256_sub_epi32(
                        _mm256_setzero_si256(),
                        q6_k_offset(sc16, a.group_sums(b, t0 + t)),
                    )
                });
                for h in 0..2 {
                    // SAFETY: as above, h < 2.
                    let codes = unsafe { q6_k_codes(blks[i], h) };
                    for (k, &c) in codes.iter().enumerate() {
                        let v = 4 * h + k;
                        let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pairs[v]));
                        for t in 0..T {
                            // SAFETY: token rows hold 256·nb codes (asserted in block_tile), b < nb.
                            let x = unsafe { load(q[t].as_ptr().add(256 * b + 32 * v).cast()) };
                            let p = _mm256_maddubs_epi16(c, x);
                            acc32[t] = _mm256_add_epi32(acc32[t], _mm256_madd_epi16(p, scale));
                        }
                    }
                }
                acc[i] = acc32;
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// F32 / F16 / BF16: widen 8 weights at a time once, FMA them into up to 4 tokens.

/// 8 weights from element `i` of a row, widened to f32.
///
/// # Safety
/// The row must hold elements `i..i + 8`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_w8<const K: u8>(row: *const u8, i: usize) -> __m256 {
    // SAFETY: per the contract, the 8 elements (32 or 16 bytes) are readable.
    unsafe {
        match K {
            F32_W => _mm256_loadu_ps(row.add(4 * i).cast()),
            F16_W => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i).cast())),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(row.add(2 * i).cast()),
            ))),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn float_avx2<const K: u8>(w: &QMatrix, x: &[f32], rows: Range<usize>, out: &Out) {
    for_token_tiles!(3, x.len() / w.cols, float_tile[K,](w, x, rows.clone(), out));
}

/// A 3-row × T-token register tile (9 accumulators for 3 tokens, which with the operands fits
/// the 16 registers without spills): each 8-column step widens 3 weight vectors and loads T
/// activation vectors once for 3·T FMAs, so neither the weight conversion nor the activation
/// traffic (L2-resident for long rows) limits the FMA rate.
#[target_feature(enable = "avx2,fma,f16c")]
fn float_tile<const K: u8, const T: usize>(
    t0: usize,
    w: &QMatrix,
    x: &[f32],
    rows: Range<usize>,
    out: &Out,
) {
    const R: usize = 3;
    let cols = w.cols;
    let xs: [&[f32]; T] = token_rows(|t| &x[t * cols..(t + 1) * cols], t0);
    let n8 = cols / 8 * 8;
    let wbytes = if K == F32_W { 4 } else { 2 };
    // R row streams (as in the AVX-512 kernel), each stream's next row asked for a cache line
    // per 64 bytes.
    let ahead = cols * wbytes;
    for (r, n, wr) in super::Groups::<R>::new(w, rows, true).iter() {
        for w in &wr {
            assert_eq!(w.len(), cols * wbytes);
        }
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut i = 0;
        while i < n8 {
            if (i * wbytes).is_multiple_of(64) {
                for k in 0..R {
                    prefetch(wr[k].as_ptr(), i * wbytes + ahead);
                }
            }
            // SAFETY: i + 8 ≤ cols; the rows (asserted) and the token rows hold `cols` values.
            unsafe {
                let xv: [__m256; T] =
                    std::array::from_fn(|t| _mm256_loadu_ps(xs[t].as_ptr().add(i)));
                for k in 0..R {
                    let wv = load_w8::<K>(wr[k].as_ptr(), i);
                    for t in 0..T {
                        acc[k][t] = _mm256_fmadd_ps(wv, xv[t], acc[k][t]);
                    }
                }
            }
            i += 8;
        }
        for k in 0..n {
            for t in 0..T {
                let mut s = hsum_ps(acc[k][t]);
                for j in n8..cols {
                    s += float_weight::<K>(wr[k], j) * xs[t][j];
                }
                // SAFETY: this task owns rows `rows`.
                unsafe { out.set(t0 + t, r[k], s) };
            }
        }
    }
}
