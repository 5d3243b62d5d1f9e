//! AVX-512 VNNI kernels: `vpdpbusd` multiplies unsigned codes by int8 activations and adds
//! groups of four straight into i32 lanes, so there is no i16 stage to bound.
//!
//! The 2-bit formats load one 32-byte group (128 weights), broadcast it to both halves of a
//! zmm register and shift each half by its own amount (`vpsrlvw`): the low half gets the
//! field of elements `0..32`, the high half that of `32..64`, so each register of codes lines
//! up with 64 *consecutive* activations and the activations keep their natural layout.
//! TQ1_0 builds its eight 32-trit vectors with the AVX2 code and pairs them. Q8_0 and Q4_0
//! (32-element blocks) use 256-bit VNNI; Q8_0's signed weights become unsigned by `w + 128`
//! (`xor 0x80`), taken back off with `128·Σq`. Q6_K builds 64 consecutive 6-bit codes per zmm
//! (its `ql` bytes are already in that order; the `qh` fields are shifted per half), multiplies
//! them with `vpmaddubsw` and applies the group scales with `vpdpwssd`.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{
    block_tile, i2s_driver, load, prefetch, q6_k_offset, tq1_0_shifted, with_row_group, BF16_W,
    F16_W, F32_W,
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
// `kernels::kernel_fn` for `SimdLevel::Avx512Vnni`, after `matmul_with` checked that the CPU has
// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.

fn i2s(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above: the CPU has the features.
    unsafe { i2s_512(w, acts.i8(), rows, out) }
}
fn tq2_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { tq2_0_512(w, acts.blocks(), rows, out) }
}
fn tq1_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { tq1_0_512(w, acts.blocks(), rows, out) }
}
fn q8_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { q8_0_512(w, acts.blocks(), rows, out) }
}
fn q4_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { q4_0_512(w, acts.blocks(), rows, out) }
}
fn q6_k(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { q6_k_512(w, acts.blocks(), rows, out) }
}
fn f32_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { float_512::<F32_W>(w, acts.f32(), rows, out) }
}
fn f16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { float_512::<F16_W>(w, acts.f32(), rows, out) }
}
fn bf16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { float_512::<BF16_W>(w, acts.f32(), rows, out) }
}

/// Unaligned 64-byte load.
///
/// # Safety
/// `p..p + 64` must be readable.
#[inline(always)]
unsafe fn load512(p: *const i8) -> __m512i {
    // SAFETY: per the caller's contract; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// Per-16-bit-lane shift counts: `lo` for the low 256 bits, `hi` for the high 256 bits.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn shifts(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
}

/// The 32 bytes at `p` in both halves, each half shifted right by its count, masked to 2 bits.
///
/// # Safety
/// `p..p + 32` must be readable.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn fields(p: *const u8, counts: __m512i) -> __m512i {
    // SAFETY: per the contract.
    let x = _mm512_broadcast_i64x4(unsafe { load(p) });
    _mm512_and_si512(_mm512_srlv_epi16(x, counts), _mm512_set1_epi8(3))
}

/// A zmm's 16 i32 lanes folded to 8 (for the AVX2 block epilogue).
#[target_feature(enable = "avx512f")]
#[inline]
fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

// ---------------------------------------------------------------------------------------------
// I2_S: group j of a 32-byte chunk is bits 7-2j:6-2j; [g0 | g1] = shifts (6, 4), [g2 | g3] =
// shifts (2, 0) line up with activations 128c + 0..64 and 128c + 64..128.

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn i2s_512(w: &QMatrix, a: &I8Acts, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.scale.len(), i2s_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn i2s_tile<const T: usize>(t0: usize, w: &QMatrix, a: &I8Acts, rows: Range<usize>, out: &Out) {
    with_row_group!(T, i2s_rows(t0, w, a, rows, out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn i2s_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &I8Acts,
    rows: Range<usize>,
    out: &Out,
) {
    i2s_driver::<R, T>(t0, w, a, rows, out, |wr, q, cs| i2s_dot::<R, T>(wr, q, cs));
}

/// `Σ code·q` of `R` I2_S rows against `T` tokens over the 128-element chunks `cs`; two
/// accumulators per row and token (one per half of a chunk).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
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
    let (sh01, sh23) = (shifts(6, 4), shifts(2, 0));
    let mut acc = [[[_mm512_setzero_si512(); 2]; T]; R];
    for c in cs {
        for i in 0..R {
            if c % 2 == 0 {
                prefetch(w[i].as_ptr(), 32 * c + ahead);
            }
            // SAFETY: c < cs.end ≤ chunks, so bytes 32c..32c + 32 are inside each row.
            let (c01, c23) = unsafe {
                let p = w[i].as_ptr().add(32 * c);
                (fields(p, sh01), fields(p, sh23))
            };
            for t in 0..T {
                // SAFETY: token rows hold at least 128·chunks codes (asserted above).
                let (x01, x23) = unsafe {
                    let p = q[t].as_ptr().add(128 * c);
                    (load512(p), load512(p.add(64)))
                };
                acc[i][t][0] = _mm512_dpbusd_epi32(acc[i][t][0], c01, x01);
                acc[i][t][1] = _mm512_dpbusd_epi32(acc[i][t][1], c23, x23);
            }
        }
    }
    let mut s = [[0i32; T]; R];
    for i in 0..R {
        for t in 0..T {
            s[i][t] = _mm512_reduce_add_epi32(_mm512_add_epi32(acc[i][t][0], acc[i][t][1]));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Block formats (shared driver `block_tile`: exact per-block dot, then the scalar epilogue order).

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq2_0_512(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, tq2_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq2_0_tile<const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    with_row_group!(T, tq2_0_rows(t0, w, a, rows, out));
}

/// TQ2_0: element `128h + 32n + l` is bits `2n+1:2n` of byte `32h + l`: shifts (0, 2) give
/// elements `128h + 0..64`, shifts (4, 6) elements `128h + 64..128`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq2_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let (sh01, sh23) = (shifts(0, 2), shifts(4, 6));
    block_tile::<R, T>(t0, w, a, rows, out, (256, 66, 64, 1), |blks, b, q, acc| {
        for i in 0..R {
            let mut acc2 = [[_mm512_setzero_si512(); 2]; T];
            for h in 0..2 {
                // SAFETY: `blks[i]` points at a whole 66-byte block (block_tile), so bytes
                // 32h..32h + 32 (h < 2) are readable.
                let (c01, c23) = unsafe {
                    let p = blks[i].add(32 * h);
                    (fields(p, sh01), fields(p, sh23))
                };
                for t in 0..T {
                    // SAFETY: token rows hold 256·nb codes (asserted in block_tile), b < nb.
                    let (x01, x23) = unsafe {
                        let p = q[t].as_ptr().add(256 * b + 128 * h);
                        (load512(p), load512(p.add(64)))
                    };
                    acc2[t][0] = _mm512_dpbusd_epi32(acc2[t][0], c01, x01);
                    acc2[t][1] = _mm512_dpbusd_epi32(acc2[t][1], c23, x23);
                }
            }
            for t in 0..T {
                acc[i][t] = fold(_mm512_add_epi32(acc2[t][0], acc2[t][1]));
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq1_0_512(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, tq1_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq1_0_tile<const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    with_row_group!(T, tq1_0_rows(t0, w, a, rows, out));
}

/// The top trit of every byte: `[v ≥ 86] + [v ≥ 171]` with mask compares.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn top_trit512(v: __m512i) -> __m512i {
    let one = _mm512_set1_epi8(1);
    let ge86 = _mm512_cmpge_epu8_mask(v, _mm512_set1_epi8(86));
    let ge171 = _mm512_cmpge_epu8_mask(v, _mm512_set1_epi8(171u8 as i8));
    let t = _mm512_maskz_mov_epi8(ge86, one);
    _mm512_mask_add_epi8(t, ge171, t, one)
}

/// TQ1_0: the AVX2 shifted-byte vectors, paired into zmm registers (elements `64k..64k + 64`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq1_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    block_tile::<R, T>(t0, w, a, rows, out, (256, 54, 52, 1), |blks, b, q, acc| {
        for i in 0..R {
            // SAFETY: `blks[i]` points at a whole 54-byte block (block_tile).
            let v = unsafe { tq1_0_shifted(blks[i]) };
            let mut acc2 = [[_mm512_setzero_si512(); 2]; T];
            for k in 0..4 {
                let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v[2 * k]), v[2 * k + 1]);
                let codes = top_trit512(z);
                for t in 0..T {
                    // SAFETY: token rows hold 256·nb codes, b < nb, k < 4.
                    let x = unsafe { load512(q[t].as_ptr().add(256 * b + 64 * k)) };
                    acc2[t][k % 2] = _mm512_dpbusd_epi32(acc2[t][k % 2], codes, x);
                }
            }
            for t in 0..T {
                acc[i][t] = fold(_mm512_add_epi32(acc2[t][0], acc2[t][1]));
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_512(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, q8_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_tile<const T: usize>(t0: usize, w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    with_row_group!(T, q8_0_rows(t0, w, a, rows, out));
}

/// Q8_0: `Σ (w + 128)·q − 128·Σq`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let bias = _mm256_set1_epi8(0x80u8 as i8);
    block_tile::<R, T>(t0, w, a, rows, out, (32, 34, 0, 128), |blks, b, q, acc| {
        for i in 0..R {
            // SAFETY: `blks[i]` points at a whole 34-byte block (block_tile); codes are bytes 2..34.
            let u = _mm256_xor_si256(unsafe { load(blks[i].add(2)) }, bias);
            for t in 0..T {
                // SAFETY: token rows hold 32·nb codes, b < nb.
                let x = unsafe { load(q[t].as_ptr().add(32 * b).cast()) };
                acc[i][t] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6_k_512(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, q6_k_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6_k_tile<const T: usize>(t0: usize, w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    with_row_group!(T, q6_k_rows(t0, w, a, rows, out));
}

/// Q6_K: zmm `m = 2h + p` holds the codes of elements `64m..64m + 64`: the low nibbles of
/// `ql[64h..64h + 64]` (p = 0) or their high nibbles (p = 1), with `qh[32h..32h + 32]` in both
/// halves shifted to bits 5:4 (left by 4 and 2 for p = 0, right by 0 and 2 for p = 1). Its
/// 16-bit lane `j` (elements `64m + 2j`, `+ 1`) takes group scale `4m + j/8`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6_k_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let (m4, m30) = (_mm512_set1_epi8(15), _mm512_set1_epi8(0x30));
    let (hi_lo, hi_hi) = (shifts(4, 2), shifts(0, 2));
    let scale_idx: [__m512i; 4] = std::array::from_fn(|m| {
        let idx: [i16; 32] = std::array::from_fn(|j| (4 * m + j / 8) as i16);
        // SAFETY: `idx` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    });
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
                let sc16 =
                    _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(blks[i].add(192).cast()) });
                let sc = _mm512_castsi256_si512(sc16);
                let mut acc2 = [_mm512_setzero_si512(); T];
                for h in 0..2 {
                    // SAFETY: ql (64h..64h + 64) and qh (128 + 32h..160 + 32h) are in the block.
                    let (ql, qh) = unsafe {
                        (
                            load512(blks[i].add(64 * h).cast()),
                            _mm512_broadcast_i64x4(load(blks[i].add(128 + 32 * h))),
                        )
                    };
                    let codes = [
                        _mm512_or_si512(
                            _mm512_and_si512(ql, m4),
                            _mm512_and_si512(_mm512_sllv_epi16(qh, hi_lo), m30),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                            _mm512_and_si512(_mm512_srlv_epi16(qh, hi_hi), m30),
                        ),
                    ];
                    for (p, &c) in codes.iter().enumerate() {
                        let m = 2 * h + p;
                        let scale = _mm512_permutexvar_epi16(scale_idx[m], sc);
                        for t in 0..T {
                            // SAFETY: token rows hold 256·nb codes (asserted in block_tile), b < nb.
                            let x = unsafe { load512(q[t].as_ptr().add(256 * b + 64 * m)) };
                            let pr = _mm512_maddubs_epi16(c, x);
                            acc2[t] = _mm512_dpwssd_epi32(acc2[t], pr, scale);
                        }
                    }
                }
                for t in 0..T {
                    acc[i][t] =
                        _mm256_sub_epi32(fold(acc2[t]), q6_k_offset(sc16, a.group_sums(b, t0 + t)));
                }
            }
        },
    );
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_512(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(8, a.n_tokens, q4_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_tile<const T: usize>(t0: usize, w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    with_row_group!(T, q4_0_rows(t0, w, a, rows, out));
}

/// Q4_0: nibbles as unsigned codes, `− 8·Σq`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_rows<const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
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
                acc[i][t] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, x);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// F32 / F16 / BF16: 16 weights at a time, widened once and FMA'd into up to 8 tokens; the row's
// tail uses masked loads (masked-off elements are not read).

/// Up to 16 weights from element `i` (lanes at or beyond `n` are zero), widened to f32.
///
/// # Safety
/// The row must hold elements `i..i + n` (`n ≤ 16`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load_w16<const K: u8>(row: *const u8, i: usize, n: usize) -> __m512 {
    if n >= 16 {
        // Whole vectors without a mask: a masked load costs a vector-port uop besides the load
        // (measured −13 % per call on an 8-token F16 head with plain loads).
        // SAFETY: the 16 elements are in the row per the contract.
        return unsafe {
            match K {
                F32_W => _mm512_loadu_ps(row.add(4 * i).cast()),
                F16_W => _mm512_cvtph_ps(_mm256_loadu_si256(row.add(2 * i).cast())),
                _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                    _mm256_loadu_si256(row.add(2 * i).cast()),
                ))),
            }
        };
    }
    let m = (1u16 << n) - 1;
    // SAFETY: masked-off lanes are never accessed; the others are in the row per the contract.
    unsafe {
        match K {
            F32_W => _mm512_maskz_loadu_ps(m, row.add(4 * i).cast()),
            F16_W => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row.add(2 * i).cast())),
            _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_maskz_loadu_epi16(m, row.add(2 * i).cast()),
            ))),
        }
    }
}

/// Up to 16 activations (zero beyond `n`).
///
/// # Safety
/// `p..p + n` must be readable (`n ≤ 16`).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_x16(p: *const f32, n: usize) -> __m512 {
    if n >= 16 {
        // SAFETY: `p..p + 16` is readable per the contract.
        return unsafe { _mm512_loadu_ps(p) };
    }
    let m = (1u16 << n) - 1;
    // SAFETY: masked-off lanes are never accessed.
    unsafe { _mm512_maskz_loadu_ps(m, p) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn float_512<const K: u8>(w: &QMatrix, x: &[f32], rows: Range<usize>, out: &Out) {
    for_token_tiles!(4, x.len() / w.cols, float_tile[K, 4,](w, x, rows.clone(), out));
}

/// An R-row × T-token register tile (R = 4: 16 accumulators for 4 tokens): each 16-column
/// step widens R weight vectors and loads T activation vectors once for R·T FMAs, and asks for
/// the next row of each of its R row streams. (Measured: 2 rows × 8 tokens is slower than two
/// passes of 4 × 4, the second from L2.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn float_tile<const K: u8, const R: usize, const T: usize>(
    t0: usize,
    w: &QMatrix,
    x: &[f32],
    rows: Range<usize>,
    out: &Out,
) {
    let cols = w.cols;
    let xs: [&[f32]; T] = token_rows(|t| &x[t * cols..(t + 1) * cols], t0);
    let wbytes = if K == F32_W { 4 } else { 2 };
    // The rows come from R far-apart runs of consecutive rows (`Groups` with streams: R
    // sequential streams, which the hardware prefetchers follow, where R consecutive rows were
    // read interleaved); each stream's next row is asked for a cache line per step (two rows
    // ahead measured no better). A 1-token F16 head, 2 threads: 23.1 → 21.0–21.8 ms.
    let ahead = cols * wbytes;
    for (r, n, wr) in super::Groups::<R>::new(w, rows, true).iter() {
        for w in &wr {
            assert_eq!(w.len(), cols * wbytes);
        }
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        while i < cols {
            let m = (cols - i).min(16);
            if (i * wbytes).is_multiple_of(64) {
                for k in 0..R {
                    prefetch(wr[k].as_ptr(), i * wbytes + ahead);
                }
            }
            // SAFETY: elements i..i + m are inside the rows (asserted) and the token rows; the
            // masked loads read nothing beyond them.
            unsafe {
                let mut xv = [_mm512_setzero_ps(); T];
                for t in 0..T {
                    xv[t] = load_x16(xs[t].as_ptr().add(i), m);
                }
                for k in 0..R {
                    let wv = load_w16::<K>(wr[k].as_ptr(), i, m);
                    for t in 0..T {
                        acc[k][t] = _mm512_fmadd_ps(wv, xv[t], acc[k][t]);
                    }
                }
            }
            i += m;
        }
        for k in 0..n {
            for t in 0..T {
                let s = _mm512_reduce_add_ps(acc[k][t]);
                // SAFETY: this task owns rows `rows`.
                unsafe { out.set(t0 + t, r[k], s) };
            }
        }
    }
}
