//! The narrow tile interface the AMX kernels are written against, and its two implementations:
//! the real instructions ([`AmxTiles`], x86-64 with AMX-TILE + AMX-INT8) and a plain-Rust
//! emulation with the same semantics ([`EmulatedTiles`], every machine).
//!
//! The model is Intel's AMX palette 1: eight tile registers of up to 16 rows × 64 bytes, a
//! configuration that gives each tile its rows and bytes per row, loads and stores of a tile
//! from memory with a row stride, and `TDPBUSD`:
//!
//! ```text
//! C (M × N i32) += A (M rows × K unsigned bytes) · B (K/4 rows × N·4 signed bytes, "VNNI layout")
//! C[m][n] += Σ_{k < K/4} Σ_{i < 4} u8(A[m][4k + i]) · i8(B[k][4n + i])      (wrapping i32)
//! ```
//!
//! so B row `k` holds, for each output column `n`, the four consecutive K-elements `4k..4k + 4`.
//! The kernels in `amx.rs` use one fixed configuration (every tile 16 × 64) and contiguous
//! tiles (stride 64 bytes), which is what the safe methods here take: a 1024-byte buffer per
//! tile. The emulation honours the configuration's rows and widths exactly as the hardware does
//! (bytes outside them load as zero and are not stored), so it could run any other configuration.
//!
//! Tile registers are named by a constant index: the instructions encode the register, so the
//! hardware implementation dispatches on the constant with a `match` that folds away.

/// Bytes in one tile (16 rows × 64 bytes).
pub(crate) const TILE_BYTES: usize = 1024;

/// Rows of a full tile.
pub(crate) const TILE_ROWS: usize = 16;

/// Bytes per row of a full tile.
pub(crate) const TILE_COLSB: usize = 64;

/// Rows and bytes per row of each of the eight tiles (palette 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TileConfig {
    /// Rows of tile `i` (≤ 16).
    pub rows: [u8; 8],
    /// Bytes per row of tile `i` (≤ 64, a multiple of 4).
    pub colsb: [u16; 8],
}

impl TileConfig {
    /// Every tile 16 rows × 64 bytes.
    pub const FULL: TileConfig = TileConfig {
        rows: [TILE_ROWS as u8; 8],
        colsb: [TILE_COLSB as u16; 8],
    };

    /// Panics unless every tile is at most 16 rows × 64 bytes with a width that is a multiple
    /// of 4 (the limits of palette 1, and what the loads' bounds checks assume).
    fn check(&self) {
        for t in 0..8 {
            assert!(
                self.rows[t] as usize <= TILE_ROWS
                    && self.colsb[t] as usize <= TILE_COLSB
                    && self.colsb[t].is_multiple_of(4),
                "invalid tile configuration {self:?}"
            );
        }
    }

    /// The 64-byte block `LDTILECFG` reads: palette id, start row, 14 reserved bytes, the
    /// sixteen `colsb` (u16), the sixteen `rows` (u8), 16 reserved bytes.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn to_bytes(self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = 1; // palette 1
        for i in 0..8 {
            b[16 + 2 * i..18 + 2 * i].copy_from_slice(&self.colsb[i].to_le_bytes());
            b[48 + i] = self.rows[i];
        }
        b
    }
}

/// A set of eight tile registers and the operations the kernels use.
///
/// `T`, `C`, `A`, `B` name tile registers 0..8. The buffers are contiguous tiles: row `r`
/// starts at byte `64·r`.
pub(crate) trait Tiles {
    /// Loads `cfg` (`LDTILECFG`); every tile becomes zero.
    fn configure(&mut self, cfg: &TileConfig);
    /// Tile `T` = 0 (`TILEZERO`).
    fn zero<const T: u8>(&mut self);
    /// Tile `T` = its configured rows and bytes per row, row `r` at `src[r·stride..]`
    /// (`TILELOADD`).
    ///
    /// # Panics
    /// If `stride` is less than the tile's width or `src` is shorter than
    /// `(rows − 1)·stride + width` bytes.
    fn load<const T: u8>(&mut self, src: &[u8], stride: usize);
    /// [`Tiles::load`] with a hint that the data is read once from here and need not stay in L1
    /// (`TILELOADDT1`); the same result.
    fn load_streamed<const T: u8>(&mut self, src: &[u8], stride: usize) {
        self.load::<T>(src, stride)
    }
    /// The i32 tile `T` into `dst` (`TILESTORED`, stride 64).
    fn store_i32<const T: u8>(&mut self, dst: &mut [i32; TILE_BYTES / 4]);
    /// Tile `T` = the i32 tile in `src` (`TILELOADD` of an accumulator saved by `store_i32`).
    #[allow(dead_code)] // the kernels keep their accumulators in tiles; the tests preload them
    fn load_i32<const T: u8>(&mut self, src: &[i32; TILE_BYTES / 4]);
    /// `C += A·B`, unsigned A bytes by signed B bytes into i32 (`TDPBUSD`).
    fn dpbusd<const C: u8, const A: u8, const B: u8>(&mut self);
    /// `C += A·B`, signed A bytes by signed B bytes into i32 (`TDPBSSD`).
    fn dpbssd<const C: u8, const A: u8, const B: u8>(&mut self);
}

/// The bounds a strided load of a tile of `rows` × `colsb` bytes needs.
#[inline]
fn check_strided(src: &[u8], stride: usize, rows: u8, colsb: u16) {
    let (rows, colsb) = (usize::from(rows), usize::from(colsb));
    assert!(
        stride >= colsb && (rows == 0 || src.len() >= (rows - 1) * stride + colsb),
        "tile load: {} bytes at stride {stride} do not hold {rows} rows of {colsb}",
        src.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The emulation.

/// Tiles in plain Rust, with the semantics of the instructions (Intel SDM pseudo-code).
pub(crate) struct EmulatedTiles {
    cfg: TileConfig,
    regs: Box<[[u8; TILE_BYTES]; 8]>,
}

impl EmulatedTiles {
    /// Eight zero tiles, configured as [`TileConfig::FULL`].
    pub fn new() -> EmulatedTiles {
        EmulatedTiles {
            cfg: TileConfig::FULL,
            regs: Box::new([[0; TILE_BYTES]; 8]),
        }
    }

    fn shape(&self, t: u8) -> (usize, usize) {
        let t = usize::from(t);
        (
            usize::from(self.cfg.rows[t]),
            usize::from(self.cfg.colsb[t]),
        )
    }

    /// The dword `n` of row `r` of tile `t`.
    fn dword(&self, t: u8, r: usize, n: usize) -> [u8; 4] {
        let at = r * TILE_COLSB + 4 * n;
        self.regs[usize::from(t)][at..at + 4].try_into().unwrap()
    }

    fn load_bytes(&mut self, t: u8, src: &[u8], stride: usize) {
        let (rows, colsb) = self.shape(t);
        check_strided(src, stride, rows as u8, colsb as u16);
        let reg = &mut self.regs[usize::from(t)];
        reg.fill(0);
        for r in 0..rows {
            reg[r * TILE_COLSB..r * TILE_COLSB + colsb]
                .copy_from_slice(&src[r * stride..r * stride + colsb]);
        }
    }
}

impl Tiles for EmulatedTiles {
    fn configure(&mut self, cfg: &TileConfig) {
        cfg.check();
        self.cfg = *cfg;
        self.regs.iter_mut().for_each(|r| r.fill(0));
    }

    fn zero<const T: u8>(&mut self) {
        self.regs[usize::from(T)].fill(0);
    }

    fn load<const T: u8>(&mut self, src: &[u8], stride: usize) {
        self.load_bytes(T, src, stride);
    }

    fn store_i32<const T: u8>(&mut self, dst: &mut [i32; TILE_BYTES / 4]) {
        let (rows, colsb) = self.shape(T);
        for r in 0..rows {
            for n in 0..colsb / 4 {
                dst[r * 16 + n] = i32::from_le_bytes(self.dword(T, r, n));
            }
        }
    }

    fn load_i32<const T: u8>(&mut self, src: &[i32; TILE_BYTES / 4]) {
        let mut bytes = [0u8; TILE_BYTES];
        for (b, v) in bytes.chunks_exact_mut(4).zip(src) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        self.load_bytes(T, &bytes, TILE_COLSB);
    }

    fn dpbusd<const C: u8, const A: u8, const B: u8>(&mut self) {
        self.dot(C, A, B, i32::from);
    }

    fn dpbssd<const C: u8, const A: u8, const B: u8>(&mut self) {
        self.dot(C, A, B, |a| i32::from(a as i8));
    }
}

impl EmulatedTiles {
    /// `C += A·B` with A's bytes read by `a_value` and B's as signed (Intel SDM pseudo-code of
    /// `TDPB[SU]SD`: dword products summed in i32, wrapping).
    fn dot(&mut self, c: u8, a: u8, b: u8, a_value: impl Fn(u8) -> i32) {
        let (m_rows, c_colsb) = self.shape(c);
        let (_, a_colsb) = self.shape(a);
        let (b_rows, _) = self.shape(b);
        assert_eq!(a_colsb / 4, b_rows, "TDPB*D: A's K/4 must equal B's rows");
        for m in 0..m_rows {
            for n in 0..c_colsb / 4 {
                let mut acc = i32::from_le_bytes(self.dword(c, m, n));
                for k in 0..a_colsb / 4 {
                    let (av, bv) = (self.dword(a, m, k), self.dword(b, k, n));
                    for i in 0..4 {
                        acc = acc.wrapping_add(a_value(av[i]) * i32::from(bv[i] as i8));
                    }
                }
                let at = m * TILE_COLSB + 4 * n;
                self.regs[usize::from(c)][at..at + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hardware.

#[cfg(target_arch = "x86_64")]
pub(crate) use hw::{amx_available, AmxTiles};

/// Never available off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn amx_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
mod hw {
    use std::arch::asm;
    use std::marker::PhantomData;
    use std::sync::OnceLock;

    use super::{TileConfig, Tiles, TILE_BYTES, TILE_COLSB};

    // Every configuration the kernels load is checked to stay within 16 × 64 (the emulation
    // asserts the same), so a strided load never reads more than `check_strided` allows.

    /// Whether this process may run AMX-INT8: the CPU reports AMX-TILE and AMX-INT8 (CPUID leaf
    /// 7) and the AVX-512 features the tile kernels also use, the OS enables the tile state, and Linux granted it to this process
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, requested here once). Anything
    /// else (another OS, an old kernel, a hypervisor that hides AMX) answers false, and the
    /// kernels fall back to AVX-512.
    pub(crate) fn amx_available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| cpu_has_amx_int8() && request_tile_permission())
    }

    fn cpu_has_amx_int8() -> bool {
        // CPUID is always present on x86-64; leaf 0 says which leaves exist.
        let max_leaf = std::arch::x86_64::__cpuid(0).eax;
        if max_leaf < 7 {
            return false;
        }
        let l7 = std::arch::x86_64::__cpuid_count(7, 0);
        let amx_tile = l7.edx & (1 << 24) != 0;
        let amx_int8 = l7.edx & (1 << 25) != 0;
        // The tile kernels are compiled with these too (for their unpacking and epilogues);
        // every AMX processor has them.
        amx_tile
            && amx_int8
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }

    #[cfg(target_os = "linux")]
    fn request_tile_permission() -> bool {
        const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these codes only reads/writes the process's permission mask
        // (and `bits`, a live local).
        unsafe {
            if libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) != 0
            {
                return false;
            }
            let mut bits: u64 = 0;
            if libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_GET_XCOMP_PERM,
                &mut bits as *mut u64,
            ) != 0
            {
                return false;
            }
            bits & (1 << XFEATURE_XTILEDATA) != 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_permission() -> bool {
        false
    }

    /// The tile registers of the current thread. Configured on creation, released on drop;
    /// not `Send` (tile state belongs to a thread).
    pub(crate) struct AmxTiles {
        /// The loaded configuration (for the loads' bounds checks).
        cfg: TileConfig,
        _thread_bound: PhantomData<*const ()>,
    }

    impl AmxTiles {
        /// Configures the current thread's tiles as `cfg`, or `None` where [`amx_available`]
        /// says no.
        pub fn new(cfg: &TileConfig) -> Option<AmxTiles> {
            if !amx_available() {
                return None;
            }
            let mut t = AmxTiles {
                cfg: *cfg,
                _thread_bound: PhantomData,
            };
            t.configure(cfg);
            Some(t)
        }
    }

    impl Drop for AmxTiles {
        fn drop(&mut self) {
            // SAFETY: AMX is available (checked in `new`); TILERELEASE returns the tile state
            // to its initial state and touches no memory.
            unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) }
        }
    }

    /// Runs `$body` with the register name of tile `$t` spliced in as `$name`.
    macro_rules! on_tile {
        ($t:expr, $mac:ident) => {
            match $t {
                0 => $mac!("tmm0"),
                1 => $mac!("tmm1"),
                2 => $mac!("tmm2"),
                3 => $mac!("tmm3"),
                4 => $mac!("tmm4"),
                5 => $mac!("tmm5"),
                6 => $mac!("tmm6"),
                7 => $mac!("tmm7"),
                _ => unreachable!("tile register {}", $t),
            }
        };
    }

    // SAFETY (for the `asm!` blocks below): an `AmxTiles` exists only after `amx_available()`
    // confirmed the CPU and OS support and `configure` loaded a configuration with every tile
    // at most 16 rows × 64 bytes; each load/store reads or writes at most 16 rows of 64 bytes
    // at its stride, and the buffers are checked (or typed) to hold them.
    impl Tiles for AmxTiles {
        fn configure(&mut self, cfg: &TileConfig) {
            #[repr(C, align(64))]
            struct Block([u8; 64]);
            cfg.check();
            let block = Block(cfg.to_bytes());
            self.cfg = *cfg;
            // SAFETY: see above; LDTILECFG reads the 64-byte block.
            unsafe { asm!("ldtilecfg [{0}]", in(reg) block.0.as_ptr(), options(nostack, readonly)) }
        }

        fn zero<const T: u8>(&mut self) {
            macro_rules! z {
                ($r:literal) => {
                    // SAFETY: see above.
                    unsafe { asm!(concat!("tilezero ", $r), options(nostack, nomem)) }
                };
            }
            on_tile!(T, z)
        }

        fn load<const T: u8>(&mut self, src: &[u8], stride: usize) {
            let t = usize::from(T);
            super::check_strided(src, stride, self.cfg.rows[t], self.cfg.colsb[t]);
            macro_rules! l {
                ($r:literal) => {
                    // SAFETY: see above; `check_strided` bounds the 16 rows at `stride`.
                    unsafe {
                        asm!(concat!("tileloadd ", $r, ", [{p} + {s}*1]"),
                            p = in(reg) src.as_ptr(), s = in(reg) stride,
                            options(nostack, readonly))
                    }
                };
            }
            on_tile!(T, l)
        }

        fn load_streamed<const T: u8>(&mut self, src: &[u8], stride: usize) {
            let t = usize::from(T);
            super::check_strided(src, stride, self.cfg.rows[t], self.cfg.colsb[t]);
            macro_rules! l {
                ($r:literal) => {
                    // SAFETY: see above; `check_strided` bounds the 16 rows at `stride`.
                    unsafe {
                        asm!(concat!("tileloaddt1 ", $r, ", [{p} + {s}*1]"),
                            p = in(reg) src.as_ptr(), s = in(reg) stride,
                            options(nostack, readonly))
                    }
                };
            }
            on_tile!(T, l)
        }

        fn load_i32<const T: u8>(&mut self, src: &[i32; TILE_BYTES / 4]) {
            macro_rules! l {
                ($r:literal) => {
                    // SAFETY: see above.
                    unsafe {
                        asm!(concat!("tileloadd ", $r, ", [{p} + {s}*1]"),
                            p = in(reg) src.as_ptr(), s = in(reg) TILE_COLSB,
                            options(nostack, readonly))
                    }
                };
            }
            on_tile!(T, l)
        }

        fn store_i32<const T: u8>(&mut self, dst: &mut [i32; TILE_BYTES / 4]) {
            macro_rules! s {
                ($r:literal) => {
                    // SAFETY: see above.
                    unsafe {
                        asm!(concat!("tilestored [{p} + {s}*1], ", $r),
                            p = in(reg) dst.as_mut_ptr(), s = in(reg) TILE_COLSB,
                            options(nostack))
                    }
                };
            }
            on_tile!(T, s)
        }

        fn dpbusd<const C: u8, const A: u8, const B: u8>(&mut self) {
            macro_rules! d {
                ($c:literal, $a:literal, $b:literal) => {
                    // SAFETY: see above; TDPBUSD touches only tile registers.
                    unsafe {
                        asm!(
                            concat!("tdpbusd ", $c, ", ", $a, ", ", $b),
                            options(nostack, nomem)
                        )
                    }
                };
            }
            // The kernels' register roles: accumulators 0..4, A tiles 4 and 5, B tiles 6 and 7;
            // with one token tile, 7/1 (A) and 3 (B) as a second operand set; the block
            // formats' two accumulator sets (0, 1) and (2, 3) over A 4/5 and B 6.
            match (C, A, B) {
                (0, 4, 6) => d!("tmm0", "tmm4", "tmm6"),
                (1, 4, 7) => d!("tmm1", "tmm4", "tmm7"),
                (2, 5, 6) => d!("tmm2", "tmm5", "tmm6"),
                (3, 5, 7) => d!("tmm3", "tmm5", "tmm7"),
                (1, 5, 6) => d!("tmm1", "tmm5", "tmm6"),
                (2, 4, 6) => d!("tmm2", "tmm4", "tmm6"),
                (3, 5, 6) => d!("tmm3", "tmm5", "tmm6"),
                (0, 7, 3) => d!("tmm0", "tmm7", "tmm3"),
                (2, 1, 3) => d!("tmm2", "tmm1", "tmm3"),
                _ => unreachable!("tdpbusd tmm{C}, tmm{A}, tmm{B} is not wired"),
            }
        }

        fn dpbssd<const C: u8, const A: u8, const B: u8>(&mut self) {
            macro_rules! d {
                ($c:literal, $a:literal, $b:literal) => {
                    // SAFETY: see above; TDPBSSD touches only tile registers.
                    unsafe {
                        asm!(
                            concat!("tdpbssd ", $c, ", ", $a, ", ", $b),
                            options(nostack, nomem)
                        )
                    }
                };
            }
            // The Q8_0 kernel's two accumulator sets (0, 1) and (2, 3) over A 4/5 and B 6.
            match (C, A, B) {
                (0, 4, 6) => d!("tmm0", "tmm4", "tmm6"),
                (1, 5, 6) => d!("tmm1", "tmm5", "tmm6"),
                (2, 4, 6) => d!("tmm2", "tmm4", "tmm6"),
                (3, 5, 6) => d!("tmm3", "tmm5", "tmm6"),
                _ => unreachable!("tdpbssd tmm{C}, tmm{A}, tmm{B} is not wired"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TDPBUSD on hand-made tiles: C[m][n] = Σ_k u8(A[m][k]) · i8(B[k/4][4n + k%4]).
    fn reference(a: &[u8; TILE_BYTES], b: &[u8; TILE_BYTES], c0: i32) -> Vec<i32> {
        reference_as(a, b, c0, i32::from)
    }

    /// TDPBSSD on hand-made tiles: A's bytes signed.
    fn reference_signed(a: &[u8; TILE_BYTES], b: &[u8; TILE_BYTES]) -> Vec<i32> {
        reference_as(a, b, 0, |a| i32::from(a as i8))
    }

    fn reference_as(
        a: &[u8; TILE_BYTES],
        b: &[u8; TILE_BYTES],
        c0: i32,
        a_value: impl Fn(u8) -> i32,
    ) -> Vec<i32> {
        let mut c = vec![c0; 256];
        for m in 0..16 {
            for n in 0..16 {
                for k in 0..64 {
                    c[m * 16 + n] +=
                        a_value(a[m * 64 + k]) * i32::from(b[(k / 4) * 64 + 4 * n + k % 4] as i8);
                }
            }
        }
        c
    }

    fn patterns() -> ([u8; TILE_BYTES], [u8; TILE_BYTES]) {
        let mut a = [0u8; TILE_BYTES];
        let mut b = [0u8; TILE_BYTES];
        for i in 0..TILE_BYTES {
            a[i] = (i * 37 % 251) as u8; // up to 250: exercises the unsigned reading
            b[i] = (i * 91 % 256) as u8; // every byte: negative int8 too
        }
        (a, b)
    }

    /// Every wired register combination once, with accumulators starting at 7; returns the
    /// four accumulators.
    fn run<T: Tiles>(t: &mut T, a: &[u8; TILE_BYTES], b: &[u8; TILE_BYTES]) -> Vec<[i32; 256]> {
        let (mut a2, mut b2) = (*a, *b);
        a2.reverse();
        b2.reverse();
        let sevens = [7i32; 256];
        t.load_i32::<0>(&sevens);
        t.load_i32::<1>(&sevens);
        t.load_i32::<2>(&sevens);
        t.load_i32::<3>(&sevens);
        t.load::<4>(a, 64);
        t.load::<5>(&a2, 64);
        t.load_streamed::<6>(b, 64);
        t.load_streamed::<7>(&b2, 64);
        t.dpbusd::<0, 4, 6>();
        t.dpbusd::<1, 4, 7>();
        t.dpbusd::<2, 5, 6>();
        t.dpbusd::<3, 5, 7>();
        t.dpbusd::<3, 5, 7>(); // accumulates twice
                               // The block formats' wiring: two accumulator sets over A 4/5 and B 6.
        t.dpbusd::<1, 5, 6>();
        t.dpbusd::<2, 4, 6>();
        t.dpbusd::<3, 5, 6>();
        // And the signed products on the same wires (net: C0..C3 += signed − unsigned).
        t.dpbssd::<0, 4, 6>();
        t.dpbssd::<1, 5, 6>();
        t.dpbssd::<2, 4, 6>();
        t.dpbssd::<3, 5, 6>();
        let mut c = vec![[0i32; 256]; 4];
        t.store_i32::<0>(&mut c[0]);
        t.store_i32::<1>(&mut c[1]);
        t.store_i32::<2>(&mut c[2]);
        t.store_i32::<3>(&mut c[3]);
        c
    }

    #[test]
    fn emulated_dpbusd_matches_the_definition() {
        let (a, b) = patterns();
        let (mut a2, mut b2) = (a, b);
        a2.reverse();
        b2.reverse();
        let mut t = EmulatedTiles::new();
        t.configure(&TileConfig::FULL);
        let c = run(&mut t, &a, &b);
        let sum =
            |x: &[i32], y: &[i32]| -> Vec<i32> { x.iter().zip(y).map(|(x, y)| x + y).collect() };
        let (sa, sa2) = (reference_signed(&a, &b), reference_signed(&a2, &b));
        assert_eq!(c[0].to_vec(), sum(&reference(&a, &b, 7), &sa));
        let c1 = sum(&reference(&a, &b2, 7), &reference(&a2, &b, 0));
        assert_eq!(c[1].to_vec(), sum(&c1, &sa2));
        let c2 = sum(&reference(&a2, &b, 7), &reference(&a, &b, 0));
        assert_eq!(c[2].to_vec(), sum(&c2, &sa));
        let twice: Vec<i32> = reference(&a2, &b2, 0).iter().map(|v| 7 + 2 * v).collect();
        assert_eq!(
            c[3].to_vec(),
            sum(&sum(&twice, &reference(&a2, &b, 0)), &sa2)
        );
        // Signed and unsigned readings differ for these bytes (some are ≥ 128).
        assert_ne!(sa, reference(&a, &b, 0));
        // A smaller configuration: rows outside it load as zero.
        let mut cfg = TileConfig::FULL;
        cfg.rows[4] = 3;
        t.configure(&cfg);
        t.load::<4>(&a, 64);
        t.load::<6>(&b, 64);
        t.dpbusd::<0, 4, 6>();
        let mut c = [0i32; 256];
        t.store_i32::<0>(&mut c);
        let mut a3 = [0u8; TILE_BYTES];
        a3[..3 * 64].copy_from_slice(&a[..3 * 64]);
        assert_eq!(c.to_vec(), reference(&a3, &b, 0));
    }

    #[test]
    fn hardware_tiles_match_the_emulation_where_the_cpu_has_amx() {
        #[cfg(target_arch = "x86_64")]
        {
            let Some(mut hw) = AmxTiles::new(&TileConfig::FULL) else {
                eprintln!("AMX-INT8 not available here: hardware tiles not exercised");
                return;
            };
            eprintln!("AMX-INT8 available: hardware tiles compared with the emulation");
            let (a, b) = patterns();
            let mut emu = EmulatedTiles::new();
            assert_eq!(run(&mut hw, &a, &b), run(&mut emu, &a, &b));
        }
    }
}
