//! The scalar reference kernels: the definition of what every SIMD kernel computes.
//!
//! Each integer kernel is an exact integer dot per block (or per row for I2_S) followed by a
//! float epilogue, written once here and reused by the SIMD code so the order of float
//! operations is the same everywhere:
//!
//! * I2_S: `S = Σ code·q` over the row (codes 0..=3 used as is, like bitnet.cpp's kernels),
//!   `y = (S − Σq) as f32 / s · w_scale` ([`i2s_epilogue`]).
//! * TQ1_0, TQ2_0, Q8_0, Q4_0: per block `sumi = Σ w·q` (ternary `t − 1`, Q4_0 `nibble − 8`,
//!   Q8_0 `i8`), then `sumf += sumi as f32 · (d_x · d_w)` over the blocks in order
//!   ([`block_epilogue`]).
//! * Q6_K: the same per 256-block, with `sumi = Σ_g sc_g · Σ_{l ∈ g} (code_l − 32)·q_l` over
//!   the 16 groups of 16 (`sc_g` the block's int8 group scales, `d_w` its f16 `d`), against
//!   Q8_K activations; exact in i32 (|sumi| ≤ 16·128·16·32·128 < 2^31).
//!
//! The float kernels (F32/F16/BF16) widen each weight to f32 and sum `w·x` in f32.
//!
//! I2_S code 3 is never written; the kernels read it as +2 (what bitnet.cpp's kernels compute),
//! while [`crate::dequantize`] maps it to 0 (bitnet.cpp's dequantizer). TQ2_0 code 3 reads as
//! +2 in both, as in ggml.

use std::ops::Range;

use super::{Acts, KernelFn, Out, QMatrix};
use crate::formats::{f16, i2_s, q4_0, q6_k, q8_0, tq1_0, tq2_0};
use crate::GgmlType;

pub(super) fn kernel(ty: GgmlType) -> KernelFn {
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

/// The I2_S output from the integer dot `s = Σ code·q`: `(s − Σq) · k`, with `k` the token's
/// [`i2s_factor`] (`w_scale / act_scale`, computed once per token and matrix, so that no kernel
/// divides per output).
#[inline(always)]
pub(crate) fn i2s_epilogue(s: i32, act_sum: i32, k: f32) -> f32 {
    s.wrapping_sub(act_sum) as f32 * k
}

/// The I2_S output factor of one token: `w_scale / act_scale`.
#[inline(always)]
pub(crate) fn i2s_factor(act_scale: f32, w_scale: f32) -> f32 {
    w_scale / act_scale
}

/// One block's contribution to a block-scaled dot: `sumf + sumi · (d_x · d_w)`.
#[inline(always)]
pub(crate) fn block_epilogue(sumf: f32, sumi: i32, d_x: f32, d_w: f32) -> f32 {
    sumf + sumi as f32 * (d_x * d_w)
}

/// `Σ code·q` over one I2_S row (the dossier's `i2s_row_dot`).
pub(crate) fn i2s_dot(w: &[u8], q: &[i8]) -> i32 {
    let mut s = 0i32;
    for (w, q) in w
        .chunks_exact(i2_s::BLOCK_BYTES)
        .zip(q.chunks_exact(i2_s::BLOCK_SIZE))
    {
        for g in 0..32 {
            for j in 0..4 {
                let code = (w[g] >> (6 - 2 * j)) & 3;
                s = s.wrapping_add(i32::from(code) * i32::from(q[32 * j + g]));
            }
        }
    }
    s
}

fn i2s(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    let a = acts.i8();
    let w_scale = w.i2s_scale();
    let k: Vec<f32> = a.scale.iter().map(|&s| i2s_factor(s, w_scale)).collect();
    for r in rows {
        let wr = w.row(r);
        for t in 0..a.scale.len() {
            let s = i2s_dot(wr, a.row(t));
            // SAFETY: this task owns rows `rows` (see `matmul_with`).
            unsafe { out.set(t, r, i2s_epilogue(s, a.sum[t], k[t])) };
        }
    }
}

/// The integer dot of one block of a block format, for one token.
type BlockDot = fn(&[u8], &[i8]) -> i32;

/// Shared driver of the block formats: per block the exact integer dot, then the epilogue.
fn block_rows(
    w: &QMatrix,
    acts: &Acts,
    rows: Range<usize>,
    out: &Out,
    (bsize, bbytes, d_at): (usize, usize, usize),
    dot: BlockDot,
) {
    let a = acts.blocks();
    for r in rows {
        let wr = w.row(r);
        for t in 0..a.n_tokens {
            let q = a.row(t);
            let mut sumf = 0.0f32;
            for (b, blk) in wr.chunks_exact(bbytes).enumerate() {
                let sumi = dot(blk, &q[b * bsize..(b + 1) * bsize]);
                let d_w = f16::decode([blk[d_at], blk[d_at + 1]]);
                sumf = block_epilogue(sumf, sumi, a.d(b, t), d_w);
            }
            // SAFETY: this task owns rows `rows`.
            unsafe { out.set(t, r, sumf) };
        }
    }
}

/// TQ2_0 block: element `128h + 32n + l` is `(qs[32h + l] >> 2n) & 3`, value `t − 1`.
pub(crate) fn tq2_0_dot(blk: &[u8], q: &[i8]) -> i32 {
    let mut s = 0i32;
    for h in 0..2 {
        for n in 0..4 {
            for l in 0..32 {
                let t = (blk[32 * h + l] >> (2 * n)) & 3;
                s += (i32::from(t) - 1) * i32::from(q[128 * h + 32 * n + l]);
            }
        }
    }
    s
}

/// TQ1_0 block: the base-3 layout of [`crate::formats::tq1_0`], value `t − 1`.
pub(crate) fn tq1_0_dot(blk: &[u8], q: &[i8]) -> i32 {
    let mut s = 0i32;
    let mut add = |byte: u8, n: usize, e: usize| {
        s += (i32::from(tq1_0::decode_trit(byte, n)) - 1) * i32::from(q[e]);
    };
    for n in 0..5 {
        for m in 0..32 {
            add(blk[m], n, 32 * n + m);
        }
        for m in 0..16 {
            add(blk[32 + m], n, 160 + 16 * n + m);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            add(blk[48 + j], n, 240 + 4 * n + j);
        }
    }
    s
}

/// Q8_0 block: `Σ w·q` with `w` the signed bytes after the f16 scale.
pub(crate) fn q8_0_dot(blk: &[u8], q: &[i8]) -> i32 {
    blk[2..]
        .iter()
        .zip(q)
        .map(|(&w, &q)| i32::from(w as i8) * i32::from(q))
        .sum()
}

/// Q4_0 block: element `j < 16` is `qs[j] & 15`, `j + 16` is `qs[j] >> 4`, value `nibble − 8`.
pub(crate) fn q4_0_dot(blk: &[u8], q: &[i8]) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        let b = blk[2 + j];
        s += (i32::from(b & 15) - 8) * i32::from(q[j]);
        s += (i32::from(b >> 4) - 8) * i32::from(q[j + 16]);
    }
    s
}

/// Q6_K super-block: `Σ_g sc_g · Σ (code − 32)·q` with the codes of [`crate::formats::q6_k`].
pub(crate) fn q6_k_dot(blk: &[u8], q: &[i8]) -> i32 {
    let mut s = 0i32;
    for h in 0..2 {
        let (ql, qh) = (&blk[64 * h..64 * h + 64], &blk[128 + 32 * h..160 + 32 * h]);
        let mut code = [0u8; 128];
        for l in 0..32 {
            code[l] = (ql[l] & 15) | (qh[l] & 3) << 4;
            code[l + 32] = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4;
            code[l + 64] = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
            code[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
        }
        for g in 0..8 {
            let sc = i32::from(blk[192 + 8 * h + g] as i8);
            let mut sg = 0i32;
            for e in 16 * g..16 * g + 16 {
                sg += (i32::from(code[e]) - 32) * i32::from(q[128 * h + e]);
            }
            s += sc * sg;
        }
    }
    s
}

fn q6_k(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    let layout = (q6_k::BLOCK_SIZE, q6_k::BLOCK_BYTES, 208);
    block_rows(w, acts, rows, out, layout, q6_k_dot);
}

fn tq2_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    let layout = (tq2_0::BLOCK_SIZE, tq2_0::BLOCK_BYTES, 64);
    block_rows(w, acts, rows, out, layout, tq2_0_dot);
}

fn tq1_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    let layout = (tq1_0::BLOCK_SIZE, tq1_0::BLOCK_BYTES, 52);
    block_rows(w, acts, rows, out, layout, tq1_0_dot);
}

fn q8_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    let layout = (q8_0::BLOCK_SIZE, q8_0::BLOCK_BYTES, 0);
    block_rows(w, acts, rows, out, layout, q8_0_dot);
}

fn q4_0(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    let layout = (q4_0::BLOCK_SIZE, q4_0::BLOCK_BYTES, 0);
    block_rows(w, acts, rows, out, layout, q4_0_dot);
}

/// Shared driver of the float formats: `decode` widens element `i` of a row's bytes.
fn float_rows(
    w: &QMatrix,
    acts: &Acts,
    rows: Range<usize>,
    out: &Out,
    decode: impl Fn(&[u8], usize) -> f32,
) {
    let x = acts.f32();
    let n_tokens = x.len() / w.cols;
    for r in rows {
        let wr = w.row(r);
        for t in 0..n_tokens {
            let xt = &x[t * w.cols..(t + 1) * w.cols];
            // Eight partial sums (element i goes to lane i % 8), so the compiler can vectorize.
            let mut acc = [0.0f32; 8];
            for (i, &xv) in xt.iter().enumerate() {
                acc[i % 8] += decode(wr, i) * xv;
            }
            let s =
                ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            // SAFETY: this task owns rows `rows`.
            unsafe { out.set(t, r, s) };
        }
    }
}

fn f32_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    float_rows(w, acts, rows, out, |b, i| {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    });
}

fn f16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    float_rows(w, acts, rows, out, |b, i| {
        f16::decode([b[2 * i], b[2 * i + 1]])
    });
}

fn bf16_weights(w: &QMatrix, acts: &Acts, rows: Range<usize>, out: &Out) {
    float_rows(w, acts, rows, out, |b, i| {
        f32::from_bits(u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])) << 16)
    });
}
