//! The AMX I2_S row-group loop for one pair of token tiles (up to 32 tokens: diffusion blocks
//! and sub-blocks), written on the instructions directly.
//!
//! `amx::gemm_rows_i2s` runs the same loop on the `Tiles` interface, which is what the
//! emulation and the prefill path (more than one pair) use; this copy checks its bounds once
//! per row group instead of per tile load, unpacks without an indirect call per unit, and with
//! one token tile (sub-blocks of up to 16 rows) loads all six operand tiles of a unit before
//! its four products. Measured with 8 tokens: −13 % per call with the weights in cache
//! (2048 × 2560), −3…5 % with a 13824 × 2560 matrix streamed from memory.
//! Same bytes in, same accumulators out: the hardware tests compare both with the scalar
//! reference.

use std::arch::asm;
use std::arch::x86_64::*;

use super::tile_unpack::unpack_i2s_rows;
use crate::kernels::amx::{RING_UNITS, UNIT_BYTES};

/// One row group of an I2_S matrix and the activations of one pair of token tiles.
pub(in crate::kernels) struct PairGroup<'a> {
    /// The group's rows: `live` rows of `row_bytes` bytes from the first one.
    pub rows: &'a [u8],
    pub row_bytes: usize,
    /// Weight rows in the group (1..=32); the A tiles' other rows are zero codes.
    pub live: usize,
    /// The B tiles (`amx::TileActs`' layout): token tile 0's K step `s` at `1024·s`, token
    /// tile 1's (if `two_tiles`) at `1024·(ksteps + s)`.
    pub b: &'a [u8],
    pub two_tiles: bool,
    /// The next row group's bytes (possibly empty), asked for into L2 a slice per unit.
    pub next: &'a [u8],
}

/// `Σ code·q` of the group's 32 rows (unsigned codes 0..=3) against the pair's tokens: C0/C2 =
/// rows 0..16 / 16..32 × token tile 0, C1/C3 the same × token tile 1 (with one token tile, C1
/// and C3 are not written), stored into `c` in `TILESTORED` layout (`[row][token]`).
///
/// Unit `u` (128 columns) is unpacked into the ring while the products of unit `u − 1` run.
///
/// # Panics
/// If the group, the B tiles or the ring are smaller than the shapes need, or `live` is not in
/// `1..=32`.
///
/// # Safety
/// AMX-INT8 must be usable on this thread with every tile configured as 16 rows × 64 bytes (an
/// `AmxTiles` of `TileConfig::FULL` alive on this thread), and the CPU must have AVX-512
/// F/BW/VL and AVX2.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
pub(in crate::kernels) unsafe fn i2s_pair_group(
    g: &PairGroup,
    ring: &mut [u8],
    c: &mut [[i32; 256]; 4],
) {
    let (row_bytes, live) = (g.row_bytes, g.live);
    let units = row_bytes / 32;
    let ksteps = 2 * units;
    assert!(row_bytes.is_multiple_of(32) && units > 0 && (1..=32).contains(&live));
    assert!(g.rows.len() >= live * row_bytes);
    assert!(g.b.len() >= (1 + usize::from(g.two_tiles)) * ksteps * 1024);
    assert!(ring.len() >= RING_UNITS * UNIT_BYTES);
    let (src, ring, b) = (g.rows.as_ptr(), ring.as_mut_ptr(), g.b.as_ptr());
    let tile1 = b.wrapping_add(ksteps * 1024);
    let per_slice = g.next.len().div_ceil(units).next_multiple_of(64);

    // SAFETY (the tile instructions below): the caller's contract configures every tile as
    // 16 rows × 64 bytes. Every A tile is read from a ring slot (16 rows at stride 128 from
    // offset 64·step or 2048 + 64·step of a 4096-byte slot: inside the ring, asserted), every
    // B tile from `g.b` (16 rows of 64 bytes at K step s < ksteps: asserted), and the stores
    // go to `c`'s four 1024-byte arrays.
    macro_rules! tile {
        (zero $t:literal) => {
            // SAFETY: see above.
            unsafe { asm!(concat!("tilezero tmm", $t), options(nostack, nomem)) }
        };
        (load $t:literal, $p:expr, $stride:expr) => {
            // SAFETY: see above.
            unsafe {
                asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
                    p = in(reg) $p, s = in(reg) $stride, options(nostack, readonly))
            }
        };
        (stream $t:literal, $p:expr) => {
            // SAFETY: see above.
            unsafe {
                asm!(concat!("tileloaddt1 tmm", $t, ", [{p} + {s}*1]"),
                    p = in(reg) $p, s = in(reg) 64usize, options(nostack, readonly))
            }
        };
        (dp $c:literal, $a:literal, $b:literal) => {
            // SAFETY: see above.
            unsafe {
                asm!(concat!("tdpbusd tmm", $c, ", tmm", $a, ", tmm", $b), options(nostack, nomem))
            }
        };
        (store $t:literal, $p:expr) => {
            // SAFETY: see above.
            unsafe {
                asm!(concat!("tilestored [{p} + {s}*1], tmm", $t),
                    p = in(reg) $p, s = in(reg) 64usize, options(nostack))
            }
        };
    }

    tile!(zero 0);
    tile!(zero 1);
    tile!(zero 2);
    tile!(zero 3);
    for u in 0..=units {
        if u < units {
            let at = u * per_slice;
            for off in (at..(at + per_slice).min(g.next.len())).step_by(64) {
                // SAFETY: a prefetch never faults; the address is inside `g.next`.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(g.next.as_ptr().add(off).cast()) };
            }
            let dst = ring.wrapping_add((u % RING_UNITS) * UNIT_BYTES);
            // SAFETY: rows i < live have bytes 32u..32u + 32 inside `g.rows` (u < units =
            // row_bytes / 32, asserted); the slot's 4096 bytes are inside the ring.
            unsafe { unpack_i2s_rows(src.wrapping_add(32 * u), row_bytes, live, dst) };
        }
        if u == 0 {
            continue;
        }
        let a = ring.wrapping_add(((u - 1) % RING_UNITS) * UNIT_BYTES);
        let s = 2 * (u - 1);
        let (a00, a10) = (a, a.wrapping_add(2048));
        let (a01, a11) = (a.wrapping_add(64), a.wrapping_add(2048 + 64));
        let (b0, b1) = (b.wrapping_add(1024 * s), b.wrapping_add(1024 * (s + 1)));
        if g.two_tiles {
            // 2 × 2 blocking per K step; each operand tile is reloaded as soon as its last
            // reader has been issued (tiles are not renamed).
            let (c0, c1) = (
                tile1.wrapping_add(1024 * s),
                tile1.wrapping_add(1024 * (s + 1)),
            );
            for (a0, a1, bt0, bt1) in [(a00, a10, b0, c0), (a01, a11, b1, c1)] {
                tile!(load 4, a0, 128usize);
                tile!(stream 6, bt0);
                tile!(dp 0, 4, 6);
                tile!(stream 7, bt1);
                tile!(dp 1, 4, 7);
                tile!(load 5, a1, 128usize);
                tile!(dp 2, 5, 6);
                tile!(dp 3, 5, 7);
            }
        } else {
            // One token tile: both K steps' operands (tiles 4, 5, 6 and 7, 1, 3) are loaded
            // before the four products.
            tile!(load 4, a00, 128usize);
            tile!(load 5, a10, 128usize);
            tile!(stream 6, b0);
            tile!(load 7, a01, 128usize);
            tile!(load 1, a11, 128usize);
            tile!(stream 3, b1);
            tile!(dp 0, 4, 6);
            tile!(dp 2, 5, 6);
            tile!(dp 0, 7, 3);
            tile!(dp 2, 1, 3);
        }
    }
    tile!(store 0, c[0].as_mut_ptr());
    tile!(store 2, c[2].as_mut_ptr());
    if g.two_tiles {
        tile!(store 1, c[1].as_mut_ptr());
        tile!(store 3, c[3].as_mut_ptr());
    }
}
