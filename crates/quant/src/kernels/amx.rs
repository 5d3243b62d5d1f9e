//! Multi-row ternary GEMM on AMX-INT8 tiles (I2_S, TQ2_0, TQ1_0), for block-diffusion steps and
//! prefill: the weights' 2-bit (or base-3) codes are unpacked once per row group into int8 A
//! tiles and reused by every activation row of the call.
//!
//! The arithmetic is the scalar reference's, so the results are bit-identical to it
//! (`scalar.rs`): the activations are quantized by the same rules (`act.rs`); `TDPBUSD`
//! computes the exact integer dots `Σ code·q` with the codes as *unsigned* bytes (0..=3) and the
//! int8 activations as signed bytes, as `vpdpbusd` does in the AVX-512 kernels; the epilogues
//! are [`i2s_epilogue`] per row (I2_S) and [`block_epilogue`] per 256-block in block order
//! (TQ1_0/TQ2_0).
//!
//! Layout of one call (`matmul_tiles`):
//!
//! * **B tiles (activations)**, packed once per call: for token tile `j` (16 tokens, the last
//!   one zero-padded) and K step `s` (64 columns), 16 rows `kk` of 16 tokens × 4 bytes:
//!   `B[j][s][kk][n][e] = q[16j + n][64s + 4kk + e]` (the "VNNI layout").
//! * **A tiles (weights)**, unpacked per row group of 32 weight rows (two A tiles of 16 rows).
//!   I2_S: one 128-column unit at a time into a 4 KiB row-major buffer (row `i` at `128·i`), whose
//!   A tiles are loaded at stride 128; the first pair of token tiles runs on unit `u − 1` while
//!   unit `u` is unpacked (see [`gemm_rows_i2s`]). TQ1_0/TQ2_0: one 256-block at a time into an
//!   8 KiB row-major buffer (A tiles at stride 256), overlapped the same way
//!   ([`gemm_rows_blocks`]).
//! * **C tiles**: I2_S: for each pair of token tiles, four accumulators (2 row tiles × 2 token
//!   tiles: the 2×2 blocking that keeps `TDPBUSD` busy), kept in tiles for the whole row and
//!   handed to the epilogue (AVX-512 on the hardware path: `x86::tile_epilogue`). TQ1_0/TQ2_0:
//!   a block's scale differs per row and token, so each (block, token tile) accumulates in one of
//!   two sets of two tiles, stored and folded into f32 running sums with the block's scales
//!   while the next job's products run.
//!
//! The tile operations go through [`Tiles`], so the same code runs on the real instructions
//! ([`super::tiles::AmxTiles`]) and on the plain-Rust emulation
//! ([`super::tiles::EmulatedTiles`]); only the hardware entry is compiled with AVX-512 enabled,
//! which lets the compiler vectorize the unpacking and epilogues.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::act::{Acts, Codes};
use super::scalar::{block_epilogue, i2s_epilogue, i2s_factor};
use super::tiles::{EmulatedTiles, TileConfig, Tiles, TILE_BYTES};
use super::{Out, QMatrix};
use crate::GgmlType;

/// K elements per `TDPBUSD` (one A tile row, one B tile's 16 rows × 4).
const KSTEP: usize = 64;
/// Weight rows per row group: two A tiles.
const GROUP_ROWS: usize = 32;
/// Tokens per B tile (its 16 dword columns).
const TILE_TOKENS: usize = 16;

/// The weight types the tile kernels take.
pub const TILE_TYPES: &[GgmlType] = &[
    GgmlType::I2_S,
    GgmlType::TQ2_0,
    GgmlType::TQ1_0,
    GgmlType::Q8_0,
];

/// Which implementation of the tile operations runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileBackend {
    /// The AMX-INT8 instructions (x86-64 Linux with AMX; see [`amx_available`]).
    Hardware,
    /// Plain Rust with the instructions' semantics (every machine; slow, for tests).
    Emulated,
}

/// Whether this CPU and OS run AMX-INT8 for this process (CPUID, then Linux's
/// `arch_prctl(ARCH_REQ_XCOMP_PERM)`, requested on the first call).
pub fn amx_available() -> bool {
    super::tiles::amx_available()
}

/// The weight formats of the tile kernels: the ternary ones, by their unpacking, and Q8_0
/// (int8 already: loaded straight from the weights, signed products).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TileFormat {
    I2S,
    TQ2,
    TQ1,
    Q80,
}

impl TileFormat {
    fn of(ty: GgmlType) -> Option<TileFormat> {
        match ty {
            GgmlType::I2_S => Some(TileFormat::I2S),
            GgmlType::TQ2_0 => Some(TileFormat::TQ2),
            GgmlType::TQ1_0 => Some(TileFormat::TQ1),
            GgmlType::Q8_0 => Some(TileFormat::Q80),
            _ => None,
        }
    }

    /// Elements and bytes of one unit (an I2_S interleave block, a 256-block, a Q8_0 block).
    fn unit(self) -> (usize, usize) {
        match self {
            TileFormat::I2S => (128, 32),
            TileFormat::TQ2 => (256, 66),
            TileFormat::TQ1 => (256, 54),
            TileFormat::Q80 => (32, 34),
        }
    }

    /// Offset of the f16 scale in a block (block formats).
    fn d_at(self) -> usize {
        match self {
            TileFormat::TQ2 => 64,
            TileFormat::Q80 => 0,
            _ => 52,
        }
    }

    /// Unpacks one unit's codes (`src`, `unit().1` bytes) in element order, each code 0..=3:
    /// elements `64j..64j + 64` go to `dst[j]` (I2_S fills two, the block formats four).
    #[inline(always)]
    fn unpack(self, src: &[u8], dst: [&mut [u8; 64]; 4]) {
        match self {
            TileFormat::I2S => {
                let [d0, d1, _, _] = dst;
                unpack_i2s(src.try_into().unwrap(), [d0, d1])
            }
            TileFormat::TQ2 => unpack_tq2(src.try_into().unwrap(), dst),
            TileFormat::TQ1 => unpack_tq1(src.try_into().unwrap(), dst),
            TileFormat::Q80 => unreachable!("Q8_0 is not unpacked"),
        }
    }
}

/// I2_S: element `32j + g` of a 128-block is bits `7 − 2j : 6 − 2j` of byte `g`.
#[inline(always)]
fn unpack_i2s(src: &[u8; 32], dst: [&mut [u8; 64]; 2]) {
    let [d0, d1] = dst;
    for g in 0..32 {
        let b = src[g];
        d0[g] = (b >> 6) & 3;
        d0[32 + g] = (b >> 4) & 3;
        d1[g] = (b >> 2) & 3;
        d1[32 + g] = b & 3;
    }
}

/// TQ2_0: element `128h + 32n + l` is bits `2n + 1 : 2n` of byte `32h + l`.
#[inline(always)]
fn unpack_tq2(src: &[u8; 66], dst: [&mut [u8; 64]; 4]) {
    let [d0, d1, d2, d3] = dst;
    for (h, [lo, hi]) in [[d0, d1], [d2, d3]].into_iter().enumerate() {
        for l in 0..32 {
            let b = src[32 * h + l];
            lo[l] = b & 3;
            lo[32 + l] = (b >> 2) & 3;
            hi[l] = (b >> 4) & 3;
            hi[32 + l] = (b >> 6) & 3;
        }
    }
}

/// TQ1_0: the base-3 layout of [`crate::formats::tq1_0`] (trit `n` of a byte is
/// `((byte·3^n mod 256)·3) >> 8`).
#[inline(always)]
fn unpack_tq1(src: &[u8; 54], dst: [&mut [u8; 64]; 4]) {
    #[inline(always)]
    fn trit(byte: u8, pow3: u8) -> u8 {
        ((u16::from(byte.wrapping_mul(pow3)) * 3) >> 8) as u8
    }
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let mut e = [0u8; 256];
    for n in 0..5 {
        for m in 0..32 {
            e[32 * n + m] = trit(src[m], POW3[n]);
        }
        for m in 0..16 {
            e[160 + 16 * n + m] = trit(src[32 + m], POW3[n]);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            e[240 + 4 * n + j] = trit(src[48 + j], POW3[n]);
        }
    }
    for (j, d) in dst.into_iter().enumerate() {
        d.copy_from_slice(&e[64 * j..64 * j + 64]);
    }
}

/// An f16 bit pattern to f32, exactly (as `half` does), without a run-time F16C check: the
/// epilogue converts 32 block scales per block and this loop vectorizes.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let mag = if exp == 0 {
        // Zero or subnormal: mant · 2^-24, exact in f32.
        (mant as f32 * (1.0 / 16_777_216.0)).to_bits()
    } else if exp == 31 {
        // Infinity or NaN (quiet, payload kept as `half` does).
        0x7f80_0000 | (mant << 13) | if mant != 0 { 0x0040_0000 } else { 0 }
    } else {
        ((exp + 112) << 23) | (mant << 13)
    };
    f32::from_bits(sign | mag)
}

/// The activation codes of one call in B-tile layout (see the module docs), with what the
/// epilogues need.
struct TileActs<'a> {
    acts: &'a Acts<'a>,
    n_tokens: usize,
    ksteps: usize,
    /// `n_token_tiles × ksteps` tiles of 1024 bytes.
    b: Codes,
}

impl<'a> TileActs<'a> {
    /// Packs the codes, with the AVX-512 transposition ([`pack_b_tiles`]) on the hardware
    /// backend and element by element otherwise (the same bytes).
    ///
    /// [`pack_b_tiles`]: super::x86::tile_unpack::pack_b_tiles
    #[inline(always)]
    fn pack(
        backend: TileBackend,
        acts: &'a Acts<'a>,
        n_tokens: usize,
        cols: usize,
    ) -> TileActs<'a> {
        // Q8_0 rows may end in half a K step (32 columns): its B tile is then zero-padded.
        let ksteps = cols.div_ceil(KSTEP);
        let n_tiles = n_tokens.div_ceil(TILE_TOKENS);
        let mut b = Codes::zeroed(n_tiles * ksteps * TILE_BYTES);
        let row = |t| match acts {
            Acts::I8(a) => a.row(t),
            Acts::Blocks(a) => a.row(t),
            Acts::F32(_) | Acts::F32Aligned(_) => {
                unreachable!("tile kernels take quantized activations")
            }
        };
        #[cfg(target_arch = "x86_64")]
        if backend == TileBackend::Hardware {
            // SAFETY: the hardware backend runs only where `amx_available()`, which requires
            // AVX-512 F/BW.
            unsafe { super::x86::tile_unpack::pack_b_tiles(row, n_tokens, cols, &mut b) };
            return TileActs {
                acts,
                n_tokens,
                ksteps,
                b,
            };
        }
        let _ = backend;
        for t in 0..n_tokens {
            let q = row(t);
            let (j, n) = (t / TILE_TOKENS, t % TILE_TOKENS);
            let base = j * ksteps * 16;
            // Group g of 4 codes lands in row g % 16 of tile (j, g / 16), i.e. at
            // `(j·ksteps·16 + g)·64 + 4n`.
            for (g, quad) in q.chunks_exact(4).enumerate() {
                let at = (base + g) * 64 + 4 * n;
                b[at..at + 4].copy_from_slice(quad);
            }
        }
        TileActs {
            acts,
            n_tokens,
            ksteps,
            b,
        }
    }

    /// The B tile of token tile `j` at K step `s`.
    #[inline(always)]
    fn tile(&self, j: usize, s: usize) -> &[u8] {
        let at = (j * self.ksteps + s) * TILE_BYTES;
        &self.bytes()[at..at + TILE_BYTES]
    }

    /// All the B tiles, as bytes.
    fn bytes(&self) -> &[u8] {
        let b: &[i8] = &self.b;
        // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<u8>(), b.len()) }
    }

    fn n_token_tiles(&self) -> usize {
        self.n_tokens.div_ceil(TILE_TOKENS)
    }
}

/// One thread's working memory, kept between calls (no allocation per call once warm).
#[derive(Default)]
struct Scratch {
    /// The unpacked codes (I2_S units, TQ1_0/TQ2_0 blocks) or a Q8_0 partial row group's
    /// zero-padded copy, plus room to align them to 64 bytes.
    a: Vec<u8>,
    /// I2_S accumulators of one pair of token tiles (4 tiles).
    c: Vec<[i32; 256]>,
    /// Block formats' running sums, `[row in group][token]` (see `sum_stride`).
    sumf: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// `outs[i] = ws[i]·x` for ternary matrices of one type and width (sharing their input) with the
/// tile kernels on `backend`: the activations are packed once, and the row groups of all the
/// matrices run as the tasks of one parallel section.
///
/// # Panics
/// If a type is not in [`TILE_TYPES`] or they differ, the shapes disagree (as `matmul`), or
/// `backend` is [`TileBackend::Hardware`] and [`amx_available`] is false.
pub(crate) fn matmul_tiles(
    backend: TileBackend,
    ws: &[&QMatrix],
    acts: &Acts,
    n_tokens: usize,
    outs: &[Out],
) {
    assert_eq!(ws.len(), outs.len());
    let Some(w0) = ws.first() else { return };
    let format = TileFormat::of(w0.ty).unwrap_or_else(|| panic!("no tile kernel for {}", w0.ty));
    assert!(
        ws.iter().all(|w| w.ty == w0.ty && w.cols == w0.cols),
        "matmul_tiles: the matrices must share type and width"
    );
    assert!(
        backend == TileBackend::Emulated || amx_available(),
        "matmul_tiles: AMX-INT8 is not available on this machine"
    );
    let packed = TileActs::pack(backend, acts, n_tokens, w0.cols);
    let threads = rayon::current_num_threads().max(1);
    let groups: usize = ws.iter().map(|w| w.rows.div_ceil(GROUP_ROWS)).sum();
    // About 4 tasks per thread for work stealing, in whole row groups of one matrix.
    let per_task = groups.div_ceil(threads * 4).max(1);
    let tasks: Vec<(usize, Range<usize>)> = ws
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            let step = per_task * GROUP_ROWS;
            (0..w.rows)
                .step_by(step)
                .map(move |r| (i, r..(r + step).min(w.rows)))
        })
        .collect();
    let task = |(i, rows): &(usize, Range<usize>)| {
        let (w, out, rows) = (ws[*i], &outs[*i], rows.clone());
        let mut scratch = SCRATCH.take().unwrap_or_default();
        match backend {
            TileBackend::Emulated => {
                let mut tiles = EmulatedTiles::new();
                tiles.configure(&TileConfig::FULL);
                if format == TileFormat::I2S {
                    let epilogue = |c: &[[i32; 256]], t0, r0, live| {
                        write_i2s_pair(&packed, w, c, t0, r0, live, out)
                    };
                    gemm_rows_i2s(
                        &mut tiles,
                        w,
                        &packed,
                        rows,
                        &mut scratch,
                        &unpack_i2s_unit,
                        &epilogue,
                    );
                } else {
                    let unpack = |w: &QMatrix, r0, live, b, dst: &mut [u8; BLOCK_UNIT_BYTES]| {
                        unpack_block_unit(format, w, r0, live, b, dst)
                    };
                    let sub_sum = format != TileFormat::Q80;
                    let fold = |c: &[[i32; 256]], b, j, live, d_w: &[f32; 32], sumf: &mut [f32]| {
                        fold_block(&packed, sub_sum, c, b, j, live, d_w, sumf)
                    };
                    let write =
                        |y: &[f32], r0, live| write_group_sums(y, packed.n_tokens, r0, live, out);
                    if format == TileFormat::Q80 {
                        tiles.configure(&Q8_CONFIG);
                        gemm_rows_q8_0(&mut tiles, w, &packed, rows, &mut scratch, &fold, &write);
                    } else {
                        gemm_rows_blocks(
                            &mut tiles,
                            format,
                            w,
                            &packed,
                            rows,
                            &mut scratch,
                            &unpack,
                            &fold,
                            &write,
                        );
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            TileBackend::Hardware => {
                // SAFETY: Hardware was checked against `amx_available()` above, which also
                // requires the AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C features.
                unsafe { gemm_rows_amx(format, w, &packed, rows, out, &mut scratch) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            TileBackend::Hardware => unreachable!("AMX is never available off x86-64"),
        }
        SCRATCH.set(Some(scratch));
    };
    if tasks.len() > 1 && threads > 1 {
        tasks.par_iter().for_each(task);
    } else {
        tasks.iter().for_each(task);
    }
}

/// [`gemm_rows_i2s`], [`gemm_rows_blocks`] and [`gemm_rows_q8_0`] on the AMX instructions,
/// compiled with AVX-512 so that the unpacking and the epilogues vectorize.
///
/// # Safety
/// AMX must be available ([`amx_available`]), which includes the features enabled here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_rows_amx(
    format: TileFormat,
    w: &QMatrix,
    packed: &TileActs,
    rows: Range<usize>,
    out: &Out,
    scratch: &mut Scratch,
) {
    let mut tiles = super::tiles::AmxTiles::new(&TileConfig::FULL)
        .expect("AMX availability was checked by the caller");
    if format == TileFormat::I2S {
        let Acts::I8(ia) = packed.acts else {
            unreachable!("I2_S kernels take int8 activations")
        };
        let w_scale = w.i2s_scale();
        let k: Vec<f32> = ia.scale.iter().map(|&s| i2s_factor(s, w_scale)).collect();
        let epilogue = |c: &[[i32; 256]], t0: usize, r0: usize, live: usize| {
            // SAFETY: AVX-512 F (the caller's contract); the task owns rows r0..r0 + live.
            unsafe {
                super::x86::tile_epilogue::write_i2s_pair(
                    c,
                    t0,
                    packed.n_tokens,
                    r0,
                    live,
                    &ia.sum,
                    &k,
                    out,
                )
            }
        };
        if packed.n_token_tiles() <= 2 {
            // One pair of token tiles (diffusion steps): the loop on the instructions directly.
            use super::x86::tile_i2s::{i2s_pair_group, PairGroup};
            let rb = w.row_bytes();
            scratch.a.resize(RING_UNITS * UNIT_BYTES + 64, 0);
            let a_start = scratch.a.as_ptr().align_offset(64).min(63);
            let mut c = [[0i32; 256]; 4];
            for r0 in rows.clone().step_by(GROUP_ROWS) {
                let live = (rows.end - r0).min(GROUP_ROWS);
                let next = (r0 + GROUP_ROWS).min(rows.end)..(r0 + 2 * GROUP_ROWS).min(rows.end);
                let group = PairGroup {
                    rows: &w.data[r0 * rb..(r0 + live) * rb],
                    row_bytes: rb,
                    live,
                    b: packed.bytes(),
                    two_tiles: packed.n_token_tiles() == 2,
                    next: &w.data[next.start * rb..next.end * rb],
                };
                // SAFETY: `tiles` (an `AmxTiles` of the full configuration) is alive on this
                // thread; AMX availability implies AVX-512 F/BW/VL and AVX2.
                unsafe { i2s_pair_group(&group, &mut scratch.a[a_start..], &mut c) };
                epilogue(&c, 0, r0, live);
            }
            return;
        }
        let unpack = |w: &QMatrix, r0, live, u, dst: &mut [u8; UNIT_BYTES]| {
            // SAFETY: AMX availability (the caller's contract) implies AVX-512 F/BW/VL and AVX2.
            unsafe { super::x86::tile_unpack::unpack_i2s_unit(w, r0, live, u, dst) }
        };
        gemm_rows_i2s(&mut tiles, w, packed, rows, scratch, &unpack, &epilogue);
    } else {
        let code = match format {
            TileFormat::TQ2 => super::x86::tile_unpack::TQ2,
            _ => super::x86::tile_unpack::TQ1,
        };
        let sub_sum = format != TileFormat::Q80;
        let unpack = |w: &QMatrix, r0, live, b, dst: &mut [u8; BLOCK_UNIT_BYTES]| {
            // SAFETY: AMX availability (the caller's contract) implies AVX-512 F/BW/VL and AVX2.
            unsafe { super::x86::tile_unpack::unpack_block_unit(code, w, r0, live, b, dst) }
        };
        let Acts::Blocks(ba) = packed.acts else {
            unreachable!("block kernels take block activations")
        };
        let n_tokens = packed.n_tokens;
        let fold =
            |c: &[[i32; 256]], b: usize, j: usize, live, d_w: &[f32; 32], sumf: &mut [f32]| {
                let (t0, at) = (j * TILE_TOKENS, b * n_tokens + j * TILE_TOKENS);
                // SAFETY: AVX-512 F (the caller's contract).
                unsafe {
                    super::x86::tile_epilogue::fold_block(
                        c,
                        t0,
                        n_tokens,
                        sum_stride(n_tokens),
                        live,
                        sub_sum.then(|| &ba.sum[at..]),
                        &ba.d[at..],
                        d_w,
                        sumf,
                    )
                }
            };
        let write = |y: &[f32], r0, live| {
            // SAFETY: AVX-512 F; the task owns rows r0..r0 + live.
            unsafe {
                let stride = sum_stride(n_tokens);
                super::x86::tile_epilogue::write_group_sums(y, n_tokens, stride, r0, live, out)
            }
        };
        if format == TileFormat::Q80 {
            tiles.configure(&Q8_CONFIG);
            gemm_rows_q8_0(&mut tiles, w, packed, rows, scratch, &fold, &write);
        } else {
            gemm_rows_blocks(
                &mut tiles, format, w, packed, rows, scratch, &unpack, &fold, &write,
            );
        }
    }
}

/// The I2_S epilogue of one pair of token tiles: `(c, t0, r0, live)` with the four
/// accumulators as [`store_c`] saved them, the pair's first token, the row group's first row and
/// its live rows.
type PairEpilogueFn<'a> = dyn Fn(&[[i32; 256]], usize, usize, usize) + 'a;

/// I2_S units (128 columns, 4 A tiles) of the ring a single pair of token tiles unpacks into.
pub(in crate::kernels) const RING_UNITS: usize = 4;

/// Columns of an I2_S unit (one interleave block).
const I2S_UNIT: usize = 128;

/// Bytes of one unpacked I2_S unit: 32 rows × 128 codes (4 A tiles, see `unpack_i2s_unit`).
pub(in crate::kernels) const UNIT_BYTES: usize = GROUP_ROWS * I2S_UNIT;

/// Unpacks I2_S unit `u` of rows `r0..r0 + live` (`unpack_i2s_unit`'s contract).
type UnitUnpackFn<'a> = dyn Fn(&QMatrix, usize, usize, usize, &mut [u8; UNIT_BYTES]) + 'a;

/// The I2_S rows `rows` (whole row groups, except at the matrix's end) for every token.
///
/// Per row group of 32 weight rows, the first pair of token tiles runs *with* the unpacking:
/// unit `u` (128 columns: 4 A tiles, 4 KiB) is unpacked, then the products of unit `u − 1` are
/// issued, so the tile unit works on one while the vector units unpack the next. With one pair
/// (up to 32 tokens: diffusion blocks) the units go round a 16 KiB ring that stays in L1; with
/// more (prefill) the whole row group's units are kept (`cols / 32` KiB, in L2) and the other
/// pairs run over them afterwards. Each pair keeps its four accumulators in tiles for the whole
/// row and hands them to `epilogue`. The next row group's bytes are prefetched a slice per unit.
/// (On the hardware, calls with one pair run the same loop in `x86::tile_i2s` instead.)
#[inline(always)]
fn gemm_rows_i2s<T: Tiles>(
    tiles: &mut T,
    w: &QMatrix,
    packed: &TileActs,
    rows: Range<usize>,
    scratch: &mut Scratch,
    unpack: &UnitUnpackFn,
    epilogue: &PairEpilogueFn,
) {
    let n_pairs = packed.n_token_tiles().div_ceil(2);
    let units = w.cols / I2S_UNIT;
    let slots = if n_pairs == 1 {
        RING_UNITS.min(units)
    } else {
        units
    };
    scratch.a.resize(slots * UNIT_BYTES + 64, 0);
    scratch.c.resize(4, [0; 256]);
    let a_start = scratch.a.as_ptr().align_offset(64).min(63);
    let ahead = NextGroup::new(w, units);

    for r0 in rows.clone().step_by(GROUP_ROWS) {
        let live = (rows.end - r0).min(GROUP_ROWS);
        let slot = |u: usize| a_start + (u % slots) * UNIT_BYTES;
        zero_c(tiles);
        for u in 0..=units {
            if u < units {
                ahead.prefetch(w, r0, rows.end, u);
                let at = slot(u);
                let buf: &mut [u8; UNIT_BYTES] =
                    (&mut scratch.a[at..at + UNIT_BYTES]).try_into().unwrap();
                unpack(w, r0, live, u, buf);
            }
            if u > 0 {
                let at = slot(u - 1);
                let a = &scratch.a[at..at + UNIT_BYTES];
                run_steps_at(tiles, packed, 0, 2 * (u - 1), 0..2, I2S_UNIT, |s, m| {
                    &a[UNIT_BYTES / 2 * m + KSTEP * s..]
                });
            }
        }
        store_c(tiles, &mut scratch.c);
        epilogue(&scratch.c, 0, r0, live);
        for p in 1..n_pairs {
            zero_c(tiles);
            for u in 0..units {
                let at = slot(u);
                let a = &scratch.a[at..at + UNIT_BYTES];
                run_steps_at(tiles, packed, p, 2 * u, 0..2, I2S_UNIT, |s, m| {
                    &a[UNIT_BYTES / 2 * m + KSTEP * s..]
                });
            }
            store_c(tiles, &mut scratch.c);
            epilogue(&scratch.c, 2 * p * TILE_TOKENS, r0, live);
        }
    }
}

/// The next row group's bytes, asked for into L2 a slice at a time while the current group is
/// computed (a group is read a unit or block at a time, 32 short pieces that the hardware
/// prefetchers do not follow).
struct NextGroup {
    /// Bytes per row of the matrix.
    row_bytes: usize,
    /// Bytes per slice (whole cache lines).
    per_slice: usize,
}

impl NextGroup {
    /// A group of `w` in `slices` slices (its units or blocks).
    fn new(w: &QMatrix, slices: usize) -> NextGroup {
        let row_bytes = w.row_bytes();
        NextGroup {
            row_bytes,
            per_slice: (GROUP_ROWS * row_bytes)
                .div_ceil(slices.max(1))
                .next_multiple_of(64),
        }
    }

    /// Prefetches slice `i` of the row group after the one at `r0` (rows up to `end` only).
    #[inline(always)]
    fn prefetch(&self, w: &QMatrix, r0: usize, end: usize, i: usize) {
        let rb = self.row_bytes;
        let next = (r0 + GROUP_ROWS).min(end) * rb..(r0 + 2 * GROUP_ROWS).min(end) * rb;
        let at = next.start + i * self.per_slice;
        prefetch_bytes(w.data, at..(at + self.per_slice).min(next.end));
    }
}

/// Asks for `range` of `data` to be brought into L2 (one prefetch per cache line).
#[inline(always)]
fn prefetch_bytes(data: &[u8], range: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        for off in range.step_by(64) {
            // SAFETY: a prefetch never faults; `wrapping_add` does not claim the address is in
            // bounds.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                    data.as_ptr().wrapping_add(off).cast(),
                )
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, range);
}

/// The portable I2_S epilogue of one pair of token tiles (the [`PairEpilogueFn`] contract),
/// element by element through [`i2s_epilogue`].
fn write_i2s_pair(
    packed: &TileActs,
    w: &QMatrix,
    c: &[[i32; 256]],
    t0: usize,
    r0: usize,
    live: usize,
    out: &Out,
) {
    let Acts::I8(ia) = packed.acts else {
        unreachable!("I2_S kernels take int8 activations")
    };
    let w_scale = w.i2s_scale();
    for (ci, c) in c.iter().enumerate().take(4) {
        let (m, nt) = (ci / 2, ci % 2);
        let tt = t0 + TILE_TOKENS * nt;
        for n in 0..TILE_TOKENS.min(packed.n_tokens.saturating_sub(tt)) {
            let t = tt + n;
            for i in 0..16.min(live.saturating_sub(16 * m)) {
                let y = i2s_epilogue(c[16 * i + n], ia.sum[t], i2s_factor(ia.scale[t], w_scale));
                // SAFETY: the task owns rows r0..r0 + live.
                unsafe { out.set(t, r0 + 16 * m + i, y) };
            }
        }
    }
}

/// Bytes of one unpacked 256-block of a row group: 32 rows × 256 codes, row-major (see
/// [`unpack_block_unit`]).
const BLOCK_UNIT_BYTES: usize = GROUP_ROWS * 256;

/// Unpacked blocks kept at once by [`gemm_rows_blocks`] (24 KiB, in L1).
const BLOCK_RING: usize = 3;

/// Unpacks 256-block `b` of rows `r0..r0 + live` ([`unpack_block_unit`]'s contract).
type BlockUnpackFn<'a> = dyn Fn(&QMatrix, usize, usize, usize, &mut [u8; BLOCK_UNIT_BYTES]) + 'a;

/// The f16 scales of one block of a row group's `live` rows (`first`: the first row's, one
/// row length apart), as f32; zero for rows past `live`. Gathered first, then converted in one
/// loop that vectorizes.
#[inline(always)]
fn group_scales(data: &[u8], first: usize, row_bytes: usize, live: usize) -> [f32; 32] {
    let mut bits = [0u16; 32];
    for (i, b) in bits.iter_mut().enumerate().take(live) {
        let at = first + i * row_bytes;
        *b = u16::from_le_bytes([data[at], data[at + 1]]);
    }
    let mut d = [0.0f32; 32];
    for (d, &b) in d.iter_mut().zip(&bits) {
        *d = f16_to_f32(b);
    }
    d
}

/// Floats per row of a row group's running sums: `n_tokens` rounded up to whole token tiles.
fn sum_stride(n_tokens: usize) -> usize {
    n_tokens.next_multiple_of(TILE_TOKENS)
}

/// Folds one block's accumulators for one token tile into the running sums
/// ([`fold_block`]'s contract): `(c, block, token tile, live rows, d_w, sumf)`.
type FoldFn<'a> = dyn Fn(&[[i32; 256]], usize, usize, usize, &[f32; 32], &mut [f32]) + 'a;

/// Writes a row group's running sums (`[row][token]`, [`sum_stride`] per row) to the output:
/// `(y, r0, live)`.
type WriteSumsFn<'a> = dyn Fn(&[f32], usize, usize) + 'a;

/// The TQ1_0/TQ2_0 rows `rows` (whole row groups, except at the matrix's end) for every token.
///
/// Per row group of 32 weight rows, one 256-block at a time: block `b` is unpacked (row-major,
/// A tiles at stride 256) while the products of block `b − 1` run. A block's scale differs per
/// row and per token, so its integer dots must leave the tiles after each block: each (block,
/// token tile) job accumulates in one of two sets of accumulators (tiles 0/1 or 2/3: rows
/// 0..16 and 16..32), and the previous job's set is stored and folded into the f32 running
/// sums (`fold`, in block order, as `block_epilogue`) only after this job's products are
/// issued, so the tile unit does not wait for a fold.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_rows_blocks<T: Tiles>(
    tiles: &mut T,
    format: TileFormat,
    w: &QMatrix,
    packed: &TileActs,
    rows: Range<usize>,
    scratch: &mut Scratch,
    unpack: &BlockUnpackFn,
    fold: &FoldFn,
    write_sums: &WriteSumsFn,
) {
    let n_tokens = packed.n_tokens;
    let n_tiles = packed.n_token_tiles();
    let nb = w.cols / 256;
    let (_, unit_bytes) = format.unit();
    let d_at = format.d_at();
    scratch.a.resize(BLOCK_RING * BLOCK_UNIT_BYTES + 64, 0);
    scratch.c.resize(4, [0; 256]);
    scratch.sumf.resize(GROUP_ROWS * sum_stride(n_tokens), 0.0);
    let a_start = scratch.a.as_ptr().align_offset(64).min(63);
    let slot = |b: usize| a_start + (b % BLOCK_RING) * BLOCK_UNIT_BYTES;
    let row_bytes = w.row_bytes();
    let ahead = NextGroup::new(w, nb);

    for r0 in rows.clone().step_by(GROUP_ROWS) {
        let live = (rows.end - r0).min(GROUP_ROWS);
        scratch.sumf.fill(0.0);
        let mut queue = JobQueue::new(&mut scratch.c, &mut scratch.sumf, fold, live);
        let mut job = 0usize;
        for b in 0..=nb {
            if b < nb {
                ahead.prefetch(w, r0, rows.end, b);
                let at = slot(b);
                let buf: &mut [u8; BLOCK_UNIT_BYTES] = (&mut scratch.a[at..at + BLOCK_UNIT_BYTES])
                    .try_into()
                    .unwrap();
                unpack(w, r0, live, b, buf);
            }
            if b == 0 {
                continue;
            }
            let bb = b - 1;
            // The block's f16 scale of each row (one row length apart in the data).
            let first = r0 * row_bytes + bb * unit_bytes + d_at;
            let d_w = group_scales(w.data, first, row_bytes, live);
            let at = slot(bb);
            let a = &scratch.a[at..at + BLOCK_UNIT_BYTES];
            for j in 0..n_tiles {
                let set = job % 2;
                block_products(tiles, a, packed, j, bb, set);
                queue.push((bb, j, set, d_w), tiles);
                job += 1;
            }
        }
        queue.finish(tiles);
        write_sums(&scratch.sumf, r0, live);
    }
}

/// The tile configuration of the Q8_0 kernel: accumulators 0..4 of 16 × 16 dwords, A tiles 4
/// and 5 of 16 rows × 32 bytes (one block of 16 weight rows), B tile 6 of 8 rows × 64 bytes (one
/// block of 16 tokens in VNNI layout).
const Q8_CONFIG: TileConfig = TileConfig {
    rows: [16, 16, 16, 16, 16, 16, 8, 16],
    colsb: [64, 64, 64, 64, 32, 32, 64, 64],
};

/// The Q8_0 rows `rows` (whole row groups, except at the matrix's end) for every token, with
/// the tiles configured as [`Q8_CONFIG`].
///
/// Q8_0 codes are int8 already, so A tiles are loaded straight from the weights (16 rows of one
/// block's 32 bytes, one row length apart) and multiplied with `TDPBSSD` (signed × signed); a
/// partial row group at the matrix's end is first copied, zero-padded, into scratch. Each
/// (block, token tile) job accumulates in one of two accumulator sets and is folded with the
/// block's scales while the next job's product runs, as in [`gemm_rows_blocks`]. The next
/// row group's bytes are prefetched a slice per block.
#[inline(always)]
fn gemm_rows_q8_0<T: Tiles>(
    tiles: &mut T,
    w: &QMatrix,
    packed: &TileActs,
    rows: Range<usize>,
    scratch: &mut Scratch,
    fold: &FoldFn,
    write_sums: &WriteSumsFn,
) {
    const BLK: usize = 34;
    let n_tokens = packed.n_tokens;
    let n_tiles = packed.n_token_tiles();
    let nb = w.cols / 32;
    let row_bytes = w.row_bytes();
    scratch.c.resize(4, [0; 256]);
    scratch.sumf.resize(GROUP_ROWS * sum_stride(n_tokens), 0.0);
    let ahead = NextGroup::new(w, nb);
    for r0 in rows.clone().step_by(GROUP_ROWS) {
        let live = (rows.end - r0).min(GROUP_ROWS);
        // Where block b's codes of the group's row i are: src[base + i·stride + step·b ..].
        let (src, stride, base, step): (&[u8], usize, usize, usize) = if live == GROUP_ROWS {
            (w.data, row_bytes, r0 * row_bytes + 2, BLK)
        } else {
            let stride = nb * 32;
            scratch.a.clear();
            scratch.a.resize(GROUP_ROWS * stride, 0);
            for i in 0..live {
                let row = w.row(r0 + i);
                for b in 0..nb {
                    let at = i * stride + 32 * b;
                    scratch.a[at..at + 32].copy_from_slice(&row[BLK * b + 2..BLK * (b + 1)]);
                }
            }
            (&scratch.a, stride, 0, 32)
        };
        scratch.sumf.fill(0.0);
        let mut queue = JobQueue::new(&mut scratch.c, &mut scratch.sumf, fold, live);
        let mut job = 0usize;
        for b in 0..nb {
            ahead.prefetch(w, r0, rows.end, b);
            let first = r0 * row_bytes + BLK * b;
            let d_w = group_scales(w.data, first, row_bytes, live);
            let a = base + step * b;
            // The block's A tiles serve every token tile (reloading them per token tile, 32
            // rows of a strided block from L2 each time, took ~30 % of a 128-token call).
            tiles.load_streamed::<4>(&src[a..], stride);
            tiles.load_streamed::<5>(&src[a + 16 * stride..], stride);
            for j in 0..n_tiles {
                let set = job % 2;
                zero_set(tiles, set);
                tiles.load::<6>(&packed.tile(j, b / 2)[512 * (b % 2)..], 64);
                if set == 0 {
                    tiles.dpbssd::<0, 4, 6>();
                    tiles.dpbssd::<1, 5, 6>();
                } else {
                    tiles.dpbssd::<2, 4, 6>();
                    tiles.dpbssd::<3, 5, 6>();
                }
                queue.push((b, j, set, d_w), tiles);
                job += 1;
            }
        }
        queue.finish(tiles);
        write_sums(&scratch.sumf, r0, live);
    }
}

/// Block `b`'s four K steps for token tile `j` into accumulator set `set` (tiles 0/1 or 2/3 =
/// weight rows 0..16 / 16..32), from the row-major unpacked block `a` (A tiles at stride 256).
#[inline(always)]
fn block_products<T: Tiles>(
    tiles: &mut T,
    a: &[u8],
    packed: &TileActs,
    j: usize,
    b: usize,
    set: usize,
) {
    zero_set(tiles, set);
    for s in 0..4 {
        tiles.load::<4>(&a[KSTEP * s..], 256);
        tiles.load_streamed::<6>(packed.tile(j, 4 * b + s), 64);
        tiles.load::<5>(&a[BLOCK_UNIT_BYTES / 2 + KSTEP * s..], 256);
        if set == 0 {
            tiles.dpbusd::<0, 4, 6>();
            tiles.dpbusd::<1, 5, 6>();
        } else {
            tiles.dpbusd::<2, 4, 6>();
            tiles.dpbusd::<3, 5, 6>();
        }
    }
}

/// Zeroes accumulator set `set` (tiles 0/1 or 2/3).
#[inline(always)]
fn zero_set<T: Tiles>(tiles: &mut T, set: usize) {
    if set == 0 {
        tiles.zero::<0>();
        tiles.zero::<1>();
    } else {
        tiles.zero::<2>();
        tiles.zero::<3>();
    }
}

/// A (block, token tile) job: `(block, token tile, accumulator set, the block's d_w)`.
type Job = (usize, usize, usize, [f32; 32]);

/// The jobs between the tile unit and the fold. The last issued job's accumulators wait in
/// their tile set until the next job's products are issued; they are then stored (set `s` to
/// `c[2s..2s + 2]`) and folded one job later still, so the fold's loads never wait on stores
/// of the tiles just written (a 128-token Q8_0 head call: −11 % against folding right after
/// the store).
struct JobQueue<'q, 'f> {
    /// Where jobs' accumulators are stored (set `s` at `c[2s..2s + 2]`) and folded into.
    c: &'q mut [[i32; 256]],
    sumf: &'q mut [f32],
    fold: &'q FoldFn<'f>,
    /// Live weight rows of the row group.
    live: usize,
    issued: Option<Job>,
    stored: Option<Job>,
}

impl<'q, 'f> JobQueue<'q, 'f> {
    /// An empty queue for one row group of `live` rows.
    fn new(
        c: &'q mut [[i32; 256]],
        sumf: &'q mut [f32],
        fold: &'q FoldFn<'f>,
        live: usize,
    ) -> Self {
        JobQueue {
            c,
            sumf,
            fold,
            live,
            issued: None,
            stored: None,
        }
    }

    /// Called after a job's products are issued (`job`): stores the previous job and folds
    /// the one before it.
    #[inline(always)]
    fn push<T: Tiles>(&mut self, job: Job, tiles: &mut T) {
        self.advance(tiles);
        self.issued = Some(job);
    }

    /// Stores and folds everything left (after a row group's last job).
    #[inline(always)]
    fn finish<T: Tiles>(mut self, tiles: &mut T) {
        self.advance(tiles);
        self.advance(tiles);
    }

    #[inline(always)]
    fn advance<T: Tiles>(&mut self, tiles: &mut T) {
        if let Some((b, j, set, d_w)) = self.stored.take() {
            let c = &self.c[2 * set..2 * set + 2];
            (self.fold)(c, b, j, self.live, &d_w, self.sumf);
        }
        if let Some(job) = self.issued.take() {
            let set = job.2;
            store_set(tiles, set, &mut self.c[2 * set..2 * set + 2]);
            self.stored = Some(job);
        }
    }
}

/// Saves accumulator set `set` (rows 0..16, rows 16..32) into `c[0]`, `c[1]`.
#[inline(always)]
fn store_set<T: Tiles>(tiles: &mut T, set: usize, c: &mut [[i32; 256]]) {
    let [c0, c1] = c else {
        unreachable!("two accumulator buffers")
    };
    if set == 0 {
        tiles.store_i32::<0>(c0);
        tiles.store_i32::<1>(c1);
    } else {
        tiles.store_i32::<2>(c0);
        tiles.store_i32::<3>(c1);
    }
}

/// The portable fold of block `b`'s accumulators for token tile `j` into the running sums
/// `[row][token]` ([`FoldFn`]): element by element through [`block_epilogue`].
#[allow(clippy::too_many_arguments)]
fn fold_block(
    packed: &TileActs,
    sub_sum: bool,
    c: &[[i32; 256]],
    b: usize,
    j: usize,
    live: usize,
    d_w: &[f32; 32],
    sumf: &mut [f32],
) {
    let Acts::Blocks(ba) = packed.acts else {
        unreachable!("block kernels take block activations")
    };
    let n_tokens = packed.n_tokens;
    let t0 = j * TILE_TOKENS;
    let at = b * n_tokens + t0;
    for row in 0..live {
        let (m, i) = (row / 16, row % 16);
        for n in 0..TILE_TOKENS.min(n_tokens - t0) {
            // Ternary codes are stored as value + 1: Σ(t − 1)·q = Σt·q − Σq.
            let zero = if sub_sum { ba.sum[at + n] } else { 0 };
            let sumi = c[m][16 * i + n].wrapping_sub(zero);
            let sf = &mut sumf[row * sum_stride(n_tokens) + t0 + n];
            *sf = block_epilogue(*sf, sumi, ba.d[at + n], d_w[row]);
        }
    }
}

/// The portable write-out of a row group's sums `y` (`[row][token]`, [`sum_stride`] per row)
/// to rows `r0..r0 + live`.
fn write_group_sums(y: &[f32], n_tokens: usize, r0: usize, live: usize, out: &Out) {
    for row in 0..live {
        for t in 0..n_tokens {
            // SAFETY: the task owns rows r0..r0 + live.
            unsafe { out.set(t, r0 + row, y[row * sum_stride(n_tokens) + t]) };
        }
    }
}

/// Unpacks 256-block `b` of rows `r0..r0 + live` (TQ1_0/TQ2_0) row-major into `dst`: weight
/// row `i` at `dst[256·i..]`, in element order; rows `live..32` become zero codes. The A tile
/// of rows `16m..16m + 16` at the block's K step `j` is `dst[4096·m + 64·j..]` at stride 256.
fn unpack_block_unit(
    format: TileFormat,
    w: &QMatrix,
    r0: usize,
    live: usize,
    b: usize,
    dst: &mut [u8; BLOCK_UNIT_BYTES],
) {
    let (_, unit_bytes) = format.unit();
    for (i, d) in dst.chunks_exact_mut(256).enumerate() {
        if i < live {
            let src = &w.row(r0 + i)[b * unit_bytes..(b + 1) * unit_bytes];
            let (pieces, _) = d.as_chunks_mut::<64>();
            let [d0, d1, d2, d3] = pieces else {
                unreachable!("256 bytes are four 64-byte pieces")
            };
            format.unpack(src, [d0, d1, d2, d3]);
        } else {
            d.fill(0);
        }
    }
}

/// Unpacks I2_S unit `u` (columns `128u..128u + 128`) of rows `r0..r0 + live` row-major into
/// `dst`: weight row `i` at `dst[128·i..]`, in element order; rows `live..32` become zero codes.
/// The A tile of rows `16m..16m + 16` at the unit's K step `j` is `dst[2048·m + 64·j..]` at
/// stride 128.
fn unpack_i2s_unit(w: &QMatrix, r0: usize, live: usize, u: usize, dst: &mut [u8; UNIT_BYTES]) {
    for (i, d) in dst.chunks_exact_mut(I2S_UNIT).enumerate() {
        let (d0, d1) = d.split_at_mut(64);
        if i < live {
            let src = &w.row(r0 + i)[32 * u..32 * u + 32];
            unpack_i2s(
                src.try_into().unwrap(),
                [d0.try_into().unwrap(), d1.try_into().unwrap()],
            );
        } else {
            d.fill(0);
        }
    }
}

/// Zeroes the four accumulators.
#[inline(always)]
fn zero_c<T: Tiles>(tiles: &mut T) {
    tiles.zero::<0>();
    tiles.zero::<1>();
    tiles.zero::<2>();
    tiles.zero::<3>();
}

/// Saves the four accumulators.
#[inline(always)]
fn store_c<T: Tiles>(tiles: &mut T, c: &mut [[i32; 256]]) {
    tiles.store_i32::<0>(&mut c[0]);
    tiles.store_i32::<1>(&mut c[1]);
    tiles.store_i32::<2>(&mut c[2]);
    tiles.store_i32::<3>(&mut c[3]);
}

/// `TDPBUSD` over the K steps `steps` (K step `s0 + s` of the row) for the token tiles `2p` and
/// `2p + 1` (if it exists): C0/C2 = rows 0..16 / 16..32 × tile `2p`, C1/C3 the same × tile
/// `2p + 1`. With one token tile only C0 and C2 accumulate (C1 and C3 are used as operand
/// tiles); C1 and C3 are then not meaningful. The A tile of K step `s`, rows `16m..16m + 16`, is
/// at `at(s, m)`, its rows `a_stride` bytes apart.
#[inline(always)]
fn run_steps_at<'b, T: Tiles>(
    tiles: &mut T,
    packed: &TileActs,
    p: usize,
    s0: usize,
    steps: Range<usize>,
    a_stride: usize,
    at: impl Fn(usize, usize) -> &'b [u8],
) {
    if 2 * p + 1 < packed.n_token_tiles() {
        // Each operand tile is reloaded as soon as its last reader has been issued, so the
        // next loads overlap the remaining products (tiles are not renamed).
        for s in steps {
            tiles.load::<4>(at(s, 0), a_stride);
            tiles.load_streamed::<6>(packed.tile(2 * p, s0 + s), 64);
            tiles.dpbusd::<0, 4, 6>();
            tiles.load_streamed::<7>(packed.tile(2 * p + 1, s0 + s), 64);
            tiles.dpbusd::<1, 4, 7>();
            tiles.load::<5>(at(s, 1), a_stride);
            tiles.dpbusd::<2, 5, 6>();
            tiles.dpbusd::<3, 5, 7>();
        }
    } else {
        // One token tile: C1 and C3 are free, so alternate two sets of operand tiles (4, 5, 6
        // and 7, 1, 3) between even and odd K steps; one step's loads then overlap the other's
        // products.
        let mut steps = steps;
        while let Some(s) = steps.next() {
            tiles.load::<4>(at(s, 0), a_stride);
            tiles.load_streamed::<6>(packed.tile(2 * p, s0 + s), 64);
            tiles.load::<5>(at(s, 1), a_stride);
            tiles.dpbusd::<0, 4, 6>();
            tiles.dpbusd::<2, 5, 6>();
            if let Some(s) = steps.next() {
                tiles.load::<7>(at(s, 0), a_stride);
                tiles.load_streamed::<3>(packed.tile(2 * p, s0 + s), 64);
                tiles.load::<1>(at(s, 1), a_stride);
                tiles.dpbusd::<0, 7, 3>();
                tiles.dpbusd::<2, 1, 3>();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tq1_0;

    #[test]
    fn f16_conversion_is_exact_for_every_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }

    /// The AVX-512 block unpacking (TQ2_0, TQ1_0) writes exactly what the portable one writes.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_block_unpacking_equals_the_portable_unpacking() {
        if !(std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vl"))
        {
            eprintln!("no AVX-512 here: SIMD block unpacking not exercised");
            return;
        }
        use crate::kernels::x86::tile_unpack as tu;
        for (format, code, ty) in [
            (TileFormat::TQ2, tu::TQ2, GgmlType::TQ2_0),
            (TileFormat::TQ1, tu::TQ1, GgmlType::TQ1_0),
        ] {
            let (elems, bytes) = format.unit();
            let (rows, cols) = (40, 1024);
            let data: Vec<u8> = (0..rows * cols / elems * bytes)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
                .collect();
            let w = QMatrix::new(ty, &data, rows, cols).unwrap();
            for (r0, live) in [(0, 32), (32, 8)] {
                for b in 0..cols / 256 {
                    let mut want = [7u8; BLOCK_UNIT_BYTES];
                    let mut got = [9u8; BLOCK_UNIT_BYTES];
                    unpack_block_unit(format, &w, r0, live, b, &mut want);
                    // SAFETY: AVX-512 F/BW/VL (and so AVX2) checked above.
                    unsafe { tu::unpack_block_unit(code, &w, r0, live, b, &mut got) };
                    assert_eq!(got, want, "{format:?} rows {r0}+{live} block {b}");
                    assert!(want[256 * live..].iter().all(|&c| c == 0));
                }
            }
        }
    }

    /// The AVX-512 B-tile packing writes exactly what the portable one writes, for whole and
    /// partial token tiles and rows ending in part of a K step (Q8_0).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_activation_packing_equals_the_portable_packing() {
        if !(std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512f"))
        {
            eprintln!("no AVX-512 here: SIMD activation packing not exercised");
            return;
        }
        for (ty, cols) in [
            (GgmlType::I2_S, 128),
            (GgmlType::I2_S, 2560),
            (GgmlType::Q8_0, 96),
            (GgmlType::Q8_0, 32),
            (GgmlType::TQ2_0, 768),
        ] {
            for n_tokens in [1, 7, 16, 17, 32, 45] {
                let x: Vec<f32> = (0..n_tokens * cols)
                    .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 1e5 - 80.0)
                    .collect();
                let acts = Acts::new(ty, &x, n_tokens, cols);
                let want = TileActs::pack(TileBackend::Emulated, &acts, n_tokens, cols);
                let got = TileActs::pack(TileBackend::Hardware, &acts, n_tokens, cols);
                assert_eq!(got.ksteps, want.ksteps);
                assert_eq!(&got.b[..], &want.b[..], "{ty} {n_tokens}×{cols}");
                assert!(want.b.iter().any(|&c| c != 0));
            }
        }
    }

    /// The AVX-512 I2_S unit unpacking writes exactly what the portable one writes.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_unit_unpacking_equals_the_portable_unpacking() {
        if !(std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vl"))
        {
            eprintln!("no AVX-512 here: SIMD unit unpacking not exercised");
            return;
        }
        let (rows, cols) = (70, 640);
        let data: Vec<u8> = (0..rows * cols / 4 + 32)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(5) as u8)
            .collect();
        let w = QMatrix::new(GgmlType::I2_S, &data, rows, cols).unwrap();
        for (r0, live) in [(0, 32), (32, 32), (64, 6)] {
            for u in 0..cols / 128 {
                let (mut want, mut got) = ([7u8; UNIT_BYTES], [9u8; UNIT_BYTES]);
                unpack_i2s_unit(&w, r0, live, u, &mut want);
                // SAFETY: AVX-512 F/BW/VL (and so AVX2) checked above.
                unsafe {
                    crate::kernels::x86::tile_unpack::unpack_i2s_unit(&w, r0, live, u, &mut got)
                };
                assert_eq!(got, want, "rows {r0}+{live} unit {u}");
                // Row i of the unit is elements 128u.. of weight row r0 + i, in order.
                let i = live - 1;
                let src = &w.row(r0 + i)[32 * u..32 * u + 32];
                for e in 0..128 {
                    assert_eq!(want[128 * i + e], (src[e % 32] >> (6 - 2 * (e / 32))) & 3);
                }
            }
        }
    }

    /// The unpackers against the formats' own element definitions.
    #[test]
    fn unpacking_matches_the_layouts() {
        let mut src = [0u8; 66];
        for (i, b) in src.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(97).wrapping_add(13);
        }
        let unpacked = |f: &dyn Fn([&mut [u8; 64]; 4])| {
            let mut d = [[0u8; 64]; 4];
            let [d0, d1, d2, d3] = &mut d;
            f([d0, d1, d2, d3]);
            d.concat()
        };
        let dst = unpacked(&|d| TileFormat::I2S.unpack(&src[..32], d));
        for e in 0..128 {
            let (j, g) = (e / 32, e % 32);
            assert_eq!(dst[e], (src[g] >> (6 - 2 * j)) & 3, "i2s {e}");
        }
        let dst = unpacked(&|d| TileFormat::TQ2.unpack(&src, d));
        for e in 0..256 {
            let (h, n, l) = (e / 128, (e % 128) / 32, e % 32);
            assert_eq!(dst[e], (src[32 * h + l] >> (2 * n)) & 3, "tq2 {e}");
        }
        let dst = unpacked(&|d| TileFormat::TQ1.unpack(&src[..54], d));
        let want: Vec<u8> = {
            let mut v = vec![0u8; 256];
            for n in 0..5 {
                for m in 0..32 {
                    v[32 * n + m] = tq1_0::decode_trit(src[m], n);
                }
                for m in 0..16 {
                    v[160 + 16 * n + m] = tq1_0::decode_trit(src[32 + m], n);
                }
            }
            for n in 0..4 {
                for j in 0..4 {
                    v[240 + 4 * n + j] = tq1_0::decode_trit(src[48 + j], n);
                }
            }
            v
        };
        assert_eq!(dst, want);
    }
}
