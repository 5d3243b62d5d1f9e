//! Repeats one multi-row matmul for profiling (`perf record`): `tile_profile TYPE ROWS COLS TOKENS ITERS`.
use quant::kernels::{matmul, simd_level, QMatrix};
use quant::GgmlType;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(&a[1]).expect("type");
    let (rows, cols, n, iters): (usize, usize, usize, usize) = (
        a[2].parse().unwrap(),
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| [-0.5f32, 0.0, 0.5][(i * 7919 + i / 13) % 3])
        .collect();
    let bytes = quant::quantize(ty, &v, cols).unwrap();
    let w = QMatrix::new(ty, &bytes, rows, cols).unwrap();
    let x: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 17.0)
        .collect();
    let mut out = vec![0.0; n * rows];
    let t = std::time::Instant::now();
    for _ in 0..iters {
        matmul(&w, &x, n, &mut out);
    }
    let dt = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{} {ty} {rows}x{cols} t{n}: {:.1} µs per call (hot, same matrix)",
        simd_level(),
        dt * 1e6
    );
}
