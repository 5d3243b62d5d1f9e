//! AVX-512 unpacking of ternary codes into AMX A tiles: the vector forms of
//! `amx::unpack_i2s_unit` and `amx::unpack_block_unit`, with the same output (tested equal to
//! them in `amx.rs`).
//!
//! I2_S and TQ2_0 broadcast 32 code bytes to both halves of a zmm register and shift each half
//! by its own amount (`vpsrlvw`), which gives 64 consecutive elements per register — one A
//! tile row — in three instructions. TQ1_0 reuses the AVX2 base-3 decoding.

use std::arch::x86_64::*;

use super::{load, top_trit, tq1_0_shifted};
use crate::kernels::QMatrix;

/// Per-16-bit-lane shift counts: `lo` for the low 256 bits, `hi` for the high 256 bits.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn shifts(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
}

/// The 2-bit fields of the 32 bytes `x` (in both halves), each half shifted by its count.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn fields(x: __m512i, counts: __m512i) -> __m512i {
    _mm512_and_si512(_mm512_srlv_epi16(x, counts), _mm512_set1_epi8(3))
}

/// Which block unpacking ([`unpack_block_unit`]): TQ2_0 or TQ1_0.
pub(in crate::kernels) const TQ2: u8 = 1;
pub(in crate::kernels) const TQ1: u8 = 2;

/// Unpacks I2_S unit `u` (columns `128u..128u + 128`) of rows `r0..r0 + live` of `w` row-major
/// into `dst`: weight row `i` (of 32) at `dst[128·i..128·i + 128]`, in element order; rows
/// `live..32` become zero codes. The A tile of rows `16m..16m + 16` at the unit's K step `j`
/// is then `dst[2048·m + 64·j..]` at stride 128.
///
/// # Panics
/// If the rows or the unit are outside `w`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX2.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
pub(in crate::kernels) unsafe fn unpack_i2s_unit(
    w: &QMatrix,
    r0: usize,
    live: usize,
    u: usize,
    dst: &mut [u8; 4096],
) {
    let row_bytes = w.cols / 4;
    assert!(live <= 32 && (u + 1) * 32 <= row_bytes && (r0 + live) * row_bytes <= w.data.len());
    let src = w.data.as_ptr().wrapping_add(r0 * row_bytes + 32 * u);
    // SAFETY: rows r0..r0 + live have bytes 32u..32u + 32 inside `w.data` (asserted); `dst`
    // is 4096 bytes; the CPU features are the caller's contract.
    unsafe { unpack_i2s_rows(src, row_bytes, live, dst.as_mut_ptr()) }
}

/// The loop of [`unpack_i2s_unit`] on raw pointers (also the AMX diffusion-step loop's,
/// `tile_i2s`): the 32 code bytes at `src + i·row_bytes` of rows `i < live` unpacked to
/// `dst[128·i..128·i + 128]` in element order, rows `live..32` zero codes.
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX2; `src + i·row_bytes .. + 32` must be readable for
/// every `i < live ≤ 32`, and `dst .. dst + 4096` writable.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
#[inline]
pub(super) unsafe fn unpack_i2s_rows(src: *const u8, row_bytes: usize, live: usize, dst: *mut u8) {
    let (sh01, sh23) = (shifts(6, 4), shifts(2, 0));
    for i in 0..live {
        // SAFETY: row i's 32 bytes are readable and the 128 bytes at 128i writable (i < 32),
        // per the contract.
        unsafe {
            let x = _mm512_broadcast_i64x4(load(src.add(i * row_bytes)));
            _mm512_storeu_si512(dst.add(128 * i).cast(), fields(x, sh01));
            _mm512_storeu_si512(dst.add(128 * i + 64).cast(), fields(x, sh23));
        }
    }
    for i in live..32 {
        // SAFETY: as above.
        unsafe {
            _mm512_storeu_si512(dst.add(128 * i).cast(), _mm512_setzero_si512());
            _mm512_storeu_si512(dst.add(128 * i + 64).cast(), _mm512_setzero_si512());
        }
    }
}

/// Unpacks block `b` (256 columns; `format` TQ2 or TQ1) of rows `r0..r0 + live` of `w`
/// row-major into `dst`: weight row `i` (of 32) at `dst[256·i..256·i + 256]`, in element order;
/// rows `live..32` become zero codes. The A tile of rows `16m..16m + 16` at the block's K step
/// `j` is then `dst[4096·m + 64·j..]` at stride 256.
///
/// # Panics
/// If `format` is not a block format or the rows or the block are outside `w`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX2.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
pub(in crate::kernels) unsafe fn unpack_block_unit(
    format: u8,
    w: &QMatrix,
    r0: usize,
    live: usize,
    b: usize,
    dst: &mut [u8; 8192],
) {
    let unit_bytes = match format {
        TQ2 => 66,
        TQ1 => 54,
        _ => panic!("unpack_block_unit: not a block format"),
    };
    let row_bytes = w.cols / 256 * unit_bytes;
    assert!(
        live <= 32 && (b + 1) * unit_bytes <= row_bytes && (r0 + live) * row_bytes <= w.data.len()
    );
    let src = w
        .data
        .as_ptr()
        .wrapping_add(r0 * row_bytes + b * unit_bytes);
    let out = dst.as_mut_ptr();
    for i in 0..live {
        // SAFETY: the block's bytes of row r0 + i are inside `w.data` (asserted); the 256
        // bytes at 256i are inside `dst` (i < 32).
        unsafe {
            let (s, d) = (src.add(i * row_bytes), out.add(256 * i));
            if format == TQ2 {
                for h in 0..2 {
                    let x = _mm512_broadcast_i64x4(load(s.add(32 * h)));
                    _mm512_storeu_si512(d.add(128 * h).cast(), fields(x, shifts(0, 2)));
                    _mm512_storeu_si512(d.add(128 * h + 64).cast(), fields(x, shifts(4, 6)));
                }
            } else {
                let v = tq1_0_shifted(s);
                for j in 0..4 {
                    _mm256_storeu_si256(d.add(64 * j).cast(), top_trit(v[2 * j]));
                    _mm256_storeu_si256(d.add(64 * j + 32).cast(), top_trit(v[2 * j + 1]));
                }
            }
        }
    }
    for i in live..32 {
        for j in 0..4 {
            // SAFETY: as above.
            unsafe {
                _mm512_storeu_si512(out.add(256 * i + 64 * j).cast(), _mm512_setzero_si512())
            };
        }
    }
}

/// Packs the activation codes of one call into B tiles (`amx::TileActs`' layout): for token
/// tile `j` and K step `s`, tile `j·ksteps + s` has row `kk` = the 4 codes
/// `64s + 4kk..64s + 4kk + 4` of each of its 16 tokens. That is a 16 × 16 dword transposition
/// of the 16 tokens' 64-byte slices ([`super::tile_epilogue::transpose16`]); tokens past
/// `n_tokens` and columns past `cols` are zeros.
///
/// # Panics
/// If a row is shorter than `cols` or `dst` is not `⌈n_tokens/16⌉ · ksteps` tiles of 1024
/// bytes with `ksteps = ⌈cols/64⌉`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(in crate::kernels) unsafe fn pack_b_tiles<'a>(
    row: impl Fn(usize) -> &'a [i8],
    n_tokens: usize,
    cols: usize,
    dst: &mut [i8],
) {
    let ksteps = cols.div_ceil(64);
    let n_tiles = n_tokens.div_ceil(16);
    assert_eq!(dst.len(), n_tiles * ksteps * 1024);
    let rows: Vec<&[i8]> = (0..n_tokens).map(&row).collect();
    assert!(rows.iter().all(|r| r.len() >= cols));
    let out = dst.as_mut_ptr();
    for j in 0..n_tiles {
        let live = (n_tokens - 16 * j).min(16);
        for s in 0..ksteps {
            let width = (cols - 64 * s).min(64);
            let mask: __mmask64 = if width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            let mut v = [_mm512_setzero_si512(); 16];
            for (n, v) in v.iter_mut().enumerate().take(live) {
                // SAFETY: the row has at least `cols` codes (asserted), so its bytes
                // 64s..64s + width exist; the masked-off bytes are not read.
                *v = unsafe {
                    _mm512_maskz_loadu_epi8(mask, rows[16 * j + n].as_ptr().add(64 * s).cast())
                };
            }
            super::tile_epilogue::transpose16(&mut v);
            let tile = out.wrapping_add((j * ksteps + s) * 1024);
            for (kk, v) in v.iter().enumerate() {
                // SAFETY: tile j·ksteps + s is inside `dst` (its length is asserted).
                unsafe { _mm512_storeu_si512(tile.add(64 * kk).cast(), *v) };
            }
        }
    }
}
