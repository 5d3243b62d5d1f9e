//! Byte identity with llama.cpp's gguf-py (`gguf.quants`), an independent implementation.
//!
//! The test writes seeded random tensors (and hand-made edge cases) to a temp dir, encodes them
//! with this crate, and runs `tests/py/quant_ref.py`, which encodes the same data with gguf-py
//! and decodes our bytes with it. Then it asserts:
//! * our bytes equal gguf-py's for F32, F16, BF16, Q8_0, Q4_0, TQ1_0, TQ2_0 (and for I2_S on
//!   ternary data, against the script's numpy transcription of bitnet.cpp's `quantize_i2_s`;
//!   for Q6_K, which gguf-py only decodes, against its numpy transcription of llama.cpp's
//!   `quantize_row_q6_K_ref`);
//! * gguf-py's decoding of our bytes equals ours, bit for bit;
//! * gguf-py's decoding of random bytes equals ours for every decodable block type, including
//!   the decode-only Q4_1, Q5_0, Q5_1 and Q6_K.
//!
//! Without python3, numpy or gguf the test prints "skipped: ..." and passes, unless
//! `DLM_REQUIRE_PYTHON=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use quant::{dequantize, formats, quantize, ternarize_absmean, GgmlType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/quant_ref.py")
}

/// `Err(reason)` when the Python side cannot run here.
fn python_ready() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import numpy, gguf.quants"])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 cannot import numpy and gguf (pip install gguf numpy): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// One tensor to encode with every type in `types`.
struct Case {
    name: &'static str,
    rows: usize,
    row_len: usize,
    data: Vec<f32>,
    types: Vec<GgmlType>,
}

/// Random bytes of one type, to decode.
struct DecodeCase {
    name: String,
    ty: GgmlType,
    rows: usize,
    row_len: usize,
    bytes: Vec<u8>,
}

const GGUF_PY_TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::Q6_K,
];

fn with_i2_s(mut types: Vec<GgmlType>) -> Vec<GgmlType> {
    types.push(GgmlType::I2_S);
    types
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

/// Per 32-element group: a random magnitude (1e-4 .. 1e3), and a random kind: all zero,
/// negative only, positive only, with outliers, or plain.
fn mixed(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let scale = 10f32.powf(rng.random_range(-4.0..3.0));
        let kind = rng.random_range(0..8);
        for _ in 0..32 {
            let x = rng.random_range(-1.0f32..1.0) * scale;
            v.push(match kind {
                0 => 0.0,
                1 => -x.abs(),
                2 => x.abs(),
                3 if rng.random_bool(0.05) => x * 50.0,
                _ => x,
            });
        }
    }
    v
}

fn ternary(rng: &mut ChaCha8Rng, n: usize, m: f32) -> Vec<f32> {
    (0..n)
        .map(|_| [-m, 0.0, m][rng.random_range(0..3)])
        .collect()
}

fn cases() -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let all = GGUF_PY_TYPES.to_vec();
    let mut cases = vec![
        Case {
            name: "uniform",
            rows: 4,
            row_len: 512,
            data: uniform(&mut rng, 2048, 1.0),
            types: all.clone(),
        },
        Case {
            name: "mixed",
            rows: 3,
            row_len: 768,
            data: mixed(&mut rng, 3 * 768),
            types: all.clone(),
        },
    ];

    // Ternary {-m, 0, m} with an all-zero block and a negative-only block.
    let mut t = ternary(&mut rng, 2 * 1024, 0.0371);
    t[256..512].fill(0.0);
    for v in &mut t[1024..1280] {
        *v = -v.abs();
    }
    cases.push(Case {
        name: "ternary",
        rows: 2,
        row_len: 1024,
        data: t,
        types: with_i2_s(all.clone()),
    });

    // Real-looking weights after BitNet absmean ternarization.
    let mut w = uniform(&mut rng, 8 * 256, 0.08);
    ternarize_absmean(&mut w);
    cases.push(Case {
        name: "ternarized",
        rows: 8,
        row_len: 256,
        data: w,
        types: with_i2_s(all.clone()),
    });

    // Rounding ties. Q8_0: amax 127 * 2^k, so d = 2^k and x * id hits k.5 exactly.
    let mut q8 = Vec::new();
    for b in 0..8 {
        let d = 2f32.powi(b - 4);
        q8.push(127.0 * d * if b % 2 == 0 { 1.0 } else { -1.0 });
        for _ in 1..32 {
            q8.push((rng.random_range(-127..127) as f32 + 0.5) * d);
        }
    }
    // Near-ties with an arbitrary amax, where x * (1/d) and x / d can round differently.
    for _ in 0..8 {
        let d = rng.random_range(0.001f32..1.0) / 127.0;
        q8.push(127.0 * d);
        for _ in 1..32 {
            q8.push((rng.random_range(-127..127) as f32 + 0.5) * d);
        }
    }
    cases.push(Case {
        name: "ties_q8",
        rows: 2,
        row_len: 256,
        data: q8,
        types: all.clone(),
    });

    // Q4_0: max = -8d so id = -1/d... and half-integers of d land exactly on trunc boundaries.
    let mut q4 = Vec::new();
    for b in 0..8 {
        let d = 2f32.powi(b - 3);
        let sign = if b % 2 == 0 { 1.0 } else { -1.0 };
        q4.push(-8.0 * d * sign);
        for _ in 1..32 {
            q4.push((rng.random_range(-8..8) as f32 + 0.5) * d * sign);
        }
    }
    // Zero blocks: gguf-py takes the first max-magnitude element itself, so a block of zeros
    // starting with -0.0 gets d = -0.0 / -8 = +0.0 (llama.cpp's C would store -0.0).
    q4.extend([-0.0f32; 32]);
    q4.extend([0.0f32; 32]);
    q4.extend((0..32).map(|i| if i % 2 == 0 { -0.0f32 } else { 0.0 }));
    q4.extend([-0.0f32; 32]);
    q4.extend(uniform(&mut rng, 128, 3.0));
    cases.push(Case {
        name: "ties_q4",
        rows: 2,
        row_len: 256,
        data: q4,
        types: all.clone(),
    });

    // TQ: d = 2 makes x = ±1 an exact tie. For d = 3.8429387, (d/2) * (1/d) is 0.49999997 in
    // f32 while (d/2) / d is 0.5: only x * id, as gguf-py and llama.cpp compute it, matches.
    let mut tq = Vec::new();
    for d in [2.0f32, 3.842_938_7, 127.0, 0.849_313_26] {
        tq.push(d);
        for i in 1..256 {
            tq.push(match i % 5 {
                0 => d / 2.0,
                1 => -d / 2.0,
                2 => d,
                3 => rng.random_range(-d..d),
                _ => 0.0,
            });
        }
    }
    cases.push(Case {
        name: "ties_tq",
        rows: 2,
        row_len: 512,
        data: tq,
        types: all.clone(),
    });

    // Tiny magnitudes: f16 scales go subnormal or flush to zero.
    let tiny = (0..512)
        .map(|i| rng.random_range(-1.0f32..1.0) * 10f32.powi(-(i / 64) - 3))
        .collect();
    cases.push(Case {
        name: "tiny",
        rows: 2,
        row_len: 256,
        data: tiny,
        types: all.clone(),
    });

    // Q6_K edge cases, one super-block each: all zero; one value (positive, then negative);
    // one huge value among ordinary ones (small groups' scales round to 0); the largest group
    // negative; groups 2^k apart (scales across the 8-bit range); exact multiples of a step
    // (ties in the requantization x / (d·sc)); one NaN-free group of -0.0 among others.
    let mut q6 = vec![0.0f32; 256];
    q6.extend((0..256).map(|i| if i == 0 { 32.0 } else { 0.0 }));
    q6.extend((0..256).map(|i| if i == 17 { -3.5 } else { 0.0 }));
    let mut huge = uniform(&mut rng, 256, 1.0);
    huge[100] = 1000.0;
    q6.extend(huge);
    let mut neg = uniform(&mut rng, 256, 1.0);
    neg[200] = -7.25;
    q6.extend(neg);
    q6.extend((0..256).map(|i| rng.random_range(-1.0f32..1.0) * 2f32.powi(-(i / 16))));
    q6.extend(
        (0..256).map(|i| ((i % 64) as f32 - 32.0) * 0.125 + if i % 7 == 0 { 0.0625 } else { 0.0 }),
    );
    let mut negzero = uniform(&mut rng, 256, 2.0);
    negzero[32..48].fill(-0.0);
    q6.extend(negzero);
    cases.push(Case {
        name: "q6_k_edges",
        rows: 8,
        row_len: 256,
        data: q6,
        types: vec![GgmlType::Q6_K, GgmlType::Q8_0],
    });

    // Rows of 96: whole Q8_0/Q4_0 blocks but not whole 256-blocks.
    cases.push(Case {
        name: "rows_of_96",
        rows: 3,
        row_len: 96,
        data: mixed(&mut rng, 288),
        types: vec![
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
        ],
    });

    // Float edge cases for the plain float types.
    let edge: Vec<f32> = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0xffc0_0001), // negative quiet NaN with payload
        65504.0,
        65519.0,
        65520.0,
        -1e-8,
        6e-8,
        3.0e38,
        1e-40,                       // f32 subnormal
        f32::from_bits(0x3f80_8000), // bf16 tie, rounds down to even
        f32::from_bits(0x3f81_8000), // bf16 tie, rounds up to even
        1.0 + 2f32.powi(-11),        // f16 tie
        1.0 + 3.0 * 2f32.powi(-11),  // f16 tie
        f32::MAX,
        -f32::MIN_POSITIVE,
        f32::from_bits(0x7f7f_8000), // rounds to bf16 inf
    ]
    .to_vec();
    let n = edge.len();
    cases.push(Case {
        name: "float_edges",
        rows: 1,
        row_len: n,
        data: edge,
        types: vec![GgmlType::F32, GgmlType::F16, GgmlType::BF16],
    });
    cases
}

/// Random bytes for every decodable type, with the f16 scale fields set to finite values
/// (random bits would make many blocks NaN, which compares but tests little).
fn decode_cases() -> Vec<DecodeCase> {
    let mut rng = ChaCha8Rng::seed_from_u64(0xdec0de);
    // (type, row_len, byte offsets of f16 fields in a block)
    let specs: [(GgmlType, usize, &[usize]); 10] = [
        (GgmlType::F16, 64, &[]),
        (GgmlType::BF16, 64, &[]),
        (GgmlType::Q8_0, 64, &[0]),
        (GgmlType::Q4_0, 64, &[0]),
        (GgmlType::Q4_1, 64, &[0, 2]),
        (GgmlType::Q5_0, 64, &[0]),
        (GgmlType::Q5_1, 64, &[0, 2]),
        (GgmlType::Q6_K, 512, &[208]),
        (GgmlType::TQ1_0, 512, &[52]),
        (GgmlType::TQ2_0, 512, &[64]),
    ];
    let rows = 3;
    specs
        .iter()
        .map(|&(ty, row_len, f16_fields)| {
            let info = ty.info().unwrap();
            let n = rows * row_len;
            let mut bytes: Vec<u8> = (0..ty.nbytes(row_len as u64, n as u64).unwrap())
                .map(|_| rng.random())
                .collect();
            for block in bytes.chunks_mut(info.type_size as usize) {
                for &at in f16_fields {
                    let d = rng.random_range(-4.0f32..4.0) * 10f32.powi(rng.random_range(-3..2));
                    block[at..at + 2].copy_from_slice(&formats::f16::encode(d));
                }
            }
            DecodeCase {
                name: format!("random_{}", ty.name()),
                ty,
                rows,
                row_len,
                bytes,
            }
        })
        .collect()
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = vec![0.0; bytes.len() / 4];
    formats::f32::dequantize(&bytes, &mut out);
    out
}

/// Bitwise equality, except that any two NaNs are equal (payload conventions differ).
fn assert_same_values(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: element count");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        assert!(
            same,
            "{what}: element {i}: ours {a:e} ({:#010x}), gguf-py {b:e} ({:#010x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

fn assert_same_bytes(case: &Case, ty: GgmlType, ours: &[u8], theirs: &[u8]) {
    assert_eq!(ours.len(), theirs.len(), "{}/{ty}: byte length", case.name);
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        let info = ty.info().unwrap();
        let (block, elems) = if ty == GgmlType::I2_S {
            (i / 32, 128)
        } else {
            (i / info.type_size as usize, info.block_size as usize)
        };
        let lo = (block * elems).min(case.data.len());
        let hi = (lo + elems).min(case.data.len());
        panic!(
            "{}/{ty}: byte {i} (block {block}) differs: ours {:#04x}, gguf-py {:#04x}\n input block: {:?}",
            case.name,
            ours[i],
            theirs[i],
            &case.data[lo..hi]
        );
    }
}

#[test]
fn bytes_and_values_match_gguf_py() {
    if let Err(reason) = python_ready() {
        if std::env::var("DLM_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("DLM_REQUIRE_PYTHON=1 but {reason}");
        }
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    let cases = cases();
    let decode_cases = decode_cases();
    let mut manifest_q = Vec::new();
    for c in &cases {
        assert_eq!(c.data.len(), c.rows * c.row_len, "{}", c.name);
        std::fs::write(
            path(&format!("{}.f32", c.name)),
            formats::f32::quantize(&c.data),
        )
        .unwrap();
        for &ty in &c.types {
            let bytes = quantize(ty, &c.data, c.row_len).unwrap();
            std::fs::write(path(&format!("{}.{ty}.ours", c.name)), bytes).unwrap();
        }
        let types: Vec<String> = c.types.iter().map(|t| t.name()).collect();
        manifest_q
            .push(json!({"name": c.name, "rows": c.rows, "row_len": c.row_len, "types": types}));
    }
    let mut manifest_d = Vec::new();
    for c in &decode_cases {
        std::fs::write(path(&format!("{}.bin", c.name)), &c.bytes).unwrap();
        manifest_d.push(
            json!({"name": c.name, "rows": c.rows, "row_len": c.row_len, "type": c.ty.name()}),
        );
    }
    let manifest = json!({"quantize": manifest_q, "dequantize": manifest_d});
    std::fs::write(path("manifest.json"), manifest.to_string()).unwrap();

    let out = Command::new("python3")
        .arg(script())
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script().display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut checked = 0;
    for c in &cases {
        for &ty in &c.types {
            let ours = std::fs::read(path(&format!("{}.{ty}.ours", c.name))).unwrap();
            let theirs = std::fs::read(path(&format!("{}.{ty}.ref", c.name))).unwrap();
            assert_same_bytes(c, ty, &ours, &theirs);
            let our_values = dequantize(ty, &ours, c.row_len, c.data.len()).unwrap();
            let their_values = read_f32(&path(&format!("{}.{ty}.deq", c.name)));
            assert_same_values(
                &format!("{}/{ty} decode", c.name),
                &our_values,
                &their_values,
            );
            checked += 1;
        }
    }
    for c in &decode_cases {
        let ours = dequantize(c.ty, &c.bytes, c.row_len, c.rows * c.row_len).unwrap();
        let theirs = read_f32(&path(&format!("{}.deq", c.name)));
        assert_same_values(&c.name, &ours, &theirs);
        checked += 1;
    }
    assert_eq!(
        checked,
        cases.iter().map(|c| c.types.len()).sum::<usize>() + decode_cases.len()
    );
}
