//! AArch64 NEON kernels (baseline Advanced SIMD, no `dotprod` needed): I2_S, TQ2_0, F32 and
//! BF16. The other types use the scalar kernels on ARM.
//!
//! Codes are unpacked with byte shifts (`ushr`) and masks, multiplied with the int8 activations
//! by `smull`/`smlal` into i16 (at most 8 products of ≤ 3·128 per lane, so no overflow) and
//! widened pairwise into i32 (`sadalp`). Like the x86 kernels, a tile of up to 4 tokens shares
//! each unpacked weight vector, and the integer results equal the scalar reference exactly.
//!
//! I2_S here reads the x86 "128/32" layout of every official GGUF (the one `formats::i2_s`
//! defines), not bitnet.cpp's ARM-only 64/16 layout.

use std::arch::aarch64::*;
use std::ops::Range;

use super::scalar::{block_epilogue, i2s_epilogue, i2s_factor};
use super::{for_token_tiles, token_rows, Acts, BlockActs, I8Acts, KernelFn, Out, QMatrix};
use crate::GgmlType;

pub(super) fn kernel(ty: GgmlType) -> KernelFn {
    match ty {
        GgmlType::I2_S => i2s,
        GgmlType::TQ2_0 => tq2_0,
        GgmlType::F32 => f32_weights,
        GgmlType::BF16 => bf16_weights,
        _ => super::scalar::kernel(ty),
    }
}

// SAFETY (for every `unsafe` call of a `neon_*` function below): `kernel` is only called by
// `kernels::kernel_fn` for `SimdLevel::Neon`, after `matmul_with` checked that the CPU has NEON.

fn i2s(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { neon_i2s(w, acts.i8(), rows, out) }
}
fn tq2_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { neon_tq2_0(w, acts.blocks(), rows, out) }
}
fn f32_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { neon_float::<false>(w, acts.f32(), rows, out) }
}
fn bf16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    // SAFETY: see above.
    unsafe { neon_float::<true>(w, acts.f32(), rows, out) }
}

/// `acc + Σ_j codes[j] · q[32j + 16h ..][..16]` for the four 2-bit groups of 16 bytes, in i16
/// and then pairwise into the i32 lanes of `acc`.
///
/// # Safety
/// `q + 16h .. q + 112 + 16h + 16` must be readable (128 codes from `q`).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot4x16(acc: int32x4_t, codes: &[int8x16_t; 4], q: *const i8) -> int32x4_t {
    // SAFETY: the four 16-byte loads stay inside the 128 codes at `q` per the contract.
    let a = unsafe {
        [
            vld1q_s8(q),
            vld1q_s8(q.add(32)),
            vld1q_s8(q.add(64)),
            vld1q_s8(q.add(96)),
        ]
    };
    let mut p = vmull_s8(vget_low_s8(codes[0]), vget_low_s8(a[0]));
    p = vmlal_high_s8(p, codes[0], a[0]);
    for j in 1..4 {
        p = vmlal_s8(p, vget_low_s8(codes[j]), vget_low_s8(a[j]));
        p = vmlal_high_s8(p, codes[j], a[j]);
    }
    vpadalq_s16(acc, p)
}

// ---------------------------------------------------------------------------------------------
// I2_S: byte g of a 32-byte chunk holds elements g, g+32, g+64, g+96 in bits 7:6 … 1:0; the two
// 16-byte halves of the chunk line up with activations 128c + 32j + 16h.

#[target_feature(enable = "neon")]
fn neon_i2s(w: &QMatrix, a: &I8Acts, rows: Range<usize>, out: &Out) {
    for_token_tiles!(4, a.scale.len(), i2s_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "neon")]
fn i2s_tile<const T: usize>(t0: usize, w: &QMatrix, a: &I8Acts, rows: Range<usize>, out: &Out) {
    let q: [&[i8]; T] = token_rows(|t| a.row(t), t0);
    let w_scale = w.i2s_scale();
    let k: [f32; T] = std::array::from_fn(|t| i2s_factor(a.scale[t0 + t], w_scale));
    let chunks = w.cols / 128;
    for q in &q {
        assert_eq!(q.len(), 128 * chunks);
    }
    let mask = vdupq_n_u8(3);
    for r in rows {
        let wr = w.row(r);
        assert_eq!(wr.len(), 32 * chunks);
        let mut acc = [vdupq_n_s32(0); T];
        for c in 0..chunks {
            for h in 0..2 {
                // SAFETY: c < chunks, so bytes 32c + 16h .. + 16 are inside the row.
                let x = unsafe { vld1q_u8(wr.as_ptr().add(32 * c + 16 * h)) };
                let codes = [
                    vreinterpretq_s8_u8(vshrq_n_u8::<6>(x)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(x), mask)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(x), mask)),
                    vreinterpretq_s8_u8(vandq_u8(x, mask)),
                ];
                for t in 0..T {
                    // SAFETY: token rows hold 128·chunks codes (asserted above).
                    acc[t] =
                        unsafe { dot4x16(acc[t], &codes, q[t].as_ptr().add(128 * c + 16 * h)) };
                }
            }
        }
        for t in 0..T {
            let s = vaddvq_s32(acc[t]);
            let tt = t0 + t;
            // SAFETY: this task owns rows `rows` (see `matmul_with`).
            unsafe { out.set(tt, r, i2s_epilogue(s, a.sum[tt], k[t])) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TQ2_0: element 128h + 32n + l is bits 2n+1:2n of byte 32h + l.

#[target_feature(enable = "neon")]
fn neon_tq2_0(w: &QMatrix, a: &BlockActs, rows: Range<usize>, out: &Out) {
    for_token_tiles!(4, a.n_tokens, tq2_0_tile(w, a, rows.clone(), out));
}

#[target_feature(enable = "neon")]
fn tq2_0_tile<const T: usize>(
    t0: usize,
    w: &QMatrix,
    a: &BlockActs,
    rows: Range<usize>,
    out: &Out,
) {
    let q: [&[i8]; T] = token_rows(|t| a.row(t), t0);
    let nb = w.cols / 256;
    for q in &q {
        assert_eq!(q.len(), 256 * nb);
    }
    let mask = vdupq_n_u8(3);
    for r in rows {
        let wr = w.row(r);
        assert_eq!(wr.len(), 66 * nb);
        let mut sumf = [0.0f32; T];
        for (b, blk) in wr.chunks_exact(66).enumerate() {
            let mut acc = [vdupq_n_s32(0); T];
            for k in 0..4 {
                // 16-byte quarter k: half h = k / 2, lanes l = 16(k % 2) ..
                let (h, l0) = (k / 2, 16 * (k % 2));
                // SAFETY: 32h + l0 + 16 ≤ 64 < 66, inside the block.
                let x = unsafe { vld1q_u8(blk.as_ptr().add(32 * h + l0)) };
                let codes = [
                    vreinterpretq_s8_u8(vandq_u8(x, mask)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(x), mask)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(x), mask)),
                    vreinterpretq_s8_u8(vshrq_n_u8::<6>(x)),
                ];
                for t in 0..T {
                    // SAFETY: token rows hold 256·nb codes, b < nb, 128h + l0 + 112 < 256.
                    acc[t] = unsafe {
                        dot4x16(acc[t], &codes, q[t].as_ptr().add(256 * b + 128 * h + l0))
                    };
                }
            }
            let d_w = half::f16::from_le_bytes([blk[64], blk[65]]).to_f32();
            for t in 0..T {
                let sumi = vaddvq_s32(acc[t]).wrapping_sub(a.sum(b, t0 + t));
                sumf[t] = block_epilogue(sumf[t], sumi, a.d(b, t0 + t), d_w);
            }
        }
        for (t, &s) in sumf.iter().enumerate() {
            // SAFETY: this task owns rows `rows`.
            unsafe { out.set(t0 + t, r, s) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// F32 and BF16 (BF16 widens by shifting the 16 bits up): 4 weights at a time into up to 4 tokens.

#[target_feature(enable = "neon")]
fn neon_float<const BF16: bool>(w: &QMatrix, x: &[f32], rows: Range<usize>, out: &Out) {
    for_token_tiles!(4, x.len() / w.cols, float_tile[BF16,](w, x, rows.clone(), out));
}

/// 4 weights from element `i`, widened to f32.
///
/// # Safety
/// The row must hold elements `i..i + 4`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_w4<const BF16: bool>(row: *const u8, i: usize) -> float32x4_t {
    // SAFETY: per the contract (16 or 8 bytes from the element's offset).
    unsafe {
        if BF16 {
            let h = vld1_u16(row.add(2 * i).cast());
            vreinterpretq_f32_u32(vshll_n_u16::<16>(h))
        } else {
            vld1q_f32(row.add(4 * i).cast())
        }
    }
}

#[target_feature(enable = "neon")]
fn float_tile<const BF16: bool, const T: usize>(
    t0: usize,
    w: &QMatrix,
    x: &[f32],
    rows: Range<usize>,
    out: &Out,
) {
    let cols = w.cols;
    let xs: [&[f32]; T] = token_rows(|t| &x[t * cols..(t + 1) * cols], t0);
    let n4 = cols / 4 * 4;
    for r in rows {
        let wr = w.row(r);
        assert_eq!(wr.len(), cols * if BF16 { 2 } else { 4 });
        let mut acc = [vdupq_n_f32(0.0); T];
        let mut i = 0;
        while i < n4 {
            // SAFETY: i + 4 ≤ cols; the row and the token rows hold `cols` elements.
            unsafe {
                let wv = load_w4::<BF16>(wr.as_ptr(), i);
                for t in 0..T {
                    acc[t] = vfmaq_f32(acc[t], wv, vld1q_f32(xs[t].as_ptr().add(i)));
                }
            }
            i += 4;
        }
        for t in 0..T {
            let mut s = vaddvq_f32(acc[t]);
            for j in n4..cols {
                let wj = if BF16 {
                    f32::from_bits(u32::from(u16::from_le_bytes([wr[2 * j], wr[2 * j + 1]])) << 16)
                } else {
                    f32::from_le_bytes([wr[4 * j], wr[4 * j + 1], wr[4 * j + 2], wr[4 * j + 3]])
                };
                s += wj * xs[t][j];
            }
            // SAFETY: this task owns rows `rows`.
            unsafe { out.set(t0 + t, r, s) };
        }
    }
}
