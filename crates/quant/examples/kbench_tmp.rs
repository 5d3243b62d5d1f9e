use quant::kernels::*;
use quant::GgmlType;
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(&args[1]).unwrap();
    let rows: usize = args[2].parse().unwrap();
    let cols: usize = args[3].parse().unwrap();
    let n: usize = args[4].parse().unwrap();
    let level = SimdLevel::from_name(args.get(5).map(|s| s.as_str()).unwrap_or("avx2")).unwrap();
    let v: Vec<f32> = (0..rows * cols).map(|i| [(-0.5f32), 0.0, 0.5][(i * 7 + i / 3) % 3]).collect();
    let data = quant::quantize(ty, &v, cols).unwrap();
    let w = QMatrix::new(ty, &data, rows, cols).unwrap();
    let x: Vec<f32> = (0..n * cols).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
    let mut out = vec![0.0; n * rows];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut best = f64::MAX;
    for _ in 0..30 {
        let t = Instant::now();
        if std::env::var("DIRECT").is_ok() { matmul_with(level, &w, &x, n, &mut out) } else { pool.install(|| matmul_with(level, &w, &x, n, &mut out)) }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gmac = (rows * cols * n) as f64 / best / 1e9;
    println!("{} {}x{} t{} {}: {:.1} us, {:.2} GB/s weights, {:.1} GMAC/s", args[1], rows, cols, n, level.name(), best * 1e6, data.len() as f64 / best / 1e9, gmac);
}
