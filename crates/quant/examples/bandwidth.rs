//! Memory-bandwidth probe: the roofline for the matmul benchmarks.
//!
//! `cargo run --release -p quant --example bandwidth [MiB]` streams a buffer (default 1 GiB)
//! summing its u64 words with 1, 2, … up to all cores, best of 5 passes each, and prints the
//! read bandwidth in GB/s (10^9 bytes per second).

use std::hint::black_box;
use std::time::Instant;

fn sum_words(words: &[u64]) -> u64 {
    // Four independent lanes so the adds are not a latency chain; vectorizes to vpaddq.
    let mut acc = [0u64; 4];
    for c in words.chunks_exact(4) {
        for i in 0..4 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("size in MiB"))
        .unwrap_or(1024);
    let n = (mib << 20) / 8;
    // Distinct non-zero contents, written once so every page is really backed.
    let buf: Vec<u64> = (0..n as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("buffer: {mib} MiB, cores: {cores}");
    for threads in 1..=cores {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let total = std::thread::scope(|s| {
                let handles: Vec<_> = buf
                    .chunks(n.div_ceil(threads))
                    .map(|part| s.spawn(move || sum_words(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .fold(0u64, u64::wrapping_add)
            });
            black_box(total);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{threads} thread(s): {:.1} GB/s",
            (n * 8) as f64 / best / 1e9
        );
    }
}
