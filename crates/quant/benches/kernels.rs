//! Matmul kernel benchmarks at BitNet b1.58 2B-4T shapes.
//!
//! `cargo bench -p quant --bench kernels` (filter with a name prefix, e.g. `-- i2_s/`).
//!
//! Every benchmark cycles through enough copies of the weight matrix (≥ 160 MiB in all, beyond
//! the last-level cache; `DLM_BENCH_COLD_MIB` changes it) that each call streams its weights
//! from DRAM, as a forward pass over a whole model does; the `hot/` group repeats one copy to show the cache-resident compute
//! ceiling. Throughput is reported as weight bytes per second; GOPS = 2·rows·cols·tokens / time
//! (see docs/benchmarks.md). Threads: the global rayon pool (all cores) unless the name ends in
//! `/1thr`. Set `DLM_SIMD=avx2` (etc.) to force a lower level.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant::kernels::{matmul, simd_level, QMatrix};
use quant::GgmlType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (rows, cols, name): attention/square, ffn up+gate, ffn down.
const SHAPES: [(usize, usize, &str); 3] = [
    (2560, 2560, "2560x2560"),
    (6912, 2560, "6912x2560"),
    (2560, 6912, "2560x6912"),
];
const TOKENS: [usize; 4] = [1, 8, 32, 128];

/// Bytes of weight copies a "cold" benchmark cycles through: 160 MiB, or `DLM_BENCH_COLD_MIB`
/// (set it above the last-level cache of machines with a bigger one).
fn cold_bytes() -> usize {
    std::env::var("DLM_BENCH_COLD_MIB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(160)
        << 20
}

/// Copies of one encoded matrix, enough to overflow the caches.
struct Weights {
    copies: Vec<Vec<u8>>,
    rows: usize,
    cols: usize,
    ty: GgmlType,
}

impl Weights {
    fn new(ty: GgmlType, rows: usize, cols: usize, cold: bool) -> Weights {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ternary = matches!(ty, GgmlType::I2_S | GgmlType::TQ1_0 | GgmlType::TQ2_0);
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                if ternary {
                    [-0.5f32, 0.0, 0.5][rng.random_range(0..3)]
                } else {
                    rng.random_range(-1.0f32..1.0)
                }
            })
            .collect();
        let bytes = quant::quantize(ty, &v, cols).unwrap();
        let n = if cold {
            cold_bytes().div_ceil(bytes.len()).max(2)
        } else {
            1
        };
        Weights {
            copies: vec![bytes; n],
            rows,
            cols,
            ty,
        }
    }

    fn matrix(&self, i: usize) -> QMatrix<'_> {
        let data = &self.copies[i % self.copies.len()];
        QMatrix::new(self.ty, data, self.rows, self.cols).unwrap()
    }

    fn nbytes(&self) -> usize {
        self.copies[0].len()
    }
}

fn acts(n_tokens: usize, cols: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    (0..n_tokens * cols)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

fn bench_matrix(
    c: &mut Criterion,
    group: &str,
    w: &Weights,
    shape: &str,
    tokens: &[usize],
    pool: Option<&rayon::ThreadPool>,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .throughput(Throughput::Bytes(w.nbytes() as u64));
    for &n in tokens {
        let x = acts(n, w.cols);
        let mut out = vec![0.0f32; n * w.rows];
        let id = match pool {
            Some(_) => BenchmarkId::new(shape, format!("t{n}/1thr")),
            None => BenchmarkId::new(shape, format!("t{n}")),
        };
        let mut i = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                let m = w.matrix(i);
                i += 1;
                match pool {
                    Some(p) => p.install(|| matmul(&m, black_box(&x), n, &mut out)),
                    None => matmul(&m, black_box(&x), n, &mut out),
                }
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn ternary(c: &mut Criterion) {
    eprintln!(
        "SIMD level: {}, rayon threads: {}",
        simd_level(),
        rayon::current_num_threads()
    );
    for (ty, name) in [
        (GgmlType::I2_S, "i2_s"),
        (GgmlType::TQ2_0, "tq2_0"),
        (GgmlType::TQ1_0, "tq1_0"),
    ] {
        for (rows, cols, shape) in SHAPES {
            let w = Weights::new(ty, rows, cols, true);
            bench_matrix(c, name, &w, shape, &TOKENS, None);
        }
    }
}

fn comparison(c: &mut Criterion) {
    let (rows, cols, shape) = SHAPES[0];
    for (ty, name) in [
        (GgmlType::F16, "f16"),
        (GgmlType::Q8_0, "q8_0"),
        (GgmlType::Q6_K, "q6_k"),
    ] {
        let w = Weights::new(ty, rows, cols, true);
        bench_matrix(c, name, &w, shape, &TOKENS, None);
    }
}

fn single_thread_and_hot(c: &mut Criterion) {
    let (rows, cols, shape) = SHAPES[1];
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (ty, name) in [(GgmlType::I2_S, "i2_s"), (GgmlType::TQ2_0, "tq2_0")] {
        let w = Weights::new(ty, rows, cols, true);
        bench_matrix(c, name, &w, shape, &[1, 32], Some(&one));
        let hot = Weights::new(ty, rows, cols, false);
        bench_matrix(c, &format!("hot/{name}"), &hot, shape, &[1, 32], None);
    }
}

criterion_group!(benches, ternary, comparison, single_thread_and_hot);
criterion_main!(benches);
