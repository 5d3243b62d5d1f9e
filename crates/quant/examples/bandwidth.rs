//! Memory-bandwidth probe: the roofline for the matmul benchmarks.
//!
//! `cargo run --release -p quant --example bandwidth [MiB]` streams a buffer (default 1 GiB)
//! summing its u64 words with 1, 2, … up to all cores, best of 5 passes each, and prints the
//! read bandwidth in GB/s (10^9 bytes per second): with one sequential stream per thread, and
//! with four interleaved streams per thread compiled for AVX2 where the CPU has it (more reads
//! in flight; what the kernels, which read several rows at once, can reach), in 2 MiB huge pages
//! as the engine holds its weights (`quant::HugeBytes`) and in ordinary 4 KiB pages (a mapped
//! file). The largest is the roofline.

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

/// Four streams (the quarters of `words`) read side by side, 64 bytes of each per step.
#[inline(always)]
fn sum_four_streams(words: &[u64]) -> u64 {
    let q = words.len() / 4 / 8 * 8;
    let mut acc = [0u64; 8];
    let mut i = 0;
    while i < q {
        for s in 0..4 {
            let c = &words[s * q + i..s * q + i + 8];
            for l in 0..8 {
                acc[l] = acc[l].wrapping_add(c[l]);
            }
        }
        i += 8;
    }
    let rest: u64 = words[4 * q..].iter().fold(0, |a, &b| a.wrapping_add(b));
    acc.iter().fold(rest, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_four_streams_avx2(words: &[u64]) -> u64 {
    sum_four_streams(words)
}

fn sum_wide(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { sum_four_streams_avx2(words) };
    }
    sum_four_streams(words)
}

/// Best GB/s of 5 passes of `f` over `buf` split among `threads`.
fn measure(buf: &[u64], threads: usize, f: fn(&[u64]) -> u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(buf.len().div_ceil(threads))
                .map(|part| s.spawn(move || f(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold(0u64, u64::wrapping_add)
        });
        black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (buf.len() * 8) as f64 / best / 1e9
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("size in MiB"))
        .unwrap_or(1024);
    let n = (mib << 20) / 8;
    // Distinct non-zero contents, written once so every page is really backed.
    let small: Vec<u64> = (0..n as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut huge = quant::HugeBytes::zeroed(n * 8);
    for (d, s) in huge.chunks_exact_mut(8).zip(&small) {
        d.copy_from_slice(&s.to_ne_bytes());
    }
    // SAFETY: the buffer is 2 MiB-aligned (or a heap buffer of at least 8-byte alignment:
    // checked), and every bit pattern is a valid u64.
    let huge_words: &[u64] = {
        assert!(huge.as_ptr().align_offset(8) == 0);
        unsafe { std::slice::from_raw_parts(huge.as_ptr().cast(), n) }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "buffer: {mib} MiB, cores: {cores}, huge-page mapping: {}",
        huge.is_huge_mapping()
    );
    for threads in 1..=cores {
        let one = measure(huge_words, threads, sum_words);
        let four = measure(huge_words, threads, sum_wide);
        let small_best =
            measure(&small, threads, sum_words).max(measure(&small, threads, sum_wide));
        println!(
            "{threads} thread(s): {:.1} GB/s (huge pages: one stream per thread {one:.1}, four {four:.1}; 4 KiB pages {small_best:.1})",
            one.max(four).max(small_best)
        );
    }
}
