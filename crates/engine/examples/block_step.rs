//! Times block-diffusion steps against decode steps on a GGUF, for profiling with `perf`:
//! `block_step MODEL.gguf [BLOCK_ROWS=32] [LOGIT_ROWS=8] [REPS=20] [CONTEXT=64]` (DLM_SIMD picks
//! the kernels).
use std::path::Path;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 2 {
        eprintln!("usage: block_step MODEL.gguf [BLOCK_ROWS] [LOGIT_ROWS] [REPS]");
        std::process::exit(2);
    }
    let num = |i: usize, d: usize| a.get(i).map_or(d, |s| s.parse().expect("a number"));
    let model = model::Model::load(Path::new(&a[1])).unwrap_or_else(|e| {
        eprintln!("{}: {e}", a[1]);
        std::process::exit(1)
    });
    let (rows, logits, reps, context) = (num(2, 32), num(3, 8), num(4, 20), num(5, 64));
    // Inside the pool, as `dlm` and `dlm_server` run their forwards.
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("a thread pool");
    match pool.install(|| engine::block_step_cost(&model, rows, logits, context, reps)) {
        Ok(c) => println!(
            "{} kernels, {} threads, context {context}: decode {:.2} ms, {rows}-row block step \
             ({logits} logit rows) {:.2} ms = {:.2} decode steps",
            quant::kernels::simd_level(),
            rayon::current_num_threads(),
            c.decode_ms,
            c.block_ms,
            c.decode_steps()
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}
