//! Matrix multiplication kernels: `y = W·x` with `W` in its GGUF bytes (mmapped, never decoded to
//! f32 as a whole) and `x` a few f32 rows.
//!
//! The model of a call ([`matmul`]): `W` has `rows` output rows of `cols` elements (ggml `ne[1]`
//! and `ne[0]`); `x` holds `n_tokens` rows of `cols`; the result holds `n_tokens` rows of `rows`:
//! `out[t·rows + r] = Σ_c W[r, c]·x[t·cols + c]`.
//!
//! 1. The activations are quantized once per call with the rule of the weight's type
//!    (`act.rs`: per-token int8 for I2_S, Q8_K for TQ1_0/TQ2_0/Q6_K, Q8_0 for Q8_0/Q4_0; none
//!    for F32/F16/BF16).
//! 2. The output rows are split into chunks that run in parallel on the current rayon pool.
//! 3. Inside a chunk, a kernel takes a tile of up to 8 tokens and, for each weight row, unpacks
//!    each weight block once and multiplies it with all tokens of the tile (bitnet.cpp's `_Nx1`
//!    idea). A 32-token diffusion block thus reads and unpacks its weights 4 times from L2
//!    instead of 32 times from DRAM. Decode (1 token) takes 4 rows at a time instead, to share
//!    the per-row reductions — one from each quarter of its chunk, so that a thread reads four
//!    sequential streams, which keeps more misses in flight than one — and prefetches the next
//!    rows itself. Matrices that read the same input can share one call ([`matmul_shared`]). Rows longer than one L1's
//!    worth of the tile's activations are walked in column segments.
//!
//! Every kernel exists as a scalar reference (`scalar.rs`, the definition) and as SIMD variants
//! picked at run time ([`SimdLevel`]): AVX2 (`maddubs`: unsigned codes × signed int8), AVX-512
//! VNNI (`vpdpbusd`, 512-bit), NEON (I2_S, TQ2_0, F32 and BF16; the other types use the scalar
//! code on ARM). The integer kernels give bit-identical results at every level: the integer
//! dot products are exact and the float epilogues run in the same order with the same
//! operations. The float kernels (F32/F16/BF16) sum in a different order per level and agree
//! within the usual `n·ε·Σ|w·x|` bound.
//!
//! On CPUs with AMX-INT8, [`SimdLevel::Amx`] runs multi-row ternary and Q8_0 calls (from
//! [`min_tile_tokens`] rows) on tiles (`amx.rs`): the codes of 32 weight rows are unpacked a few
//! hundred columns at a time into int8 A tiles (for I2_S overlapped with the products of the
//! previous columns), the activations are packed once per call into B tiles, and `TDPBUSD`
//! accumulates 16×16 blocks, with the same integer results and float epilogues as the scalar
//! reference. The tile code is written against a narrow interface
//! (`tiles.rs`) with a plain-Rust emulation beside the real instructions, so every packing and
//! epilogue detail is tested on every machine. `attn.rs` holds attention's score and value-mix
//! loops, compiled per level the same way.
//!
//! `docs/benchmarks.md` has the measured speeds and what they mean for decode vs. block
//! diffusion.

// The kernels index parallel arrays (tokens, lanes, accumulators) by the same loop counter.
#![allow(clippy::needless_range_loop)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod act;
mod amx;
mod attn;
mod scalar;
mod tiles;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::{GgmlType, QuantError};

pub use act::{bitlinear_fake_quant, quantize_row_i8};
pub use amx::{amx_available, TileBackend, TILE_TYPES};
pub use attn::{attend, exp_sum, silu_mul, softmax_exp, AttnBuf};

pub(crate) use act::{nearest_int, Acts, BlockActs, I8Acts};

/// The weight types [`matmul`] accepts.
pub const KERNEL_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
    GgmlType::Q6_K,
];

/// A weight matrix as stored in a GGUF: `rows` output rows (ggml `ne[1]`) of `cols` elements
/// (`ne[0]`), borrowed bytes (mmapped).
///
/// The fields are public so a caller can build one without checks; [`QMatrix::new`] checks
/// them, and [`matmul`] checks them again (panicking) before touching the bytes.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    /// The ggml type of the elements.
    pub ty: GgmlType,
    /// The tensor's bytes, exactly [`crate::tensor_nbytes`] long (I2_S: codes, then the f32
    /// scale and 28 padding bytes).
    pub data: &'a [u8],
    /// Output rows (ggml `ne[1]`).
    pub rows: usize,
    /// Elements per row (ggml `ne[0]`).
    pub cols: usize,
}

impl<'a> QMatrix<'a> {
    /// Checks that a kernel exists for `ty`, that `cols` suits the type (a multiple of 32 for
    /// Q8_0/Q4_0, 256 for TQ1_0/TQ2_0, 128 for I2_S), that `data` is exactly the tensor's
    /// size, and (I2_S) that the per-tensor scale is finite
    /// ([`QuantError::NonFiniteScale`]). Per-block scales are not read here: that would touch
    /// every page of the weights at load.
    pub fn new(ty: GgmlType, data: &'a [u8], rows: usize, cols: usize) -> Result<Self, QuantError> {
        let m = QMatrix {
            ty,
            data,
            rows,
            cols,
        };
        m.validate()?;
        if ty == GgmlType::I2_S {
            // Checked here, at load, not in `validate` (which `matmul` runs on every call).
            let scale = m.i2s_scale();
            if !scale.is_finite() {
                return Err(QuantError::NonFiniteScale {
                    ty,
                    scale_bits: scale.to_bits(),
                });
            }
        }
        Ok(m)
    }

    /// What [`QMatrix::new`] checks, except the I2_S scale.
    pub fn validate(&self) -> Result<(), QuantError> {
        let ty = self.ty;
        if !KERNEL_TYPES.contains(&ty) {
            return Err(QuantError::NoKernel { ty });
        }
        let n_elements = self
            .rows
            .checked_mul(self.cols)
            .ok_or(QuantError::TooLarge {
                ty,
                n_elements: usize::MAX,
            })?;
        let expected = crate::tensor_nbytes(ty, self.cols, n_elements)?;
        if self.data.len() != expected {
            return Err(QuantError::ByteLength {
                ty,
                n_elements,
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// Bytes of one row's codes (for I2_S, without the tensor's 32-byte tail).
    #[inline]
    pub(crate) fn row_bytes(&self) -> usize {
        match self.ty {
            GgmlType::I2_S => self.cols / 4,
            ty => {
                let info = ty.info().expect("validated type");
                self.cols / info.block_size as usize * info.type_size as usize
            }
        }
    }

    /// Row `r`'s bytes.
    #[inline]
    pub(crate) fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// The I2_S tensor scale (the f32 after the codes).
    pub(crate) fn i2s_scale(&self) -> f32 {
        crate::formats::i2_s::scale(self.data)
    }
}

/// A SIMD instruction set a kernel can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Plain Rust: the reference definition of every kernel.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI (and AVX2, FMA, F16C).
    Avx512Vnni,
    /// AArch64 Advanced SIMD.
    Neon,
    /// [`SimdLevel::Avx512Vnni`] plus AMX-INT8 tiles for ternary weights (I2_S, TQ2_0, TQ1_0)
    /// when a call has enough rows ([`min_tile_tokens`]); everything else as AVX-512.
    Amx,
}

impl SimdLevel {
    /// Every level, slowest first.
    pub const ALL: [SimdLevel; 5] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512Vnni,
        SimdLevel::Amx,
    ];

    /// The name [`simd_level`] reports: `"scalar"`, `"avx2"`, `"avx512vnni"`, `"amx"` or
    /// `"neon"`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512Vnni => "avx512vnni",
            SimdLevel::Neon => "neon",
            SimdLevel::Amx => "amx",
        }
    }

    /// The level called `name` (as [`SimdLevel::name`] spells it), if any.
    pub fn from_name(name: &str) -> Option<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the level's kernels.
    pub fn is_available(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512Vnni => {
                SimdLevel::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            SimdLevel::Amx => SimdLevel::Avx512Vnni.is_available() && amx_available(),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The levels this CPU can run, slowest first (always starts with [`SimdLevel::Scalar`]).
pub fn available_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_available())
        .collect()
}

/// The level [`matmul`] uses: the fastest available one, or the one named by the environment
/// variable `DLM_SIMD` (`scalar`, `avx2`, `avx512vnni`, `amx`, `neon`) when this CPU has it. Detected
/// once per process.
pub fn selected_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = *available_levels().last().unwrap_or(&SimdLevel::Scalar);
        match std::env::var("DLM_SIMD") {
            Ok(name) => match SimdLevel::from_name(&name) {
                Some(l) if l.is_available() => l,
                _ => {
                    eprintln!(
                        "DLM_SIMD={name:?} is not a level this CPU has (available: {}); using {}",
                        available_levels()
                            .iter()
                            .map(|l| l.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        best.name()
                    );
                    best
                }
            },
            Err(_) => best,
        }
    })
}

/// Which SIMD level is in use (for logs and benchmarks): `"amx"`, `"avx512vnni"`, `"avx2"`,
/// `"neon"` or `"scalar"`.
pub fn simd_level() -> &'static str {
    selected_level().name()
}

/// One line for logs: the selected level and what it means for multi-row calls, e.g.
/// `amx (AMX-INT8 tiles for I2_S from 5 rows, TQ2_0/TQ1_0 from 4, Q8_0 from 3; AVX-512 VNNI
/// otherwise)`.
pub fn kernel_summary() -> String {
    let level = selected_level();
    let detail = match level {
        SimdLevel::Amx => format!(
            "AMX-INT8 tiles for I2_S from {} rows, TQ2_0/TQ1_0 from {}, Q8_0 from {}; AVX-512 \
             VNNI otherwise",
            min_tile_tokens(GgmlType::I2_S).unwrap_or(0),
            min_tile_tokens(GgmlType::TQ2_0).unwrap_or(0),
            min_tile_tokens(GgmlType::Q8_0).unwrap_or(0)
        ),
        SimdLevel::Avx512Vnni if amx_available() => {
            "AVX-512 VNNI; AMX available but not selected (DLM_SIMD)".into()
        }
        SimdLevel::Avx512Vnni => "AVX-512 VNNI; no AMX on this CPU/OS".into(),
        SimdLevel::Avx2 => "AVX2; no AVX-512 VNNI or AMX".into(),
        SimdLevel::Neon => "NEON".into(),
        SimdLevel::Scalar => "portable scalar code".into(),
    };
    format!("{} ({detail})", level.name())
}

/// `out[t·rows + r] = Σ_c W[r, c]·x[t·cols + c]` for `t` in `0..n_tokens`, with the activation
/// quantization of `w`'s type (see the module docs).
///
/// Runs in parallel over output rows on the current rayon pool (size it with the pool, e.g.
/// `--threads`). Allocates only the quantized activations (about `n_tokens·cols` bytes).
///
/// # Panics
/// If `w` fails [`QMatrix::validate`], `x.len() != n_tokens·cols` or
/// `out.len() != n_tokens·rows`.
pub fn matmul(w: &QMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    matmul_with(selected_level(), w, x, n_tokens, out);
}

/// [`matmul`] at a given SIMD level (for tests and benchmarks).
///
/// # Panics
/// As [`matmul`], and if this CPU lacks `level` ([`SimdLevel::is_available`]).
pub fn matmul_with(level: SimdLevel, w: &QMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    matmul_shared_with(level, &[*w], x, n_tokens, &mut [out]);
}

/// `outs[i] = ws[i]·x` for matrices that read the same input (a layer's query/key/value
/// projections, or its FFN gate and up): one call quantizes `x` once and runs the rows of all
/// the matrices in one parallel section, instead of one quantization and one fork-join each.
/// The results are those of [`matmul`] on each matrix.
///
/// # Panics
/// As [`matmul`] for each matrix, and if the matrices differ in type or width or `outs` does
/// not hold one output per matrix.
pub fn matmul_shared(ws: &[QMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
    matmul_shared_with(selected_level(), ws, x, n_tokens, outs);
}

/// [`matmul_shared`] at a given SIMD level.
///
/// # Panics
/// As [`matmul_shared`], and if this CPU lacks `level`.
pub fn matmul_shared_with(
    level: SimdLevel,
    ws: &[QMatrix],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
) {
    assert!(
        level.is_available(),
        "matmul: SIMD level {} is not available on this CPU",
        level.name()
    );
    assert_eq!(ws.len(), outs.len(), "matmul: one output per matrix");
    let Some(w0) = ws.first() else { return };
    for (w, out) in ws.iter().zip(outs.iter()) {
        if let Err(e) = w.validate() {
            panic!(
                "matmul: invalid weight matrix ({} x {}): {e}",
                w.rows, w.cols
            );
        }
        assert!(
            w.ty == w0.ty && w.cols == w0.cols,
            "matmul: matrices sharing an input must share type and width"
        );
        assert_eq!(
            x.len(),
            n_tokens * w.cols,
            "matmul: x must hold n_tokens = {n_tokens} rows of {} values",
            w.cols
        );
        assert_eq!(
            out.len(),
            n_tokens * w.rows,
            "matmul: out must hold n_tokens = {n_tokens} rows of {} values",
            w.rows
        );
    }
    if n_tokens == 0 {
        return;
    }
    let acts = Acts::new(w0.ty, x, n_tokens, w0.cols);
    let outs: Vec<Out> = ws
        .iter()
        .zip(outs.iter_mut())
        .map(|(w, out)| Out::new(out, w.rows, n_tokens))
        .collect();
    if level == SimdLevel::Amx && uses_tiles(w0.ty, n_tokens) {
        let ws: Vec<&QMatrix> = ws.iter().collect();
        amx::matmul_tiles(TileBackend::Hardware, &ws, &acts, n_tokens, &outs);
        return;
    }
    let kernel = kernel_fn(level, w0.ty);
    // (matrix, rows) tasks over all the matrices; each matrix chunked as alone.
    let mut tasks: Vec<(usize, Range<usize>)> = Vec::new();
    let mut parallel = false;
    for (i, w) in ws.iter().enumerate() {
        let (chunk, par) = chunk_rows(w, n_tokens);
        parallel |= par;
        tasks.extend(
            (0..w.rows)
                .step_by(chunk)
                .map(|r| (i, r..(r + chunk).min(w.rows))),
        );
    }
    let run = |(i, rows): &(usize, Range<usize>)| kernel(&ws[*i], &acts, rows.clone(), &outs[*i]);
    if parallel && tasks.len() > 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}

/// The fewest activation rows for which [`SimdLevel::Amx`] takes the tile kernels for `ty`
/// (`None`: no tile kernel). Fewer rows (decode, the last rows of a sub-block) stay on the
/// AVX-512 kernels, which are memory-bound there already. The crossovers, measured on a
/// Sapphire-Rapids-class Xeon (2 threads, weights streamed; docs/benchmarks.md, December 8):
/// Q8_0 from 3 rows (the 128256-row head: 3 rows 31 → 24 ms, 6 rows 54 → 26 ms; 2 rows
/// 19 ms on AVX-512 against 25), TQ2_0 and TQ1_0 from 4 (TQ2_0 13824 × 2560, 4 rows:
/// 1.19 → 0.96 ms), I2_S from 5 (5 rows: 0.72–0.79 → 0.60–0.63 ms; 4 rows 0.68 on AVX-512
/// against 0.79).
pub fn min_tile_tokens(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q8_0 => Some(3),
        GgmlType::TQ2_0 | GgmlType::TQ1_0 => Some(4),
        GgmlType::I2_S => Some(5),
        _ => None,
    }
}

/// Whether a call of `n_tokens` rows on `ty` weights runs on tiles at [`SimdLevel::Amx`].
pub fn uses_tiles(ty: GgmlType, n_tokens: usize) -> bool {
    min_tile_tokens(ty).is_some_and(|m| n_tokens >= m)
}

/// [`matmul`] through the tile kernels on `backend`, whatever the row count: the entry the
/// tests use to check the emulated tiles everywhere and the real ones where the CPU has them.
///
/// # Panics
/// As [`matmul`]; if `w.ty` is not in [`TILE_TYPES`]; if `backend` is
/// [`TileBackend::Hardware`] and [`amx_available`] is false.
pub fn matmul_tiles(
    backend: TileBackend,
    w: &QMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) {
    if let Err(e) = w.validate() {
        panic!(
            "matmul_tiles: invalid weight matrix ({} x {}): {e}",
            w.rows, w.cols
        );
    }
    assert_eq!(
        x.len(),
        n_tokens * w.cols,
        "matmul_tiles: x must hold n_tokens = {n_tokens} rows of {} values",
        w.cols
    );
    assert_eq!(
        out.len(),
        n_tokens * w.rows,
        "matmul_tiles: out must hold n_tokens = {n_tokens} rows of {} values",
        w.rows
    );
    if n_tokens == 0 || w.rows == 0 {
        return;
    }
    let acts = Acts::new(w.ty, x, n_tokens, w.cols);
    let out = Out::new(out, w.rows, n_tokens);
    amx::matmul_tiles(backend, &[w], &acts, n_tokens, &[out]);
}

/// How many rows one kernel call takes, and whether the calls run in parallel.
///
/// A kernel walks its rows once per tile of up to 8 tokens, so with several tiles a chunk's
/// weights should stay in L2: at most ~256 KiB of them (at least 16 rows). In parallel, about 4
/// chunks per thread so that work-stealing evens out; a tiny call runs on the calling thread.
/// Chunk sizes are multiples of 16 rows.
fn chunk_rows(w: &QMatrix, n_tokens: usize) -> (usize, bool) {
    let threads = rayon::current_num_threads().max(1);
    let parallel = threads > 1 && w.rows * w.cols * n_tokens >= 1 << 18;
    let by_cache = if n_tokens > 1 {
        (256 << 10) / w.row_bytes().max(1)
    } else {
        w.rows
    };
    let by_threads = if parallel {
        w.rows.div_ceil(threads * 4)
    } else {
        w.rows
    };
    let chunk = by_threads.min(by_cache).max(16).next_multiple_of(16);
    (chunk, parallel)
}

/// One kernel: computes the output rows `rows` for every token.
pub(crate) type KernelFn = fn(&QMatrix, &Acts, Range<usize>, &Out);

fn kernel_fn(level: SimdLevel, ty: GgmlType) -> KernelFn {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => x86::avx2::kernel(ty),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni | SimdLevel::Amx => x86::avx512::kernel(ty),
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => neon::kernel(ty),
        _ => scalar::kernel(ty),
    }
}

/// The output matrix, shared by the parallel tasks; each writes only its own rows.
pub(crate) struct Out<'a> {
    ptr: *mut f32,
    rows: usize,
    n_tokens: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: `Out` only hands out writes through `set`, whose contract makes callers write disjoint
// elements; the pointer comes from a `&mut [f32]` that outlives `'a`.
unsafe impl Send for Out<'_> {}
// SAFETY: as above: concurrent `set` calls touch distinct elements.
unsafe impl Sync for Out<'_> {}

impl<'a> Out<'a> {
    fn new(out: &'a mut [f32], rows: usize, n_tokens: usize) -> Out<'a> {
        assert_eq!(out.len(), rows * n_tokens);
        Out {
            ptr: out.as_mut_ptr(),
            rows,
            n_tokens,
            _out: PhantomData,
        }
    }

    /// Writes `out[t·rows + r] = v`.
    ///
    /// # Safety
    /// No other thread may read or write element `(t, r)` during the call: each task writes
    /// only the rows of its own chunk.
    #[inline]
    pub(crate) unsafe fn set(&self, t: usize, r: usize, v: f32) {
        assert!(
            t < self.n_tokens && r < self.rows,
            "output index out of range"
        );
        // SAFETY: in bounds (checked above) of the slice `ptr` came from; exclusive per the
        // caller's contract.
        unsafe { self.ptr.add(t * self.rows + r).write(v) }
    }

    /// Asks for the cache line holding `out[t·rows + r]` in a writable state (`PREFETCHW`), so
    /// that a later store does not wait for the line's read-for-ownership. A hint: out-of-range
    /// elements are ignored.
    #[allow(dead_code)] // unused on targets without tile kernels
    #[inline(always)]
    pub(crate) fn prefetch_write(&self, t: usize, r: usize) {
        #[cfg(target_arch = "x86_64")]
        if t < self.n_tokens && r < self.rows {
            // SAFETY: a prefetch never faults; the address is inside the output.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                    self.ptr.wrapping_add(t * self.rows + r).cast(),
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (t, r);
    }

    /// A pointer to `out[t·rows + r0]`, the first of `len` consecutive rows of token `t`.
    ///
    /// # Panics
    /// If the `len` elements are out of range.
    ///
    /// # Safety
    /// Writes through the pointer follow [`Out::set`]'s contract, for every element written.
    #[allow(dead_code)] // unused on targets without tile kernels
    #[inline(always)]
    pub(crate) unsafe fn row_ptr(&self, t: usize, r0: usize, len: usize) -> *mut f32 {
        assert!(
            t < self.n_tokens && r0 + len <= self.rows,
            "output index out of range"
        );
        self.ptr.wrapping_add(t * self.rows + r0)
    }
}

/// The tokens `t0..t0 + T` of a tile, as an array of row slices.
#[allow(dead_code)] // unused on targets without SIMD kernels
pub(crate) fn token_rows<'s, E, const T: usize>(
    row: impl Fn(usize) -> &'s [E],
    t0: usize,
) -> [&'s [E]; T] {
    std::array::from_fn(|i| row(t0 + i))
}

/// Calls `$f::<G…, T>(t0, args…)` for consecutive token tiles of at most 8 (6, 4, 3) tokens, with
/// `T` the tile's size as a constant, so the token loops unroll and the accumulators live in
/// registers. `G…` are optional leading generic arguments, written `f[K,](…)`.
#[allow(unused_macros)]
macro_rules! for_token_tiles {
    ($max:tt, $n_tokens:expr, $f:ident $([$($g:tt)*])? ( $($arg:expr),* $(,)? )) => {{
        let n_tokens: usize = $n_tokens;
        let mut t0 = 0;
        while t0 < n_tokens {
            let nt = (n_tokens - t0).min($max);
            for_token_tiles!(@match $max, nt, t0, $f [$($($g)*)?] ($($arg),*));
            t0 += nt;
        }
    }};
    (@match 8, $nt:ident, $t0:ident, $f:ident [$($g:tt)*] ($($arg:expr),*)) => {
        match $nt {
            1 => $f::<$($g)* 1>($t0, $($arg),*),
            2 => $f::<$($g)* 2>($t0, $($arg),*),
            3 => $f::<$($g)* 3>($t0, $($arg),*),
            4 => $f::<$($g)* 4>($t0, $($arg),*),
            5 => $f::<$($g)* 5>($t0, $($arg),*),
            6 => $f::<$($g)* 6>($t0, $($arg),*),
            7 => $f::<$($g)* 7>($t0, $($arg),*),
            _ => $f::<$($g)* 8>($t0, $($arg),*),
        }
    };
    (@match 6, $nt:ident, $t0:ident, $f:ident [$($g:tt)*] ($($arg:expr),*)) => {
        match $nt {
            1 => $f::<$($g)* 1>($t0, $($arg),*),
            2 => $f::<$($g)* 2>($t0, $($arg),*),
            3 => $f::<$($g)* 3>($t0, $($arg),*),
            4 => $f::<$($g)* 4>($t0, $($arg),*),
            5 => $f::<$($g)* 5>($t0, $($arg),*),
            _ => $f::<$($g)* 6>($t0, $($arg),*),
        }
    };
    (@match 3, $nt:ident, $t0:ident, $f:ident [$($g:tt)*] ($($arg:expr),*)) => {
        match $nt {
            1 => $f::<$($g)* 1>($t0, $($arg),*),
            2 => $f::<$($g)* 2>($t0, $($arg),*),
            _ => $f::<$($g)* 3>($t0, $($arg),*),
        }
    };
    (@match 4, $nt:ident, $t0:ident, $f:ident [$($g:tt)*] ($($arg:expr),*)) => {
        match $nt {
            1 => $f::<$($g)* 1>($t0, $($arg),*),
            2 => $f::<$($g)* 2>($t0, $($arg),*),
            3 => $f::<$($g)* 3>($t0, $($arg),*),
            _ => $f::<$($g)* 4>($t0, $($arg),*),
        }
    };
}
#[allow(unused_imports)]
pub(crate) use for_token_tiles;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmatrix_new_checks_type_shape_and_size() {
        let ok = vec![0u8; 2 * 34];
        assert!(QMatrix::new(GgmlType::Q8_0, &ok, 2, 32).is_ok());
        assert_eq!(
            QMatrix::new(GgmlType::Q8_0, &ok[..67], 2, 32).unwrap_err(),
            QuantError::ByteLength {
                ty: GgmlType::Q8_0,
                n_elements: 64,
                expected: 68,
                got: 67
            }
        );
        assert!(matches!(
            QMatrix::new(GgmlType::Q8_0, &ok, 1, 68),
            Err(QuantError::RowLength { .. })
        ));
        let e = QMatrix::new(GgmlType::Q4_1, &ok[..20], 1, 32).unwrap_err();
        assert_eq!(e, QuantError::NoKernel { ty: GgmlType::Q4_1 });
        assert_eq!(
            e.to_string(),
            "no matmul kernel for Q4_1 (supported: F32, F16, BF16, Q8_0, Q4_0, TQ1_0, TQ2_0, I2_S, Q6_K)"
        );
        assert!(QMatrix::new(GgmlType::Q6_K, &[0; 420], 2, 256).is_ok());
        // I2_S: 2 × 128 codes = 64 bytes, plus the 32-byte tail.
        let i2s = vec![0u8; 96];
        assert!(QMatrix::new(GgmlType::I2_S, &i2s, 2, 128).is_ok());
        assert!(QMatrix::new(GgmlType::I2_S, &i2s[..64], 2, 128).is_err());
        assert!(QMatrix::new(GgmlType::I2_S, &i2s, 1, 256).is_ok());
        assert!(QMatrix::new(GgmlType::I2_S, &i2s, 4, 64).is_err());
        assert!(matches!(
            QMatrix::new(GgmlType::F32, &[], usize::MAX, 2),
            Err(QuantError::TooLarge { .. })
        ));
    }

    #[test]
    fn qmatrix_new_refuses_a_non_finite_i2s_scale_but_validate_does_not_read_it() {
        let mut i2s = vec![0u8; 96];
        i2s[64..68].copy_from_slice(&0.5f32.to_le_bytes());
        assert!(QMatrix::new(GgmlType::I2_S, &i2s, 2, 128).is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            i2s[64..68].copy_from_slice(&bad.to_le_bytes());
            let e = QMatrix::new(GgmlType::I2_S, &i2s, 2, 128).unwrap_err();
            assert_eq!(
                e,
                QuantError::NonFiniteScale {
                    ty: GgmlType::I2_S,
                    scale_bits: bad.to_bits()
                }
            );
            assert_eq!(
                e.to_string(),
                format!("the I2_S per-tensor scale is {bad}; it must be finite")
            );
            // `matmul` re-runs `validate` on every call: the shape checks only.
            let unchecked = QMatrix {
                ty: GgmlType::I2_S,
                data: &i2s,
                rows: 2,
                cols: 128,
            };
            assert!(unchecked.validate().is_ok());
        }
    }

    #[test]
    fn level_names_round_trip_and_scalar_is_always_there() {
        for l in SimdLevel::ALL {
            assert_eq!(SimdLevel::from_name(l.name()), Some(l));
        }
        assert_eq!(available_levels()[0], SimdLevel::Scalar);
        assert!(available_levels().contains(&selected_level()));
        assert_eq!(simd_level(), selected_level().name());
    }

    #[test]
    #[should_panic(expected = "invalid weight matrix")]
    fn matmul_rejects_a_bad_matrix_built_by_hand() {
        let w = QMatrix {
            ty: GgmlType::TQ2_0,
            data: &[0; 65],
            rows: 1,
            cols: 256,
        };
        matmul(&w, &[0.0; 256], 1, &mut [0.0]);
    }

    #[test]
    #[should_panic(expected = "x must hold")]
    fn matmul_rejects_a_short_input() {
        let w = QMatrix::new(GgmlType::F32, &[0; 8], 1, 2).unwrap();
        matmul(&w, &[0.0; 3], 2, &mut [0.0; 2]);
    }
}
