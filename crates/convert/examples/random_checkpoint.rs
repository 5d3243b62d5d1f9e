//! Writes a random Hugging Face checkpoint of any shape, for benchmarks at realistic sizes.
//!
//! usage: cargo run --release -p convert --example random_checkpoint -- OUT_DIR FAMILY HIDDEN FFN LAYERS HEADS KV_HEADS VOCAB [BD_SIZE]
//! FAMILY is llama, qwen2, qwen3 or bitnet; with BD_SIZE the checkpoint gets a |<MASK>| token.

use convert::tiny::{TinyFamily, TinySpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 8 {
        eprintln!("usage: random_checkpoint OUT_DIR FAMILY HIDDEN FFN LAYERS HEADS KV_HEADS VOCAB [BD_SIZE]");
        std::process::exit(2);
    }
    let family = match args[1].as_str() {
        "llama" => TinyFamily::Llama,
        "qwen2" => TinyFamily::Qwen2,
        "qwen3" => TinyFamily::Qwen3,
        "bitnet" => TinyFamily::BitNet,
        other => {
            eprintln!("unknown family {other}");
            std::process::exit(2);
        }
    };
    let num = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {} must be a number", i + 1);
            std::process::exit(2)
        })
    };
    let mut spec = TinySpec::new(family);
    spec.hidden = num(2);
    spec.ffn = num(3);
    spec.layers = num(4);
    spec.heads = num(5);
    spec.kv_heads = num(6);
    spec.vocab_size = num(7);
    spec.dlm_block_size = args.get(8).map(|_| num(8) as u32);
    if let Err(e) = spec.write(std::path::Path::new(&args[0])) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
