//! AVX-512 unpacking of ternary codes into AMX A tiles: the vector form of
//! `amx::unpack_segment`, with the same output (tested equal to it in `amx.rs`).
//!
//! I2_S and TQ2_0 broadcast 32 code bytes to both halves of a zmm register and shift each half
//! by its own amount (`vpsrlvw`), which gives 64 consecutive elements per register — one A
//! tile row — in three instructions. TQ1_0 reuses the AVX2 base-3 decoding.

use std::arch::x86_64::*;
use std::ops::Range;

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

/// Which unpacking: 0 = I2_S, 1 = TQ2_0, 2 = TQ1_0 (see `amx::Ternary`).
pub(in crate::kernels) const I2S: u8 = 0;
pub(in crate::kernels) const TQ2: u8 = 1;
pub(in crate::kernels) const TQ1: u8 = 2;

/// Unpacks columns `cols` of rows `r0..r0 + live` of `w` into A tiles in `a`: tile `(s, m)`
/// (the segment's K step `s`, rows `16m..16m + 16`) at `(2s + m)·1024`, row `i % 16` at
/// `64·(i % 16)`; rows `live..32` become zero codes.
///
/// # Panics
/// If `cols` is not a whole number of the format's units or `a` is too short for it.
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX2.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
pub(in crate::kernels) unsafe fn unpack_segment(
    format: u8,
    w: &QMatrix,
    r0: usize,
    live: usize,
    cols: Range<usize>,
    a: &mut [u8],
) {
    let (unit_elems, unit_bytes) = match format {
        I2S => (128, 32),
        TQ2 => (256, 66),
        _ => (256, 54),
    };
    assert!(cols.start.is_multiple_of(unit_elems) && cols.end.is_multiple_of(unit_elems));
    let steps = (cols.end - cols.start) / 64;
    assert!(a.len() >= 2 * steps * 1024, "tile buffer too short");
    let units = cols.start / unit_elems..cols.end / unit_elems;
    let base = a.as_mut_ptr();
    for i in 0..32 {
        let (m, ii) = (i / 16, i % 16);
        // Row i of A tile (s, m).
        let dst = |s: usize| -> *mut u8 {
            debug_assert!(s < steps);
            // SAFETY: s < steps and m < 2, ii < 16, so the 64 bytes are inside `a` (asserted).
            unsafe { base.add((2 * s + m) * 1024 + ii * 64) }
        };
        if i >= live {
            for s in 0..steps {
                // SAFETY: see `dst`.
                unsafe { _mm512_storeu_si512(dst(s).cast(), _mm512_setzero_si512()) };
            }
            continue;
        }
        let row = w.row(r0 + i);
        assert!(units.end * unit_bytes <= row.len());
        for u in units.clone() {
            let s = (u - units.start) * (unit_elems / 64);
            // SAFETY: the unit's bytes are inside the row (asserted above); every store goes to
            // a tile row inside `a` (see `dst`).
            unsafe {
                let src = row.as_ptr().add(u * unit_bytes);
                match format {
                    I2S => {
                        let x = _mm512_broadcast_i64x4(load(src));
                        _mm512_storeu_si512(dst(s).cast(), fields(x, shifts(6, 4)));
                        _mm512_storeu_si512(dst(s + 1).cast(), fields(x, shifts(2, 0)));
                    }
                    TQ2 => {
                        for h in 0..2 {
                            let x = _mm512_broadcast_i64x4(load(src.add(32 * h)));
                            _mm512_storeu_si512(dst(s + 2 * h).cast(), fields(x, shifts(0, 2)));
                            let hi = fields(x, shifts(4, 6));
                            _mm512_storeu_si512(dst(s + 2 * h + 1).cast(), hi);
                        }
                    }
                    _ => {
                        let v = tq1_0_shifted(src);
                        for j in 0..4 {
                            let d = dst(s + j);
                            _mm256_storeu_si256(d.cast(), top_trit(v[2 * j]));
                            _mm256_storeu_si256(d.add(32).cast(), top_trit(v[2 * j + 1]));
                        }
                    }
                }
            }
        }
    }
}

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
    let (sh01, sh23) = (shifts(6, 4), shifts(2, 0));
    let src = w.data.as_ptr().wrapping_add(r0 * row_bytes + 32 * u);
    let out = dst.as_mut_ptr();
    for i in 0..live {
        // SAFETY: row r0 + i < r0 + live and its bytes 32u..32u + 32 are inside `w.data`
        // (asserted); the 128 bytes at 128i are inside `dst` (i < 32).
        unsafe {
            let x = _mm512_broadcast_i64x4(load(src.add(i * row_bytes)));
            _mm512_storeu_si512(out.add(128 * i).cast(), fields(x, sh01));
            _mm512_storeu_si512(out.add(128 * i + 64).cast(), fields(x, sh23));
        }
    }
    for i in live..32 {
        // SAFETY: as above.
        unsafe {
            _mm512_storeu_si512(out.add(128 * i).cast(), _mm512_setzero_si512());
            _mm512_storeu_si512(out.add(128 * i + 64).cast(), _mm512_setzero_si512());
        }
    }
}
