//! Times one [`quant::kernels::attend`] shape on one thread at the selected SIMD level
//! (`DLM_SIMD`): `attn_profile QUERIES KEYS [HEAD_DIM=128] [ITERS=200]`, every query seeing every
//! key (a block-diffusion block against its prefix: QUERIES = rows × group). Prints the best of
//! 5 rounds per call and the rate in GFLOP/s (2 · 2 · QUERIES · KEYS · HEAD_DIM per call: the
//! score and mix products).
use quant::kernels::{attend, simd_level, AttnBuf};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: attn_profile QUERIES KEYS [HEAD_DIM] [ITERS]");
        std::process::exit(2);
    }
    let num = |i: usize, d: usize| a.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (m, n, d, iters) = (num(1, 128), num(2, 480), num(3, 128), num(4, 200));
    let data = |len: usize, k: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + k) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let q = data(m * d, 1);
    let kv: Vec<Vec<f32>> = (0..2 * n).map(|p| data(d, p)).collect();
    let keys: Vec<&[f32]> = kv[..n].iter().map(|k| k.as_slice()).collect();
    let vals: Vec<&[f32]> = kv[n..].iter().map(|v| v.as_slice()).collect();
    let limits = vec![n; m];
    let mut out = vec![0.0; m * d];
    let mut buf = AttnBuf::default();
    let scale = 1.0 / (d as f32).sqrt();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for _ in 0..iters {
            attend(&q, &limits, &keys, &vals, scale, &mut buf, &mut out);
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    let flops = 4.0 * (m * n * d) as f64;
    println!(
        "{} attend: {m} queries x {n} keys x {d}: {:.1} us per call, {:.1} GFLOP/s",
        simd_level(),
        best * 1e6,
        flops / best / 1e9
    );
}
