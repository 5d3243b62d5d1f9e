//! Property tests of the matmul kernels (seeded random loops).
//!
//! 1. Every SIMD level this CPU has against the scalar reference, on random bytes (every code,
//!    including never-written ones) and awkward shapes: bit-identical for the integer kernels,
//!    within the summation-order bound for the float kernels.
//! 2. The scalar reference against a plain f64 matmul of the dequantized weights
//!    ([`quant::dequantize`]): (a) with the activations quantized by an independent transcription
//!    of each type's rule, within the float rounding the kernel's epilogue implies; (b) with the
//!    raw f32 activations, within the error the activation quantization implies.
//! 3. Dispatch: `matmul` equals `matmul_with(selected_level())`, and thread counts don't change
//!    the result.

use half::f16;
use quant::kernels::{
    amx_available, available_levels, matmul, matmul_tiles, matmul_with, quantize_row_i8,
    selected_level, QMatrix, SimdLevel, TileBackend, TILE_TYPES,
};
use quant::GgmlType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const U: f64 = f32::EPSILON as f64 / 2.0; // unit roundoff of f32

const INTEGER_TYPES: [GgmlType; 6] = [
    GgmlType::I2_S,
    GgmlType::Q6_K,
    GgmlType::TQ2_0,
    GgmlType::TQ1_0,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
];
const FLOAT_TYPES: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16];

/// The smallest row length the type's kernel accepts.
fn min_cols(ty: GgmlType) -> usize {
    match ty {
        GgmlType::I2_S => 128,
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::Q6_K => 256,
        GgmlType::Q8_0 | GgmlType::Q4_0 => 32,
        _ => 1,
    }
}

/// Row lengths to try: the minimum, a few multiples, more than the AVX2 I2_S kernel's 8-chunk
/// i16 group (1152), and rows longer than one L1 column segment of an 8-token tile (2048
/// columns), so the kernels' split of long rows is exercised.
fn col_cases(ty: GgmlType) -> Vec<usize> {
    match ty {
        GgmlType::I2_S => vec![128, 384, 1152, 2688],
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::Q6_K => vec![256, 768, 2304],
        GgmlType::Q8_0 | GgmlType::Q4_0 => vec![32, 96, 320, 2080],
        _ => vec![1, 7, 16, 37, 200],
    }
}

fn finite_f16_bytes(rng: &mut ChaCha8Rng) -> [u8; 2] {
    let mag = 10f32.powf(rng.random_range(-3.0..1.0));
    let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    f16::from_f32(sign * mag).to_le_bytes()
}

/// Random *bytes* of a `rows × cols` tensor: every code pattern the layout admits, with finite
/// scales.
fn random_bytes(ty: GgmlType, rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::I2_S => {
            let mut b: Vec<u8> = (0..n / 4).map(|_| rng.random()).collect();
            b.extend_from_slice(&rng.random_range(0.01f32..3.0).to_le_bytes());
            b.extend_from_slice(&[0; 28]);
            b
        }
        GgmlType::TQ2_0 | GgmlType::TQ1_0 | GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q6_K => {
            let (bsize, bbytes, d_at) = match ty {
                GgmlType::TQ2_0 => (256, 66, 64),
                GgmlType::Q6_K => (256, 210, 208),
                GgmlType::TQ1_0 => (256, 54, 52),
                GgmlType::Q8_0 => (32, 34, 0),
                _ => (32, 18, 0),
            };
            let mut b = Vec::with_capacity(n / bsize * bbytes);
            for _ in 0..n / bsize {
                let mut blk: Vec<u8> = (0..bbytes).map(|_| rng.random()).collect();
                blk[d_at..d_at + 2].copy_from_slice(&finite_f16_bytes(rng));
                b.extend_from_slice(&blk);
            }
            b
        }
        _ => {
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            quant::quantize(ty, &v, cols).unwrap()
        }
    }
}

/// Valid encoded weights (what a converter writes): ternary data for the ternary types.
fn encoded_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = rows * cols;
    let ternary = matches!(ty, GgmlType::I2_S | GgmlType::TQ1_0 | GgmlType::TQ2_0);
    let m = rng.random_range(0.05f32..2.0);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if ternary {
                [-m, 0.0, m][rng.random_range(0..3)]
            } else {
                rng.random_range(-1.0f32..1.0) * m
            }
        })
        .collect();
    quant::quantize(ty, &v, cols).unwrap()
}

/// Activations with varied row magnitudes, outliers, zero rows and zero blocks, exact ties.
fn random_acts(n_tokens: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut x = Vec::with_capacity(n_tokens * cols);
    for t in 0..n_tokens {
        let scale = 10f32.powf(rng.random_range(-2.0..2.0));
        for c in 0..cols {
            let v = match (t % 5, c % 97) {
                (4, _) => 0.0,                                         // an all-zero row
                (_, 13) => scale * 25.0 * rng.random_range(-1.0..1.0), // outliers
                (3, _) if c < 256 => 0.0,                              // a zero block
                _ => scale * rng.random_range(-1.0f32..1.0),
            };
            x.push(v);
        }
        if t % 7 == 6 {
            // Halves with amax 127: I8 gets s = 1 and Q8_K iscale = -1, so x·s lands on exact
            // ties (x.5) that must round half to even.
            let row = &mut x[t * cols..];
            for v in row.iter_mut() {
                *v = rng.random_range(-254i32..=254) as f32 / 2.0;
            }
            row[0] = 127.0;
        }
    }
    x
}

fn run(level: SimdLevel, w: &QMatrix, x: &[f32], n_tokens: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n_tokens * w.rows];
    matmul_with(level, w, x, n_tokens, &mut out);
    out
}

fn dequant(w: &QMatrix) -> Vec<f32> {
    quant::dequantize(w.ty, w.data, w.cols, w.rows * w.cols).unwrap()
}

#[test]
fn this_cpu_exercises_its_simd_levels() {
    let levels = available_levels();
    eprintln!(
        "available SIMD levels: {:?}; selected: {}",
        levels,
        selected_level().name()
    );
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            assert!(levels.contains(&SimdLevel::Avx2));
        }
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
            assert!(levels.contains(&SimdLevel::Avx512Vnni));
        }
        assert_eq!(levels.contains(&SimdLevel::Amx), amx_available());
    }
    assert_eq!(selected_level(), *levels.last().unwrap());
}

/// Every SIMD level equals the scalar reference bit for bit on the integer kernels.
#[test]
fn simd_integer_kernels_equal_the_scalar_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let simd: Vec<SimdLevel> = available_levels()
        .into_iter()
        .filter(|&l| l != SimdLevel::Scalar)
        .collect();
    let mut compared = 0;
    for ty in INTEGER_TYPES {
        for rows in [1, 3, 17, 64] {
            for &cols in &col_cases(ty) {
                if rows == 64 && cols > 512 {
                    continue; // keep the scalar reference fast
                }
                for n_tokens in [1, 2, 7, 13, 32] {
                    let data = random_bytes(ty, rows, cols, &mut rng);
                    let w = QMatrix::new(ty, &data, rows, cols).unwrap();
                    let x = random_acts(n_tokens, cols, &mut rng);
                    let want = run(SimdLevel::Scalar, &w, &x, n_tokens);
                    assert!(
                        want.iter().all(|v| v.is_finite()),
                        "{ty}: non-finite reference"
                    );
                    for &level in &simd {
                        let got = run(level, &w, &x, n_tokens);
                        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                e.to_bits(),
                                "{ty} {level:?} rows {rows} cols {cols} tokens {n_tokens}: \
                                 out[{i}] = {g}, scalar {e}"
                            );
                        }
                        compared += 1;
                    }
                }
            }
        }
    }
    eprintln!("compared {compared} integer-kernel runs against the scalar reference");
}

/// The AMX tile kernels (ternary types) equal the scalar reference bit for bit: the emulated
/// tiles on every machine, the real instructions where the CPU has AMX-INT8. Shapes cover
/// partial row groups (rows not a multiple of 32), partial token tiles and odd tile pairs,
/// rows of several 1024-column segments with a short last one, and every code pattern.
#[test]
fn tile_kernels_equal_the_scalar_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut backends = vec![TileBackend::Emulated];
    if amx_available() {
        backends.push(TileBackend::Hardware);
    }
    eprintln!("tile backends exercised: {backends:?}");
    let mut compared = 0;
    for &ty in TILE_TYPES {
        let cols_cases: &[usize] = match ty {
            GgmlType::I2_S => &[128, 384, 2688],
            // Q8_0: also rows ending in half a K step (32 columns).
            GgmlType::Q8_0 => &[96, 1280, 2336],
            _ => &[256, 1280, 2304],
        };
        for rows in [1, 17, 33, 70] {
            for &cols in cols_cases {
                for n_tokens in [1, 4, 16, 17, 33, 40] {
                    if rows * cols * n_tokens > 70 * 1280 * 17 {
                        continue; // keep the emulation and the scalar reference fast
                    }
                    let data = random_bytes(ty, rows, cols, &mut rng);
                    let w = QMatrix::new(ty, &data, rows, cols).unwrap();
                    let x = random_acts(n_tokens, cols, &mut rng);
                    let want = run(SimdLevel::Scalar, &w, &x, n_tokens);
                    for &backend in &backends {
                        let mut got = vec![f32::NAN; n_tokens * rows];
                        matmul_tiles(backend, &w, &x, n_tokens, &mut got);
                        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                e.to_bits(),
                                "{ty} {backend:?} rows {rows} cols {cols} tokens {n_tokens}: \
                                 out[{i}] = {g}, scalar {e}"
                            );
                        }
                        compared += 1;
                    }
                }
            }
        }
    }
    eprintln!("compared {compared} tile-kernel runs against the scalar reference");
}

/// Float kernels sum in another order: both results are within `γ_n·Σ|w·x|` of the exact dot,
/// so they differ by at most twice that.
#[test]
fn simd_float_kernels_agree_with_the_scalar_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for ty in FLOAT_TYPES {
        for rows in [1, 3, 17, 64] {
            for &cols in &col_cases(ty) {
                for n_tokens in [1, 2, 7, 32] {
                    let data = random_bytes(ty, rows, cols, &mut rng);
                    let w = QMatrix::new(ty, &data, rows, cols).unwrap();
                    let x = random_acts(n_tokens, cols, &mut rng);
                    let wf = dequant(&w);
                    let want = run(SimdLevel::Scalar, &w, &x, n_tokens);
                    let gamma = cols as f64 * U / (1.0 - cols as f64 * U);
                    for level in available_levels() {
                        let got = run(level, &w, &x, n_tokens);
                        for t in 0..n_tokens {
                            for r in 0..rows {
                                let abs: f64 = (0..cols)
                                    .map(|c| {
                                        (wf[r * cols + c] as f64 * x[t * cols + c] as f64).abs()
                                    })
                                    .sum();
                                let (g, e) = (got[t * rows + r], want[t * rows + r]);
                                assert!(
                                    ((g - e) as f64).abs() <= 2.0 * gamma * abs,
                                    "{ty} {level:?} rows {rows} cols {cols} tokens {n_tokens} \
                                     (t {t}, r {r}): {g} vs scalar {e}, bound {}",
                                    2.0 * gamma * abs
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Independent transcriptions of the activation rules (from bitnet.cpp / llama.cpp), giving the
// dequantized activation x̃ each kernel effectively multiplies with, and the error bound of x̃.

/// I2_S (bitnet.cpp quantize_row_i8_s): x̃ = q / s; |x̃ − x| ≤ (0.5 + 128u) / s.
fn act_i8(x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut q = vec![0i8; x.len()];
    let (s, sum) = quantize_row_i8(x, &mut q);
    let amax = x.iter().fold(1e-5f64, |m, &v| m.max((v as f64).abs()));
    assert_eq!(s, (127.0 / amax) as f32);
    for (&q, &v) in q.iter().zip(x) {
        assert_eq!(q as f32, (v * s).round_ties_even().clamp(-128.0, 127.0));
    }
    assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
    let xq = q.iter().map(|&q| q as f64 / s as f64).collect();
    let err = vec![(0.5 + 128.0 * U) / s as f64; x.len()];
    (xq, err)
}

/// TQ (llama.cpp quantize_row_q8_K_ref): per 256: signed max, iscale = −127/max,
/// q = min(127, round_half_even(iscale·x)), d = 1/iscale; x̃ = q·d; |x̃ − x| ≤ |d|(0.5 + 300u).
fn act_q8_k(x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut xq = Vec::new();
    let mut err = Vec::new();
    for blk in x.chunks(256) {
        let mut max = 0.0f32;
        for &v in blk {
            if v.abs() > max.abs() {
                max = v;
            }
        }
        if max == 0.0 {
            xq.extend(std::iter::repeat_n(0.0, 256));
            err.extend(std::iter::repeat_n(0.0, 256));
            continue;
        }
        let iscale = -127.0f32 / max;
        let d = 1.0 / iscale;
        for &v in blk {
            let q = (iscale * v).round_ties_even().min(127.0);
            xq.push(q as f64 * d as f64);
            err.push(d.abs() as f64 * (0.5 + 300.0 * U));
        }
    }
    (xq, err)
}

/// Q8_0 (llama.cpp quantize_row_q8_0_ref): per 32: d = amax/127, q = roundf(x·(1/d)),
/// x̃ = q·f16(d); |x̃ − x| ≤ d(0.5 + 300u) + 127·|f16(d) − d|.
fn act_q8_0(x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut xq = Vec::new();
    let mut err = Vec::new();
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = f16::from_f32(d).to_f32();
        for &v in blk {
            let q = (v * id).round();
            xq.push(q as f64 * d16 as f64);
            err.push(d as f64 * (0.5 + 300.0 * U) + 127.0 * (d16 as f64 - d as f64).abs());
        }
    }
    (xq, err)
}

/// An activation rule: the dequantized activations x̃ and the per-element bound on |x̃ − x|.
type ActRule = fn(&[f32]) -> (Vec<f64>, Vec<f64>);

fn act_rule(ty: GgmlType) -> ActRule {
    match ty {
        GgmlType::I2_S => act_i8,
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::Q6_K => act_q8_k,
        _ => act_q8_0,
    }
}

/// The scalar reference against `Σ w·x̃` in f64 (tight) and `Σ w·x` (within the activation
/// quantization error). The tight bound: the integer dots are exact; the epilogue rounds
/// `d_x·d_w`, the product, and sums `nb` blocks in f32 (I2_S: a division and a product, `nb` = 1,
/// plus the rounding of `q/s` in our x̃), so `|y − Σ w·x̃| ≤ (nb + 4)·u·Σ|w·x̃|`.
#[test]
fn scalar_reference_matches_dequantized_f64_matmul() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for ty in INTEGER_TYPES {
        for rows in [1, 3, 17] {
            for &cols in &col_cases(ty) {
                let n_tokens = 7;
                let data = encoded_weights(ty, rows, cols, &mut rng);
                let w = QMatrix::new(ty, &data, rows, cols).unwrap();
                let wf = dequant(&w);
                let x = random_acts(n_tokens, cols, &mut rng);
                let got = run(SimdLevel::Scalar, &w, &x, n_tokens);
                let nb = match ty {
                    GgmlType::I2_S => 1,
                    _ => cols / min_cols(ty),
                };
                for t in 0..n_tokens {
                    let xt = &x[t * cols..(t + 1) * cols];
                    let (xq, err) = act_rule(ty)(xt);
                    for r in 0..rows {
                        let wr = &wf[r * cols..(r + 1) * cols];
                        let exact_q: f64 = wr.iter().zip(&xq).map(|(&w, &x)| w as f64 * x).sum();
                        let abs_q: f64 = wr
                            .iter()
                            .zip(&xq)
                            .map(|(&w, &x)| (w as f64 * x).abs())
                            .sum();
                        let y = got[t * rows + r] as f64;
                        let tight = (nb as f64 + 4.0) * U * abs_q + 1e-30;
                        assert!(
                            (y - exact_q).abs() <= tight,
                            "{ty} rows {rows} cols {cols} (t {t}, r {r}): {y} vs Σw·x̃ = {exact_q}, \
                             bound {tight}"
                        );
                        let exact: f64 =
                            wr.iter().zip(xt).map(|(&w, &x)| w as f64 * x as f64).sum();
                        let act_err: f64 = wr
                            .iter()
                            .zip(&err)
                            .map(|(&w, &e)| (w as f64).abs() * e)
                            .sum();
                        let loose = act_err + tight;
                        assert!(
                            (y - exact).abs() <= loose,
                            "{ty} rows {rows} cols {cols} (t {t}, r {r}): {y} vs Σw·x = {exact}, \
                             activation-quantization bound {loose}"
                        );
                    }
                }
            }
        }
    }
}

/// The float kernels against the f64 dot of the dequantized weights: within `γ_n·Σ|w·x|`.
#[test]
fn float_scalar_reference_matches_f64_matmul() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for ty in FLOAT_TYPES {
        for &cols in &col_cases(ty) {
            let (rows, n_tokens) = (5, 3);
            let data = random_bytes(ty, rows, cols, &mut rng);
            let w = QMatrix::new(ty, &data, rows, cols).unwrap();
            let wf = dequant(&w);
            let x = random_acts(n_tokens, cols, &mut rng);
            let got = run(SimdLevel::Scalar, &w, &x, n_tokens);
            let gamma = cols as f64 * U / (1.0 - cols as f64 * U);
            for t in 0..n_tokens {
                for r in 0..rows {
                    let (mut exact, mut abs) = (0.0f64, 0.0f64);
                    for c in 0..cols {
                        let p = wf[r * cols + c] as f64 * x[t * cols + c] as f64;
                        exact += p;
                        abs += p.abs();
                    }
                    let y = got[t * rows + r] as f64;
                    assert!(
                        (y - exact).abs() <= gamma * abs + 1e-30,
                        "{ty} {y} vs {exact}"
                    );
                }
            }
        }
    }
}

/// A hand-computed I2_S product: one row of 128 weights, two tokens.
#[test]
fn i2s_hand_computed() {
    // w = +0.5 at element 0, −0.5 at element 32, 0 elsewhere; scale 0.5.
    let mut wv = vec![0.0f32; 128];
    wv[0] = 0.5;
    wv[32] = -0.5;
    let data = quant::quantize(GgmlType::I2_S, &wv, 128).unwrap();
    let w = QMatrix::new(GgmlType::I2_S, &data, 1, 128).unwrap();
    // Token 0: x[0] = 127, x[32] = 63.5 → s = 1, q = 127, 64 (63.5 ties to even): y = 0.5·(127 − 64).
    // Token 1: all zero → y = 0.
    let mut x = vec![0.0f32; 256];
    x[0] = 127.0;
    x[32] = 63.5;
    for level in available_levels() {
        assert_eq!(run(level, &w, &x, 2), vec![31.5, 0.0], "{level:?}");
    }
}

/// `matmul` uses the selected level; results do not depend on the number of threads (the
/// parallel split is over output rows and each row's arithmetic is fixed).
#[test]
fn dispatch_and_thread_count_do_not_change_results() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for ty in INTEGER_TYPES.into_iter().chain(FLOAT_TYPES) {
        let (rows, cols, n_tokens) = (300, min_cols(ty).max(32) * 4, 9);
        let data = random_bytes(ty, rows, cols, &mut rng);
        let w = QMatrix::new(ty, &data, rows, cols).unwrap();
        let x = random_acts(n_tokens, cols, &mut rng);
        let want = run(selected_level(), &w, &x, n_tokens);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got = vec![0.0; rows * n_tokens];
            pool.install(|| matmul(&w, &x, n_tokens, &mut got));
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} with {threads} threads"
            );
        }
    }
}

/// `matmul_shared` (one quantization, one parallel section for several matrices) gives each
/// matrix exactly what `matmul_with` gives it alone, at every level, for decode, sub-block and
/// block row counts (the AMX tile kernels among them where the CPU has them).
#[test]
fn shared_input_matmul_equals_one_call_per_matrix() {
    use quant::kernels::matmul_shared_with;
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for ty in INTEGER_TYPES.into_iter().chain(FLOAT_TYPES) {
        let cols = col_cases(ty)[1];
        let shapes = [70usize, 17, 33];
        let data: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&r| random_bytes(ty, r, cols, &mut rng))
            .collect();
        let ws: Vec<QMatrix> = data
            .iter()
            .zip(shapes)
            .map(|(d, r)| QMatrix::new(ty, d, r, cols).unwrap())
            .collect();
        for n_tokens in [1, 8, 32] {
            let x = random_acts(n_tokens, cols, &mut rng);
            for level in available_levels() {
                let mut got: Vec<Vec<f32>> = shapes
                    .iter()
                    .map(|r| vec![f32::NAN; r * n_tokens])
                    .collect();
                let mut slices: Vec<&mut [f32]> =
                    got.iter_mut().map(|g| g.as_mut_slice()).collect();
                matmul_shared_with(level, &ws, &x, n_tokens, &mut slices);
                for (w, g) in ws.iter().zip(&got) {
                    let mut want = vec![0.0; w.rows * n_tokens];
                    matmul_with(level, w, &x, n_tokens, &mut want);
                    let same = g.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} {level:?} {} rows, {n_tokens} tokens", w.rows);
                }
            }
        }
    }
}
