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
//! * **A tiles (weights)**: a row group of 32 weight rows (two A tiles of 16 rows) is unpacked one
//!   column segment (up to 1024 columns) at a time into a 32 × segment int8 scratch in L1; the
//!   A tile of rows `16m..16m + 16` at K step `s` is that scratch at column `64s`, loaded with
//!   the segment's width as stride.
//! * **C tiles**: for each pair of token tiles, four accumulators (2 row tiles × 2 token tiles:
//!   the 2×2 blocking that keeps `TDPBUSD` busy). I2_S accumulates a whole row and saves the
//!   accumulators between segments; TQ1_0/TQ2_0 store them after each 256-block (4 K steps) and
//!   fold them into f32 running sums with the block's scales.
//!
//! The tile operations go through [`Tiles`], so the same code runs on the real instructions
//! ([`super::tiles::AmxTiles`]) and on the plain-Rust emulation
//! ([`super::tiles::EmulatedTiles`]); only the hardware entry is compiled with AVX-512 enabled,
//! which lets the compiler vectorize the unpacking and epilogues.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::act::{Acts, Codes};
use super::scalar::{block_epilogue, i2s_epilogue};
use super::tiles::{EmulatedTiles, TileConfig, Tiles, TILE_BYTES};
use super::{Out, QMatrix};
use crate::GgmlType;

/// K elements per `TDPBUSD` (one A tile row, one B tile's 16 rows × 4).
const KSTEP: usize = 64;
/// Weight rows per row group: two A tiles.
const GROUP_ROWS: usize = 32;
/// Tokens per B tile (its 16 dword columns).
const TILE_TOKENS: usize = 16;
/// Columns unpacked at once: 32 rows × 1024 = 32 KiB of int8 codes, within L1.
const SEG_COLS: usize = 1024;

/// The weight types the tile kernels take.
pub const TILE_TYPES: &[GgmlType] = &[GgmlType::I2_S, GgmlType::TQ2_0, GgmlType::TQ1_0];

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

/// The ternary formats, by their unpacking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ternary {
    I2S,
    TQ2,
    TQ1,
}

impl Ternary {
    fn of(ty: GgmlType) -> Option<Ternary> {
        match ty {
            GgmlType::I2_S => Some(Ternary::I2S),
            GgmlType::TQ2_0 => Some(Ternary::TQ2),
            GgmlType::TQ1_0 => Some(Ternary::TQ1),
            _ => None,
        }
    }

    /// Elements and bytes of one unpacking unit (an I2_S interleave block or a 256-block).
    fn unit(self) -> (usize, usize) {
        match self {
            Ternary::I2S => (128, 32),
            Ternary::TQ2 => (256, 66),
            Ternary::TQ1 => (256, 54),
        }
    }

    /// Offset of the f16 scale in a block (block formats).
    fn d_at(self) -> usize {
        match self {
            Ternary::TQ2 => 64,
            _ => 52,
        }
    }

    /// Unpacks one unit's codes (`src`, `unit().1` bytes) into `dst` (`unit().0` bytes) in
    /// element order, each code 0..=3.
    #[inline(always)]
    fn unpack(self, src: &[u8], dst: &mut [u8]) {
        match self {
            Ternary::I2S => unpack_i2s(src, dst),
            Ternary::TQ2 => unpack_tq2(src, dst),
            Ternary::TQ1 => unpack_tq1(src, dst),
        }
    }
}

/// I2_S: element `32j + g` of a 128-block is bits `7 − 2j : 6 − 2j` of byte `g`.
#[inline(always)]
fn unpack_i2s(src: &[u8], dst: &mut [u8]) {
    let (src, dst): (&[u8; 32], &mut [u8; 128]) =
        (src.try_into().unwrap(), dst.try_into().unwrap());
    for g in 0..32 {
        let b = src[g];
        dst[g] = (b >> 6) & 3;
        dst[32 + g] = (b >> 4) & 3;
        dst[64 + g] = (b >> 2) & 3;
        dst[96 + g] = b & 3;
    }
}

/// TQ2_0: element `128h + 32n + l` is bits `2n + 1 : 2n` of byte `32h + l`.
#[inline(always)]
fn unpack_tq2(src: &[u8], dst: &mut [u8]) {
    let (src, dst): (&[u8; 66], &mut [u8; 256]) =
        (src.try_into().unwrap(), dst.try_into().unwrap());
    for h in 0..2 {
        for l in 0..32 {
            let b = src[32 * h + l];
            dst[128 * h + l] = b & 3;
            dst[128 * h + 32 + l] = (b >> 2) & 3;
            dst[128 * h + 64 + l] = (b >> 4) & 3;
            dst[128 * h + 96 + l] = (b >> 6) & 3;
        }
    }
}

/// TQ1_0: the base-3 layout of [`crate::formats::tq1_0`] (trit `n` of a byte is
/// `((byte·3^n mod 256)·3) >> 8`).
#[inline(always)]
fn unpack_tq1(src: &[u8], dst: &mut [u8]) {
    let (src, dst): (&[u8; 54], &mut [u8; 256]) =
        (src.try_into().unwrap(), dst.try_into().unwrap());
    #[inline(always)]
    fn trit(byte: u8, pow3: u8) -> u8 {
        ((u16::from(byte.wrapping_mul(pow3)) * 3) >> 8) as u8
    }
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    for n in 0..5 {
        for m in 0..32 {
            dst[32 * n + m] = trit(src[m], POW3[n]);
        }
        for m in 0..16 {
            dst[160 + 16 * n + m] = trit(src[32 + m], POW3[n]);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            dst[240 + 4 * n + j] = trit(src[48 + j], POW3[n]);
        }
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
    #[inline(always)]
    fn pack(acts: &'a Acts<'a>, n_tokens: usize, cols: usize) -> TileActs<'a> {
        let ksteps = cols / KSTEP;
        let n_tiles = n_tokens.div_ceil(TILE_TOKENS);
        let mut b = Codes::zeroed(n_tiles * ksteps * TILE_BYTES);
        for t in 0..n_tokens {
            let q = match acts {
                Acts::I8(a) => a.row(t),
                Acts::Blocks(a) => a.row(t),
                Acts::F32(_) => unreachable!("tile kernels take quantized activations"),
            };
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
        let b: &[i8] = &self.b[at..at + TILE_BYTES];
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
    /// The unpacked codes of a row group's column segment: 32 rows × up to `SEG_COLS`, plus
    /// room to align it to 64 bytes.
    a: Vec<u8>,
    /// Saved accumulators: 4 tiles per pair of token tiles.
    c: Vec<[i32; 256]>,
    /// TQ running sums, `[row in group][token]`.
    sumf: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// `out = W·x` for a ternary `w` with the tile kernels on `backend`.
///
/// # Panics
/// If `w.ty` is not in [`TILE_TYPES`], the shapes disagree (as `matmul`), or `backend` is
/// [`TileBackend::Hardware`] and [`amx_available`] is false.
pub(crate) fn matmul_tiles(
    backend: TileBackend,
    w: &QMatrix,
    acts: &Acts,
    n_tokens: usize,
    out: &Out,
) {
    let format = Ternary::of(w.ty).unwrap_or_else(|| panic!("no tile kernel for {}", w.ty));
    assert!(
        backend == TileBackend::Emulated || amx_available(),
        "matmul_tiles: AMX-INT8 is not available on this machine"
    );
    let packed = TileActs::pack(acts, n_tokens, w.cols);
    let groups = w.rows.div_ceil(GROUP_ROWS);
    let threads = rayon::current_num_threads().max(1);
    // About 4 tasks per thread for work stealing, in whole row groups.
    let per_task = groups.div_ceil(threads * 4).max(1);
    let n_tasks = groups.div_ceil(per_task);
    let task = |i: usize| {
        let rows = i * per_task * GROUP_ROWS..((i + 1) * per_task * GROUP_ROWS).min(w.rows);
        let mut scratch = SCRATCH.take().unwrap_or_default();
        match backend {
            TileBackend::Emulated => {
                let mut tiles = EmulatedTiles::new();
                tiles.configure(&TileConfig::FULL);
                gemm_rows(&mut tiles, format, w, &packed, rows, out, &mut scratch);
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
    if n_tasks > 1 && threads > 1 {
        (0..n_tasks).into_par_iter().for_each(task);
    } else {
        (0..n_tasks).for_each(task);
    }
}

/// [`gemm_rows`] on the AMX instructions, compiled with AVX-512 so that the unpacking and the
/// epilogues vectorize.
///
/// # Safety
/// AMX must be available ([`amx_available`]) and the CPU must have the features enabled here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_rows_amx(
    format: Ternary,
    w: &QMatrix,
    packed: &TileActs,
    rows: Range<usize>,
    out: &Out,
    scratch: &mut Scratch,
) {
    let mut tiles = super::tiles::AmxTiles::new(&TileConfig::FULL)
        .expect("AMX availability was checked by the caller");
    gemm_rows(&mut tiles, format, w, packed, rows, out, scratch);
}

/// The rows `rows` (a whole number of row groups, except at the matrix's end) for every token.
#[inline(always)]
fn gemm_rows<T: Tiles>(
    tiles: &mut T,
    format: Ternary,
    w: &QMatrix,
    packed: &TileActs,
    rows: Range<usize>,
    out: &Out,
    scratch: &mut Scratch,
) {
    let n_tt = packed.n_token_tiles();
    let n_pairs = n_tt.div_ceil(2);
    let (unit_elems, unit_bytes) = format.unit();
    let n_tokens = packed.n_tokens;
    scratch.a.resize(GROUP_ROWS * SEG_COLS + 64, 0);
    scratch.c.resize(4 * n_pairs, [0; 256]);
    scratch.sumf.resize(GROUP_ROWS * n_tokens, 0.0);
    let a_start = scratch.a.as_ptr().align_offset(64).min(63);

    for r0 in rows.clone().step_by(GROUP_ROWS) {
        let live = (rows.end - r0).min(GROUP_ROWS);
        scratch.sumf.fill(0.0);
        for seg in (0..w.cols).step_by(SEG_COLS) {
            let seg_cols = (w.cols - seg).min(SEG_COLS);
            let a = &mut scratch.a[a_start..a_start + GROUP_ROWS * seg_cols];
            // Unpack the segment of each row (rows past the matrix's end stay zero codes).
            for (i, dst) in a.chunks_exact_mut(seg_cols).enumerate() {
                if i >= live {
                    dst.fill(0);
                    continue;
                }
                let src = w.row(r0 + i);
                let u0 = seg / unit_elems;
                for (u, d) in dst.chunks_exact_mut(unit_elems).enumerate() {
                    let at = (u0 + u) * unit_bytes;
                    format.unpack(&src[at..at + unit_bytes], d);
                }
            }
            let a = &scratch.a[a_start..a_start + GROUP_ROWS * seg_cols];
            let s0 = seg / KSTEP;
            let seg_steps = seg_cols / KSTEP;
            match format {
                Ternary::I2S => {
                    for p in 0..n_pairs {
                        let c = &mut scratch.c[4 * p..4 * p + 4];
                        if seg == 0 {
                            tiles.zero::<0>();
                            tiles.zero::<1>();
                            tiles.zero::<2>();
                            tiles.zero::<3>();
                        } else {
                            tiles.load_i32::<0>(&c[0]);
                            tiles.load_i32::<1>(&c[1]);
                            tiles.load_i32::<2>(&c[2]);
                            tiles.load_i32::<3>(&c[3]);
                        }
                        run_steps(tiles, a, seg_cols, packed, p, s0, 0..seg_steps, n_tt);
                        tiles.store_i32::<0>(&mut c[0]);
                        tiles.store_i32::<1>(&mut c[1]);
                        tiles.store_i32::<2>(&mut c[2]);
                        tiles.store_i32::<3>(&mut c[3]);
                    }
                }
                Ternary::TQ2 | Ternary::TQ1 => {
                    let Acts::Blocks(ba) = packed.acts else {
                        unreachable!("TQ kernels take block activations")
                    };
                    for blk in 0..seg_cols / 256 {
                        let b = (seg + 256 * blk) / 256;
                        // The 32 rows' f16 scales of block b.
                        let d_w: [f32; GROUP_ROWS] = std::array::from_fn(|i| {
                            if i < live {
                                let at = b * unit_bytes + format.d_at();
                                let row = w.row(r0 + i);
                                f16_to_f32(u16::from_le_bytes([row[at], row[at + 1]]))
                            } else {
                                0.0
                            }
                        });
                        for p in 0..n_pairs {
                            tiles.zero::<0>();
                            tiles.zero::<1>();
                            tiles.zero::<2>();
                            tiles.zero::<3>();
                            let steps = 4 * blk..4 * blk + 4;
                            run_steps(tiles, a, seg_cols, packed, p, s0, steps, n_tt);
                            let c = &mut scratch.c[4 * p..4 * p + 4];
                            tiles.store_i32::<0>(&mut c[0]);
                            tiles.store_i32::<1>(&mut c[1]);
                            tiles.store_i32::<2>(&mut c[2]);
                            tiles.store_i32::<3>(&mut c[3]);
                            for (ci, c) in c.iter().enumerate() {
                                let (m, nt) = (ci / 2, ci % 2);
                                let t0 = (2 * p + nt) * TILE_TOKENS;
                                if t0 >= n_tokens {
                                    continue;
                                }
                                let nt_live = (n_tokens - t0).min(TILE_TOKENS);
                                let at = b * n_tokens + t0;
                                let (sums, ds) =
                                    (&ba.sum[at..at + nt_live], &ba.d[at..at + nt_live]);
                                for i in 0..16 {
                                    let row = 16 * m + i;
                                    let sf = &mut scratch.sumf
                                        [row * n_tokens + t0..row * n_tokens + t0 + nt_live];
                                    let ci = &c[16 * i..16 * i + nt_live];
                                    let dw = d_w[row];
                                    for n in 0..nt_live {
                                        let sumi = ci[n].wrapping_sub(sums[n]);
                                        sf[n] = block_epilogue(sf[n], sumi, ds[n], dw);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Write the group's outputs.
        match packed.acts {
            Acts::I8(ia) => {
                let w_scale = w.i2s_scale();
                for i in 0..live {
                    let (m, ii) = (i / 16, i % 16);
                    for t in 0..n_tokens {
                        let (p, nt, n) = (t / 32, (t / 16) % 2, t % 16);
                        let s = scratch.c[4 * p + 2 * m + nt][16 * ii + n];
                        let y = i2s_epilogue(s, ia.sum[t], ia.scale[t], w_scale);
                        // SAFETY: this task owns rows `rows`.
                        unsafe { out.set(t, r0 + i, y) };
                    }
                }
            }
            _ => {
                for i in 0..live {
                    for t in 0..n_tokens {
                        // SAFETY: this task owns rows `rows`.
                        unsafe { out.set(t, r0 + i, scratch.sumf[i * n_tokens + t]) };
                    }
                }
            }
        }
    }
}

/// `TDPBUSD` over the K steps `steps` of the current segment (`a`, row stride `stride`) for the
/// token tiles `2p` and `2p + 1` (if it exists): C0/C2 = rows 0..16 / 16..32 × tile `2p`, C1/C3
/// the same × tile `2p + 1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_steps<T: Tiles>(
    tiles: &mut T,
    a: &[u8],
    stride: usize,
    packed: &TileActs,
    p: usize,
    s0: usize,
    steps: Range<usize>,
    n_tt: usize,
) {
    let two = 2 * p + 1 < n_tt;
    for s in steps {
        tiles.load::<4>(&a[s * KSTEP..], stride);
        tiles.load::<5>(&a[16 * stride + s * KSTEP..], stride);
        tiles.load::<6>(packed.tile(2 * p, s0 + s), 64);
        tiles.dpbusd::<0, 4, 6>();
        tiles.dpbusd::<2, 5, 6>();
        if two {
            tiles.load::<7>(packed.tile(2 * p + 1, s0 + s), 64);
            tiles.dpbusd::<1, 4, 7>();
            tiles.dpbusd::<3, 5, 7>();
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

    /// The unpackers against the formats' own element definitions.
    #[test]
    fn unpacking_matches_the_layouts() {
        let mut src = [0u8; 66];
        for (i, b) in src.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(97).wrapping_add(13);
        }
        let mut dst = [0u8; 128];
        unpack_i2s(&src[..32], &mut dst);
        for e in 0..128 {
            let (j, g) = (e / 32, e % 32);
            assert_eq!(dst[e], (src[g] >> (6 - 2 * j)) & 3, "i2s {e}");
        }
        let mut dst = [0u8; 256];
        unpack_tq2(&src, &mut dst);
        for e in 0..256 {
            let (h, n, l) = (e / 128, (e % 128) / 32, e % 32);
            assert_eq!(dst[e], (src[32 * h + l] >> (2 * n)) & 3, "tq2 {e}");
        }
        unpack_tq1(&src[..54], &mut dst);
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
        assert_eq!(dst.to_vec(), want);
    }
}
