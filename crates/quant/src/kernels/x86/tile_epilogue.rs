//! AVX-512 epilogues of the tile kernels, the vector forms of `amx::write_i2s_pair`,
//! `amx::fold_block` and `amx::write_group_sums` (same results bit for bit: elementwise integer
//! subtractions, round-to-nearest conversions, IEEE products and sums in the same order).
//!
//! I2_S ([`write_i2s_pair`]): the i32 accumulator tiles of one pair of token tiles, turned into
//! floats and written to the output, 16 rows of a token per store. An accumulator tile is
//! `[weight row i][token n]`, the output `[token][row]`, so each tile is transposed in registers
//! first (16 × 16 dwords: 64 shuffles). Block formats: [`fold_block`] folds one block's
//! accumulators into f32 running sums with the block's scales, [`write_group_sums`] writes a row
//! group's sums out through the same transposition.

use std::arch::x86_64::*;

use crate::kernels::Out;

/// The 16 × 16 dword matrix `rows` (row `i` = lanes `0..16`) transposed in place.
#[target_feature(enable = "avx512f")]
#[inline]
pub(in crate::kernels) fn transpose16(rows: &mut [__m512i; 16]) {
    // 1. Within 128-bit lanes, interleave row pairs: t[2k] = (r[2k][0], r[2k+1][0], r[2k][1],
    //    r[2k+1][1]) per lane, t[2k+1] the same with elements 2 and 3.
    let mut t = [_mm512_setzero_si512(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_epi32(rows[2 * k], rows[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(rows[2 * k], rows[2 * k + 1]);
    }
    // 2. u[4g + c], lane L = rows 4g..4g + 4 at column 4L + c.
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let b = 4 * g;
        u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    // 3. For each c, a 4 × 4 transposition of 128-bit lanes: column 4L + c = lane L of
    //    u[c], u[4 + c], u[8 + c], u[12 + c].
    for c in 0..4 {
        let (a0, a1, a2, a3) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let v0 = _mm512_shuffle_i32x4::<0x44>(a0, a1); // a0.l0 a0.l1 a1.l0 a1.l1
        let v1 = _mm512_shuffle_i32x4::<0xEE>(a0, a1); // a0.l2 a0.l3 a1.l2 a1.l3
        let v2 = _mm512_shuffle_i32x4::<0x44>(a2, a3);
        let v3 = _mm512_shuffle_i32x4::<0xEE>(a2, a3);
        rows[c] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        rows[4 + c] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
        rows[8 + c] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        rows[12 + c] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
    }
}

/// Writes the I2_S results of one pair of token tiles: accumulator `c[2m + nt]` holds weight
/// rows `r0 + 16m..` × tokens `t0 + 16nt..` (`t0` = the pair's first token); rows past `live`
/// and tokens past `n_tokens` are not written. `sum`, `k`: the activations' per-token `Σq` and
/// output factor (`i2s_factor`; all tokens of the call).
///
/// # Safety
/// The CPU must have AVX-512 F; no other thread may write the output rows `r0..r0 + live`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(in crate::kernels) unsafe fn write_i2s_pair(
    c: &[[i32; 256]],
    t0: usize,
    n_tokens: usize,
    r0: usize,
    live: usize,
    sum: &[i32],
    k: &[f32],
    out: &Out,
) {
    assert!(c.len() >= 4 && sum.len() >= n_tokens && k.len() >= n_tokens);
    // The next row group's output lines for this pair's tokens (see `write_group_sums`).
    for t in t0..(t0 + 32).min(n_tokens) {
        out.prefetch_write(t, r0 + 32);
        out.prefetch_write(t, r0 + 48);
    }
    for m in 0..2 {
        let rows_live = live.saturating_sub(16 * m).min(16);
        if rows_live == 0 {
            continue;
        }
        let mask: __mmask16 = if rows_live == 16 {
            0xffff
        } else {
            (1u16 << rows_live) - 1
        };
        for nt in 0..2 {
            let tt = t0 + 16 * nt;
            if tt >= n_tokens {
                continue;
            }
            let tile = &c[2 * m + nt];
            let mut v = [_mm512_setzero_si512(); 16];
            for (i, v) in v.iter_mut().enumerate() {
                // SAFETY: row i of a 256-dword tile is dwords 16i..16i + 16.
                *v = unsafe { _mm512_loadu_si512(tile.as_ptr().add(16 * i).cast()) };
            }
            transpose16(&mut v);
            for (n, v) in v.iter().enumerate().take((n_tokens - tt).min(16)) {
                let t = tt + n;
                let s = _mm512_sub_epi32(*v, _mm512_set1_epi32(sum[t]));
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(k[t]));
                // SAFETY: token t < n_tokens, rows r0 + 16m + (0..rows_live) are this task's
                // (the caller's contract); `row_ptr` checks the bounds.
                unsafe {
                    let dst = out.row_ptr(t, r0 + 16 * m, rows_live);
                    if rows_live == 16 {
                        _mm512_storeu_ps(dst, y);
                    } else {
                        _mm512_mask_storeu_ps(dst, mask, y);
                    }
                }
            }
        }
    }
}

/// Folds one 256-block's accumulators for one token tile into the running sums, as
/// `block_epilogue` elementwise: `sumf[row][t] += (c[m][16i + n] − Σq[t]) · (d_x[t] · d_w[row])`
/// (a product, then a sum: no fused multiply-add, exactly as the scalar reference rounds) for
/// `row = 16m + i < live`, `t = t0 + n < n_tokens`. `sum`, `d`: the block's `Σq` (ternary codes
/// are value + 1; `None` for Q8_0: no zero point) and scale per token (all tokens of the call);
/// `sumf`: `[row][token]`, `stride` (a multiple of 16 ≥ `n_tokens`) per row: whole vectors
/// are read and written there (masked accesses to a line just written by a masked store defeat
/// store forwarding), the lanes past `n_tokens` holding zeros.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(in crate::kernels) unsafe fn fold_block(
    c: &[[i32; 256]],
    t0: usize,
    n_tokens: usize,
    stride: usize,
    live: usize,
    sum: Option<&[i32]>,
    d: &[f32],
    d_w: &[f32; 32],
    sumf: &mut [f32],
) {
    let nt_live = n_tokens.saturating_sub(t0).min(16);
    assert!(c.len() >= 2 && d.len() >= nt_live && live <= 32);
    assert!(sum.is_none_or(|s| s.len() >= nt_live));
    assert!(stride.is_multiple_of(16) && t0 + 16 <= stride && sumf.len() >= live * stride);
    let mask: __mmask16 = if nt_live == 16 {
        0xffff
    } else {
        (1u16 << nt_live) - 1
    };
    // SAFETY: masked-off lanes are never accessed; the live lanes are inside `sum` and `d`
    // (asserted above).
    let (sums, dx) = unsafe {
        (
            sum.map_or(_mm512_setzero_si512(), |s| {
                _mm512_maskz_loadu_epi32(mask, s.as_ptr())
            }),
            _mm512_maskz_loadu_ps(mask, d.as_ptr()),
        )
    };
    // The row loop twice: with the zero point, and without (Q8_0), where the subtraction of
    // zeros would be a fifth vector operation per row.
    macro_rules! rows {
        ($value:expr) => {
            for row in 0..live {
                let (m, i) = (row / 16, row % 16);
                // SAFETY: row i of tile m is 16 dwords inside `c[m]`; the 16 floats at
                // `row·stride + t0` are inside `sumf` (asserted above). Lanes past `n_tokens`
                // get `0 · 0` added (the accumulators and `dx` are zero there).
                unsafe {
                    let v = _mm512_loadu_si512(c[m].as_ptr().add(16 * i).cast());
                    #[allow(clippy::redundant_closure_call)]
                    let f = _mm512_cvtepi32_ps($value(v));
                    let k = _mm512_mul_ps(dx, _mm512_set1_ps(d_w[row]));
                    let at = sumf.as_mut_ptr().add(row * stride + t0);
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), _mm512_mul_ps(f, k)));
                }
            }
        };
    }
    if sum.is_some() {
        rows!(|v| _mm512_sub_epi32(v, sums));
    } else {
        rows!(|v| v);
    }
}

/// Writes a row group's results `y` (`[row][token]`, `stride` per row: a multiple of 16 ≥
/// `n_tokens`, whole vectors read; rows
/// `0..live`) to the output rows `r0..r0 + live`, 16 rows of a token per store (16 × 16
/// transposes in registers).
///
/// # Safety
/// The CPU must have AVX-512 F; no other thread may write the output rows `r0..r0 + live`.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn write_group_sums(
    y: &[f32],
    n_tokens: usize,
    stride: usize,
    r0: usize,
    live: usize,
    out: &Out,
) {
    assert!(live <= 32 && stride >= n_tokens && stride.is_multiple_of(16));
    assert!(y.len() >= live * stride);
    // The next row group's output lines (written one group later: their reads for ownership
    // overlap this group's work instead of stalling its stores).
    for t in 0..n_tokens {
        out.prefetch_write(t, r0 + 32);
        out.prefetch_write(t, r0 + 48);
    }
    for m in 0..live.div_ceil(16) {
        let rows_live = (live - 16 * m).min(16);
        let rmask: __mmask16 = if rows_live == 16 {
            0xffff
        } else {
            (1u16 << rows_live) - 1
        };
        for t0 in (0..n_tokens).step_by(16) {
            let nt_live = (n_tokens - t0).min(16);
            let mut v = [_mm512_setzero_si512(); 16];
            for (i, v) in v.iter_mut().enumerate().take(rows_live) {
                // SAFETY: row 16m + i < live, and `t0 + 16 ≤ stride` (a multiple of 16 ≥
                // n_tokens), so the 16 floats are inside `y` (asserted).
                *v = unsafe {
                    _mm512_loadu_si512(y.as_ptr().add((16 * m + i) * stride + t0).cast())
                };
            }
            transpose16(&mut v);
            for (n, v) in v.iter().enumerate().take(nt_live) {
                // SAFETY: token t0 + n < n_tokens, rows r0 + 16m.. are this task's (the
                // caller's contract); `row_ptr` checks the bounds.
                unsafe {
                    let dst = out.row_ptr(t0 + n, r0 + 16 * m, rows_live);
                    if rows_live == 16 {
                        _mm512_storeu_ps(dst, _mm512_castsi512_ps(*v));
                    } else {
                        _mm512_mask_storeu_ps(dst, rmask, _mm512_castsi512_ps(*v));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose16_transposes() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 here: transpose not exercised");
            return;
        }
        let m: Vec<i32> = (0..256).map(|i| i * 7 - 300).collect();
        let mut rows = [[0i32; 16]; 16];
        // SAFETY: AVX-512 F checked above; each row is 16 dwords.
        unsafe {
            let mut v = [_mm512_setzero_si512(); 16];
            for i in 0..16 {
                v[i] = _mm512_loadu_si512(m.as_ptr().add(16 * i).cast());
            }
            transpose16(&mut v);
            for i in 0..16 {
                _mm512_storeu_si512(rows[i].as_mut_ptr().cast(), v[i]);
            }
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(rows[i][j], m[16 * j + i], "({i}, {j})");
            }
        }
    }
}
