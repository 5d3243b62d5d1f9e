use std::time::Instant;
fn main() {
    let x: Vec<f32> = (0..2560).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
    let mut q = vec![0i8; 2560];
    let t = Instant::now();
    let mut s = 0.0;
    for _ in 0..10000 { s += quant::kernels::quantize_row_i8(std::hint::black_box(&x), &mut q).0; }
    println!("quantize_row_i8 2560: {:.2} us ({s})", t.elapsed().as_secs_f64() / 10000.0 * 1e6);
}
