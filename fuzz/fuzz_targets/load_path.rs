//! Fuzzes the whole load path (`engine::load_path_bytes`): GGUF reader → tokenizer from
//! metadata → chat template render → tokenize → config → weights → one autoregressive forward →
//! one Fast-dLLM v2 block-diffusion step, exactly as `dlm generate` and `dlm_server` run them.
//! Any input must give `Ok` or `Err`: a panic, an abort, a hang (libFuzzer's -timeout) or a huge
//! allocation (-malloc_limit_mb / -rss_limit_mb) is a finding. Seeds: the tiny models of each
//! architecture in corpus/load_path (written by the engine's `load_path_sweep` test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = engine::load_path_bytes(data.to_vec()) {
        // A success went through every stage: the prompt is the template's, tokenized.
        assert!(!report.prompt.is_empty());
        assert!(report.ar_tokens.len() <= 1);
    }
});
