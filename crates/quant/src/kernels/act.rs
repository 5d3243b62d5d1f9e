//! Activation quantization: what a kernel does to the f32 input rows before the integer dot.
//!
//! Each weight type fixes its activation rule (the one its reference implementation uses), so
//! that our results equal that implementation's math:
//!
//! * **I2_S** — bitnet.cpp `quantize_row_i8_s` (= HF `ActQuant`): one scale per token over the
//!   whole row, `amax = max(1e-5, max|x|)` in f64, `s = (f32)(127 / amax)`,
//!   `q = clamp(round_half_even(x·s), -128, 127)` with `x·s` in f32. [`quantize_row_i8`].
//! * **TQ1_0 / TQ2_0** — llama.cpp `quantize_row_q8_K_ref`: per 256-block, `max` = the first
//!   element of largest magnitude (with its sign), `iscale = -127/max`,
//!   `q = min(127, round_half_even(iscale·x))`, `d = 1/iscale` (negative when `max > 0`; the
//!   signs cancel); `d = 0`, `q = 0` for an all-zero block.
//! * **Q6_K** — the same Q8_K rule per 256-block, plus (as llama.cpp's `block_q8_K.bsums`) the
//!   sum of each 16-element group's codes, which the SIMD kernels use to take the `−32` offset
//!   of the 6-bit codes off in one step per block.
//! * **Q8_0 / Q4_0** — llama.cpp `quantize_row_q8_0_ref`, i.e. the Q8_0 weight encoding
//!   ([`crate::formats::q8_0::quantize_block`]): per 32-block `d = amax/127`,
//!   `q = roundf(x·(1/d))` (ties away from zero); the kernel uses `d` rounded to f16, as ggml.
//!
//! The rounding helpers are the float tricks ggml uses (`nearest_int`), written so that the
//! compiler vectorizes them: they are exact for the magnitudes that occur here (|v| ≤ 2^22).
//! Non-finite inputs give unspecified (but memory-safe) codes, as in ggml.

use crate::formats::q8_0;
use crate::GgmlType;

/// Evaluates `$f(args…)` in a copy compiled for AVX-512 (F/BW/VL) or AVX2 when the CPU has it.
/// The quantizers are written so that the compiler vectorizes them, and the baseline x86-64
/// target (SSE2) lacks the unsigned 32-bit max and the 8-lane width; the results are the same
/// at every width (the same IEEE operations, only more lanes at once).
macro_rules! with_simd {
    ($f:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                // SAFETY: the CPU has AVX-512 F/BW/VL (BW implies F) and so AVX2; `avx512`
                // only compiles the same code with them enabled.
                return unsafe { avx512::$f($($arg),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2; `avx2` only compiles the same code with it enabled.
                return unsafe { avx2::$f($($arg),*) };
            }
        }
        $f($($arg),*)
    }};
}

/// Copies of the quantizers compiled with `$features` (see `with_simd!`).
macro_rules! compiled_copies {
    ($module:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::*;

            #[target_feature(enable = $features)]
            pub(super) fn quantize_row_i8_impl(x: &[f32], q: &mut [i8]) -> (f32, i32) {
                super::quantize_row_i8_impl(x, q)
            }

            #[target_feature(enable = $features)]
            pub(super) fn fake_quant_impl(x: &mut [f32], cols: usize) {
                super::fake_quant_impl(x, cols)
            }

            #[target_feature(enable = $features)]
            pub(super) fn quantize_i8_acts(x: &[f32], n_tokens: usize, cols: usize) -> I8Acts {
                super::quantize_i8_acts(x, n_tokens, cols)
            }

            #[target_feature(enable = $features)]
            pub(super) fn quantize_q8_k_acts(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
                super::quantize_q8_k_acts(x, n_tokens, cols)
            }

            #[target_feature(enable = $features)]
            pub(super) fn quantize_q8_k_acts_with_group_sums(
                x: &[f32],
                n_tokens: usize,
                cols: usize,
            ) -> BlockActs {
                super::quantize_q8_k_acts_with_group_sums(x, n_tokens, cols)
            }

            #[target_feature(enable = $features)]
            pub(super) fn quantize_q8_0_acts(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
                super::quantize_q8_0_acts(x, n_tokens, cols)
            }
        }
    };
}

compiled_copies!(avx2, "avx2");
compiled_copies!(avx512, "avx2,avx512f,avx512bw,avx512vl");

/// ggml's `nearest_int`: round half to even via the 1.5·2^23 magic number.
///
/// Exact for |v| ≤ 2^22 (every call here has |v| ≤ 128); any other input gives some integer.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let m = v + 12_582_912.0;
    (m.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C `roundf` (ties away from zero) for |v| ≤ 2^22, without a libm call.
///
/// `nearest_int` rounds ties to even; `v - t` is exact here, and is ±0.5 only at a tie, where
/// `roundf` moves away from zero.
#[inline(always)]
pub(crate) fn round_away(v: f32) -> i32 {
    let t = nearest_int(v);
    let r = v - t as f32;
    t + (r == 0.5 && v > 0.0) as i32 - (r == -0.5 && v < 0.0) as i32
}

/// BitLinear activation quantization of one token's row (bitnet.cpp `quantize_row_i8_s`, HF
/// `ActQuant`): writes `q` and returns the scale `s` and `Σq`.
///
/// `amax = max(1e-5, max|x|)` is taken in f64 as bitnet.cpp does, `s = (127 / amax) as f32`,
/// `q = clamp(round_half_even(x·s), -128, 127)` with the product in f32. The row is
/// reconstructed as `q / s`; the I2_S kernel computes `(Σ code·q − Σq) / s · w_scale`.
///
/// # Panics
/// If `q.len() != x.len()`.
pub fn quantize_row_i8(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert_eq!(
        x.len(),
        q.len(),
        "quantize_row_i8: input and output lengths differ"
    );
    with_simd!(quantize_row_i8_impl(x, q))
}

#[inline(always)]
fn quantize_row_i8_impl(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    // max|x| is an f32 value, so taking it in f32 and widening equals bitnet.cpp's f64 max.
    let amax = f64::from(abs_max(x)).max(1e-5);
    let s = (127.0 / amax) as f32;
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = nearest_int(v * s).clamp(-128, 127);
        *q = r as i8;
        sum += r;
    }
    (s, sum)
}

/// `max|x|`, ignoring NaN (0 for an empty or all-NaN slice).
///
/// Computed on the bit patterns: for non-negative floats (sign bit cleared) the integer order
/// is the float order, and an integer max reduction vectorizes where `f32::max` does not.
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    #[inline(always)]
    fn key(v: f32) -> u32 {
        let b = v.to_bits() & 0x7fff_ffff;
        if b > 0x7f80_0000 {
            0
        } else {
            b
        }
    }
    // Eight independent lanes, so the loop becomes one vector max per 8 values.
    let mut m = [0u32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            m[i] = m[i].max(key(c[i]));
        }
    }
    for &v in tail {
        m[0] = m[0].max(key(v));
    }
    f32::from_bits(m.into_iter().max().unwrap_or(0))
}

/// In-place BitLinear fake quantization: every row of `cols` becomes `q / s` with `q` and `s`
/// from [`quantize_row_i8`].
///
/// A BitNet model applies this to the input of ternary weights stored as F32/F16/BF16, so that
/// their f32 matmul computes what the I2_S kernel computes (up to float rounding).
///
/// # Panics
/// If `cols` is zero or does not divide `x.len()`.
pub fn bitlinear_fake_quant(x: &mut [f32], cols: usize) {
    assert!(
        cols > 0 && x.len().is_multiple_of(cols),
        "bitlinear_fake_quant: {} values are not rows of {cols}",
        x.len()
    );
    with_simd!(fake_quant_impl(x, cols))
}

#[inline(always)]
fn fake_quant_impl(x: &mut [f32], cols: usize) {
    let mut q = vec![0i8; cols];
    for row in x.chunks_exact_mut(cols) {
        let (s, _) = quantize_row_i8_impl(row, &mut q);
        for (v, &q) in row.iter_mut().zip(&q) {
            *v = f32::from(q) / s;
        }
    }
}

/// Q8_K quantization of one 256-block (llama.cpp `quantize_row_q8_K_ref`): writes `q` and
/// returns `(d, Σq)`.
#[inline(always)]
pub(crate) fn quantize_block_q8_k(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    debug_assert_eq!(x.len(), q.len());
    // llama.cpp keeps the first element of largest magnitude (a strict `>` scan); find the
    // magnitude with a vectorizable reduction, then that element.
    let amax = abs_max(x);
    if amax == 0.0 {
        q.fill(0);
        return (0.0, 0);
    }
    let max = *x.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
    let iscale = -127.0 / max;
    let mut sum = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = nearest_int(iscale * v).min(127);
        *q = r as i8;
        sum += r;
    }
    (1.0 / iscale, sum)
}

/// Q8_0 quantization of one 32-block (llama.cpp `quantize_row_q8_0_ref`, identical to the Q8_0
/// weight encoder): writes `q` and returns `(f16(d) as f32, Σq)`.
#[inline(always)]
pub(crate) fn quantize_block_q8_0(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    debug_assert_eq!(x.len(), q8_0::BLOCK_SIZE);
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        // |v·id| ≤ 127 up to one rounding for finite input; the clamp only guards NaN/inf.
        let r = round_away(v * id).clamp(-127, 127);
        *q = r as i8;
        sum += r;
    }
    (half::f16::from_f32(d).to_f32(), sum)
}

/// A zeroed int8 buffer that starts on a 64-byte boundary, so that the kernels' 32- and 64-byte
/// loads of activation rows (whose lengths are multiples of 32) never straddle cache lines.
pub(crate) struct Codes {
    buf: Vec<i8>,
    start: usize,
    len: usize,
}

/// Buffers of dropped [`Codes`], kept per thread for the next call: a forward pass quantizes
/// the activations of every matmul, and fresh allocations of this size (tens to hundreds of
/// KiB for a block) cost page faults and zeroing by the kernel on every call.
const CODES_POOL_MAX: usize = 4;

thread_local! {
    static CODES_POOL: std::cell::RefCell<Vec<Vec<i8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Codes {
    pub(crate) fn zeroed(len: usize) -> Codes {
        let mut buf = CODES_POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_default();
        buf.clear();
        buf.resize(len + 63, 0);
        let start = buf.as_ptr().align_offset(64).min(63);
        Codes { buf, start, len }
    }
}

impl Drop for Codes {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // `try_with`: during thread teardown the pool may be gone; the buffer is then freed.
        let _ = CODES_POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < CODES_POOL_MAX {
                p.push(buf);
            }
        });
    }
}

impl std::ops::Deref for Codes {
    type Target = [i8];
    fn deref(&self) -> &[i8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Codes {
    fn deref_mut(&mut self) -> &mut [i8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Per-token int8 activations for I2_S: `q` row-major (`n_tokens × cols`), one scale and one
/// `Σq` per token.
pub(crate) struct I8Acts {
    pub cols: usize,
    pub q: Codes,
    pub scale: Vec<f32>,
    pub sum: Vec<i32>,
}

#[inline(always)]
fn quantize_i8_acts(x: &[f32], n_tokens: usize, cols: usize) -> I8Acts {
    let mut q = Codes::zeroed(n_tokens * cols);
    let mut scale = Vec::with_capacity(n_tokens);
    let mut sum = Vec::with_capacity(n_tokens);
    for (x, q) in x.chunks_exact(cols).zip(q.chunks_exact_mut(cols)) {
        let (s, t) = quantize_row_i8_impl(x, q);
        scale.push(s);
        sum.push(t);
    }
    I8Acts {
        cols,
        q,
        scale,
        sum,
    }
}

impl I8Acts {
    /// Token `t`'s codes.
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.cols..(t + 1) * self.cols]
    }
}

/// Block-scaled int8 activations (Q8_K for TQ1_0/TQ2_0/Q6_K, Q8_0 for Q8_0/Q4_0): `q` row-major
/// (`n_tokens × cols`); the block scales `d` and block sums `Σq` are stored block-major
/// (`[block][token]`), so a kernel finishing one block for several tokens reads them with one
/// vector load. For Q6_K, `group_sum` holds the sums of each 16-element group of codes
/// (`[block][token][16]`, empty for the other types).
pub(crate) struct BlockActs {
    pub cols: usize,
    pub n_tokens: usize,
    pub q: Codes,
    pub d: Vec<f32>,
    pub sum: Vec<i32>,
    pub group_sum: Vec<i16>,
}

#[inline(always)]
fn quantize_block_acts(
    x: &[f32],
    n_tokens: usize,
    cols: usize,
    block: usize,
    quantize_block: impl Fn(&[f32], &mut [i8]) -> (f32, i32),
) -> BlockActs {
    let nb = cols / block;
    let mut q = Codes::zeroed(n_tokens * cols);
    let mut d = vec![0.0f32; nb * n_tokens];
    let mut sum = vec![0i32; nb * n_tokens];
    for (t, (x, q)) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .enumerate()
    {
        for (b, (x, q)) in x
            .chunks_exact(block)
            .zip(q.chunks_exact_mut(block))
            .enumerate()
        {
            let (db, sb) = quantize_block(x, q);
            d[b * n_tokens + t] = db;
            sum[b * n_tokens + t] = sb;
        }
    }
    BlockActs {
        cols,
        n_tokens,
        q,
        d,
        sum,
        group_sum: Vec::new(),
    }
}

#[inline(always)]
fn quantize_q8_k_acts_with_group_sums(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
    let mut a = quantize_q8_k_acts(x, n_tokens, cols);
    let nb = cols / 256;
    a.group_sum = vec![0i16; nb * n_tokens * 16];
    for t in 0..n_tokens {
        for b in 0..nb {
            let q = &a.q[t * cols + 256 * b..t * cols + 256 * b + 256];
            let out = &mut a.group_sum[(b * n_tokens + t) * 16..][..16];
            for (s, g) in out.iter_mut().zip(q.chunks_exact(16)) {
                // |Σ| ≤ 16 · 128: fits i16.
                *s = g.iter().map(|&v| i16::from(v)).sum();
            }
        }
    }
    a
}

#[inline(always)]
fn quantize_q8_k_acts(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
    quantize_block_acts(x, n_tokens, cols, 256, quantize_block_q8_k)
}

#[inline(always)]
fn quantize_q8_0_acts(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
    quantize_block_acts(x, n_tokens, cols, q8_0::BLOCK_SIZE, quantize_block_q8_0)
}

impl BlockActs {
    /// Token `t`'s codes.
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.cols..(t + 1) * self.cols]
    }

    /// Scale of block `b` of token `t`.
    pub fn d(&self, b: usize, t: usize) -> f32 {
        self.d[b * self.n_tokens + t]
    }

    /// `Σq` over block `b` of token `t`.
    pub fn sum(&self, b: usize, t: usize) -> i32 {
        self.sum[b * self.n_tokens + t]
    }

    /// The 16 group sums of block `b` of token `t` (Q6_K activations only).
    #[allow(dead_code)] // used by the x86 kernels only
    pub fn group_sums(&self, b: usize, t: usize) -> &[i16; 16] {
        self.group_sum[(b * self.n_tokens + t) * 16..][..16]
            .try_into()
            .expect("16 group sums")
    }
}

/// Rows from which the activations are quantized a row per task on the pool (a block or a
/// prefill; the result is the same row by row).
const PAR_QUANT_ROWS: usize = 16;

fn quantize_i8(x: &[f32], n_tokens: usize, cols: usize) -> I8Acts {
    if n_tokens >= PAR_QUANT_ROWS && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let mut q = Codes::zeroed(n_tokens * cols);
        let rows: Vec<(f32, i32)> = q
            .par_chunks_mut(cols)
            .zip(x.par_chunks(cols))
            .map(|(q, x)| quantize_row_i8(x, q))
            .collect();
        let (scale, sum) = rows.into_iter().unzip();
        return I8Acts {
            cols,
            q,
            scale,
            sum,
        };
    }
    with_simd!(quantize_i8_acts(x, n_tokens, cols))
}

fn quantize_q8_k(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
    with_simd!(quantize_q8_k_acts(x, n_tokens, cols))
}

fn quantize_q8_0(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
    with_simd!(quantize_q8_0_acts(x, n_tokens, cols))
}

fn quantize_q8_k_with_group_sums(x: &[f32], n_tokens: usize, cols: usize) -> BlockActs {
    with_simd!(quantize_q8_k_acts_with_group_sums(x, n_tokens, cols))
}

/// The activations of one matmul call, quantized as the weight type requires.
pub(crate) enum Acts<'a> {
    /// Float weights use the input as is (one token, or already 64-byte aligned).
    F32(&'a [f32]),
    /// Float weights with several tokens: the input copied to a 64-byte boundary, so that the
    /// kernels' vector loads of activations never straddle cache lines (they are reused by
    /// every row; a misaligned 8-token input measured ~10 % slower on an F16 head).
    F32Aligned(AlignedF32),
    /// I2_S.
    I8(I8Acts),
    /// TQ1_0/TQ2_0/Q6_K (Q8_K, 256) and Q8_0/Q4_0 (Q8_0, 32).
    Blocks(BlockActs),
}

impl<'a> Acts<'a> {
    /// Quantizes `n_tokens` rows of `cols` for weights of type `ty`.
    pub fn new(ty: GgmlType, x: &'a [f32], n_tokens: usize, cols: usize) -> Acts<'a> {
        debug_assert_eq!(x.len(), n_tokens * cols);
        match ty {
            GgmlType::I2_S => Acts::I8(quantize_i8(x, n_tokens, cols)),
            GgmlType::TQ1_0 | GgmlType::TQ2_0 => Acts::Blocks(quantize_q8_k(x, n_tokens, cols)),
            GgmlType::Q6_K => Acts::Blocks(quantize_q8_k_with_group_sums(x, n_tokens, cols)),
            GgmlType::Q8_0 | GgmlType::Q4_0 => Acts::Blocks(quantize_q8_0(x, n_tokens, cols)),
            _ if n_tokens > 1 && !(x.as_ptr() as usize).is_multiple_of(64) => {
                Acts::F32Aligned(AlignedF32::copy_of(x))
            }
            _ => Acts::F32(x),
        }
    }

    /// The I2_S activations. Panics on another kind (a dispatch bug).
    pub fn i8(&self) -> &I8Acts {
        match self {
            Acts::I8(a) => a,
            _ => unreachable!("kernel dispatch: expected I2_S activations"),
        }
    }

    /// The block activations. Panics on another kind (a dispatch bug).
    pub fn blocks(&self) -> &BlockActs {
        match self {
            Acts::Blocks(a) => a,
            _ => unreachable!("kernel dispatch: expected block activations"),
        }
    }

    /// The f32 input. Panics on another kind (a dispatch bug).
    pub fn f32(&self) -> &[f32] {
        match self {
            Acts::F32(x) => x,
            Acts::F32Aligned(x) => x.as_slice(),
            _ => unreachable!("kernel dispatch: expected f32 activations"),
        }
    }
}

/// A copy of some f32 values starting on a 64-byte boundary.
pub(crate) struct AlignedF32 {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedF32 {
    fn copy_of(x: &[f32]) -> AlignedF32 {
        let mut buf: Vec<f32> = Vec::with_capacity(x.len() + 15);
        let start = buf.as_ptr().align_offset(64).min(15);
        buf.resize(start, 0.0);
        buf.extend_from_slice(x);
        AlignedF32 {
            buf,
            start,
            len: x.len(),
        }
    }

    fn as_slice(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several tokens of float activations reach the kernels 64-byte aligned, with the same
    /// values; one token is used in place.
    #[test]
    fn float_activations_of_several_tokens_are_aligned_copies() {
        let x: Vec<f32> = (0..3 * 40 + 16).map(|i| i as f32 * 0.5 - 7.0).collect();
        for off in 0..16 {
            let xs = &x[off..off + 3 * 40];
            let acts = Acts::new(GgmlType::F16, xs, 3, 40);
            assert_eq!(acts.f32(), xs);
            assert!(
                (acts.f32().as_ptr() as usize).is_multiple_of(64),
                "offset {off}"
            );
            let one = Acts::new(GgmlType::F32, &xs[..40], 1, 40);
            assert_eq!(one.f32().as_ptr(), xs.as_ptr());
        }
    }

    /// A block's or a prefill's rows (quantized a row per task) are exactly the rows quantized
    /// one at a time.
    #[test]
    fn many_rows_are_quantized_as_each_row_alone() {
        let (n, cols) = (40, 384);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / (1.0 + (i / cols) as f32))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let acts = pool.install(|| quantize_i8(&x, n, cols));
        for t in 0..n {
            let mut q = vec![0i8; cols];
            let (s, sum) = quantize_row_i8(&x[t * cols..(t + 1) * cols], &mut q);
            assert_eq!(acts.row(t), &q[..], "row {t}");
            assert_eq!(
                (acts.scale[t].to_bits(), acts.sum[t]),
                (s.to_bits(), sum),
                "row {t}"
            );
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even_and_round_away_like_roundf() {
        for (v, even, away) in [
            (0.5f32, 0, 1),
            (1.5, 2, 2),
            (2.5, 2, 3),
            (-0.5, 0, -1),
            (-1.5, -2, -2),
            (-2.5, -2, -3),
            (0.49999997, 0, 0),
            (-0.49999997, 0, 0),
            (126.5, 126, 127),
            (-127.5, -128, -128),
            (3.7, 4, 4),
            (-3.2, -3, -3),
            (0.0, 0, 0),
            (-0.0, 0, 0),
        ] {
            assert_eq!(nearest_int(v), even, "nearest_int({v})");
            assert_eq!(round_away(v), away, "round_away({v})");
            assert_eq!(even, v.round_ties_even() as i32);
            assert_eq!(away, v.round() as i32);
        }
        // Every multiple of 1/64 in [-200, 200] (many ties), against std.
        for i in -12800..=12800 {
            let v = i as f32 / 64.0;
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
            assert_eq!(round_away(v), v.round() as i32, "{v}");
        }
    }

    /// Hand-computed: amax = 2 → s = 63.5. x·s: 1 → 63.5 (tie → 64, even), -1 → -63.5 (→ -64),
    /// 1/127 → 0.5 (tie → 0), 3/127 → 1.5 (→ 2), -2 → -127, 0.25 → 15.875 (→ 16).
    #[test]
    fn quantize_row_i8_hand_computed_with_ties() {
        let x = [1.0f32, -1.0, 1.0 / 127.0, 3.0 / 127.0, -2.0, 0.25, 0.0, 2.0];
        let mut q = [0i8; 8];
        let (s, sum) = quantize_row_i8(&x, &mut q);
        assert_eq!(s, 63.5);
        // 1/127 · 63.5 rounds in f32 to exactly 0.5? Check the product the kernel sees.
        assert_eq!((1.0f32 / 127.0) * 63.5, 0.5);
        assert_eq!((3.0f32 / 127.0) * 63.5, 1.5);
        assert_eq!(q, [64, -64, 0, 2, -127, 16, 0, 127]);
        assert_eq!(sum, 18); // 64 − 64 + 0 + 2 − 127 + 16 + 0 + 127
    }

    /// The scale is computed as bitnet.cpp does, `(127.0f64 / amax) as f32`. (A quotient
    /// computed in f64 and rounded to f32 is the correctly rounded f32 quotient, so this equals
    /// `127f32 / amax`; the f64 only matters for the 1e-5 floor constant.)
    #[test]
    fn quantize_row_i8_scale_matches_bitnet_cpp() {
        let mut q = [0i8; 1];
        for i in 1..2000 {
            let a = i as f32 * 0.013;
            let (s, _) = quantize_row_i8(&[-a], &mut q);
            assert_eq!(s, (127.0 / f64::from(a)) as f32);
            assert_eq!(s, 127.0f32 / a);
            assert_eq!(q[0], -127);
        }
    }

    /// All-tiny input: amax floors at 1e-5 (as f64), so s = 12_700_000 and values below
    /// 0.5 / s ≈ 3.9e-8 become 0.
    #[test]
    fn quantize_row_i8_floor_at_1e_5() {
        let x = [1e-6f32, -3e-8, 4e-8, 0.0, -1e-5];
        let mut q = [0i8; 5];
        let (s, sum) = quantize_row_i8(&x, &mut q);
        assert_eq!(s, (127.0 / 1e-5f64) as f32);
        assert_eq!(s, 12_700_000.0);
        // 1e-6·s = 12.7 → 13; -3e-8·s = -0.381 → 0; 4e-8·s = 0.508 → 1; -1e-5·s = -127.
        assert_eq!(q, [13, 0, 1, 0, -127]);
        assert_eq!(sum, 13 + 1 - 127);
        let (s, sum) = quantize_row_i8(&[0.0; 4], &mut [0; 4]);
        assert_eq!((s, sum), (12_700_000.0, 0));
    }

    #[test]
    fn fake_quant_is_q_over_s_per_row() {
        let mut x = vec![1.0f32, -2.0, 0.5, 0.0, 10.0, 5.0];
        bitlinear_fake_quant(&mut x, 3);
        // Row 0: s = 63.5: q = 64, -127, 32 (31.75 → 32).
        assert_eq!(&x[..3], &[64.0 / 63.5, -127.0 / 63.5, 32.0 / 63.5]);
        // Row 1: s = 12.7: q = 0, 127, 63.5 → 64 (tie to even).
        assert_eq!(5.0f32 * 12.7, 63.5);
        assert_eq!(&x[3..], &[0.0, 127.0 / 12.7, 64.0 / 12.7]);
    }

    /// Q8_K: the signed max decides the sign of d; ties are half-to-even; +max maps to -127.
    #[test]
    fn q8_k_block_hand_computed() {
        let mut x = [0.0f32; 256];
        x[0] = 1.0;
        x[1] = -2.54; // max by magnitude, negative: iscale = -127 / -2.54 = 50
        x[2] = 0.01; // 0.5 → 0 (half to even)
        x[3] = 0.03; // 1.5 → 2
        x[4] = 2.54; // 127
        let mut q = [0i8; 256];
        let (d, sum) = quantize_block_q8_k(&x, &mut q);
        let iscale = -127.0f32 / -2.54;
        assert_eq!(d, 1.0 / iscale);
        assert_eq!(
            &q[..5],
            &[
                nearest_int(iscale) as i8,
                -127,
                nearest_int(iscale * 0.01) as i8,
                nearest_int(iscale * 0.03) as i8,
                127
            ]
        );
        assert_eq!(q[1], -127);
        assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
        // A positive max gives a negative d and codes of the opposite sign.
        x[1] = 0.0;
        let (d, _) = quantize_block_q8_k(&x, &mut q);
        assert!(d < 0.0);
        assert_eq!((q[0], q[4]), (nearest_int(-127.0 / 2.54) as i8, -127));
        assert_eq!(quantize_block_q8_k(&[0.0; 256], &mut q), (0.0, 0));
        assert!(q.iter().all(|&v| v == 0));
    }

    /// The Q8_0 activation codes are exactly the Q8_0 weight encoder's bytes.
    #[test]
    fn q8_0_block_matches_the_format_encoder() {
        let mut x = [0.0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 15.5) * 0.37 + if i % 3 == 0 { 0.5 } else { 0.0 };
        }
        x[7] = 127.0 * 0.25 / 2.0 * 1.0; // forces some exact ties with d = amax / 127
        let mut q = [0i8; 32];
        let (d, sum) = quantize_block_q8_0(&x, &mut q);
        let mut bytes = [0u8; 34];
        q8_0::quantize_block(&x, &mut bytes);
        assert_eq!(d, crate::formats::f16::decode([bytes[0], bytes[1]]));
        assert!(q.iter().zip(&bytes[2..]).all(|(&a, &b)| a as u8 == b));
        assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
    }
}
