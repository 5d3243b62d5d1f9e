//! Times one matmul shape at the selected SIMD level (`DLM_SIMD`), for profiling with `perf`:
//! `tile_profile TYPE ROWS COLS TOKENS ITERS [COLD_MIB]`. With `COLD_MIB`, cycles through copies
//! of the matrix totalling that many MiB (weights streamed from DRAM, as in a forward pass);
//! otherwise repeats one copy (cache-resident). Prints the best of 5 rounds, and (Linux x86-64)
//! the process CPU time per call of that round: on a machine shared with other jobs the wall
//! time measures the share of the cores we got, the CPU time what the kernel costs when it runs
//! (weight bytes per CPU-second = the rate one core sustains, stalls on memory included).
use quant::kernels::{matmul, simd_level, QMatrix};
use quant::GgmlType;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: tile_profile TYPE ROWS COLS TOKENS ITERS [COLD_MIB]");
        std::process::exit(2);
    }
    let ty = GgmlType::from_name(&a[1]).expect("a ggml type name, e.g. I2_S");
    let num = |i: usize| a[i].parse::<usize>().expect("a number");
    let (rows, cols, n, iters) = (num(2), num(3), num(4), num(5));
    let cold_mib = if a.len() > 6 { num(6) } else { 0 };
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| [-0.5f32, 0.0, 0.5][(i * 7919 + i / 13) % 3])
        .collect();
    let bytes = quant::quantize(ty, &v, cols).unwrap();
    let copies = ((cold_mib << 20) / bytes.len()).max(1);
    // Weights in huge pages, as the engine loads them; SMALL_PAGES=1 for 4 KiB pages.
    let small = std::env::var_os("SMALL_PAGES").is_some();
    let all: Vec<Box<dyn std::ops::Deref<Target = [u8]>>> = (0..copies)
        .map(|_| -> Box<dyn std::ops::Deref<Target = [u8]>> {
            if small {
                Box::new(bytes.clone())
            } else {
                let mut h = quant::HugeBytes::zeroed(bytes.len());
                h.copy_from_slice(&bytes);
                Box::new(h)
            }
        })
        .collect();
    let mats: Vec<QMatrix> = all
        .iter()
        .map(|b| QMatrix::new(ty, b, rows, cols).unwrap())
        .collect();
    let x: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 17.0)
        .collect();
    let mut out = vec![0.0; n * rows];
    let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let (t, c) = (std::time::Instant::now(), cpu_seconds());
        for i in 0..iters {
            matmul(&mats[i % copies], &x, n, &mut out);
        }
        let wall = t.elapsed().as_secs_f64() / iters as f64;
        if wall < best {
            best = wall;
            best_cpu = (cpu_seconds() - c) / iters as f64;
        }
    }
    let gb = bytes.len() as f64 / 1e9;
    println!(
        "{} {ty} {rows}x{cols} t{n} ({}): {:.1} µs per call, {:.1} GB/s; CPU {:.1} µs per call, {:.1} GB per CPU-second",
        simd_level(),
        if copies > 1 { "cold" } else { "hot" },
        best * 1e6,
        gb / best,
        best_cpu * 1e6,
        gb / best_cpu
    );
}

/// CPU time of this process (all threads), in seconds; NaN where not measured.
fn cpu_seconds() -> f64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write into.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    f64::NAN
}
