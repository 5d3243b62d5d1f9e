//! Helpers shared by the model tests.
#![allow(dead_code)]

use model::{Attention, Batch, KvCache, Logits, Model};

/// Greedy decoding through the KV cache: prefill `prompt`, then up to `n` tokens, each the argmax
/// (lowest id on ties) of the previous forward's last logits and fed back with a one-token forward.
/// Stops before a `stop` token.
pub fn greedy(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[u32],
    n: usize,
    stop: Option<u32>,
) -> Vec<u32> {
    let forward = |tokens: &[u32], cache: &mut KvCache| {
        let batch = Batch {
            tokens,
            attention: Attention::Causal,
            commit: true,
            logits: Logits::Last,
        };
        model.forward(cache, &batch).unwrap()
    };
    let mut logits = forward(prompt, cache);
    let mut out = Vec::new();
    for _ in 0..n {
        let next = logits
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
            )
            .0 as u32;
        if Some(next) == stop {
            break;
        }
        out.push(next);
        logits = forward(&[next], cache);
    }
    out
}
