//! Plain autoregressive decoding: prefill the prompt in one forward, then one token per forward.

use std::time::Instant;

use model::{Attention, Batch, Logits, Model};
use tokenizer::{DecodeStream, Tokenizer};

use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopText;
use crate::{EngineError, FinishReason, Generation, GenerationStats};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Hard cap on returned tokens.
    pub max_tokens: usize,
    /// Stop strings (not included in the output).
    pub stop: Vec<String>,
    /// Sampling settings.
    pub sampling: SamplingParams,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            stop: Vec::new(),
            sampling: SamplingParams::default(),
        }
    }
}

/// Generates a continuation of `prompt` one token per forward, calling `on_text` with every piece
/// of text as soon as it is final. Stops at any end-of-generation token of the model (not
/// returned), at a stop string, or after `max_tokens` tokens.
pub fn generate_ar(
    model: &Model,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, EngineError> {
    params.sampling.validate().map_err(EngineError::Params)?;
    if prompt.is_empty() {
        return Err(EngineError::Params(
            "the prompt is empty: it needs at least one token (add BOS or some text)".into(),
        ));
    }
    let ctx = model.config.context_length;
    if prompt.len() >= ctx {
        return Err(EngineError::PromptTooLong {
            prompt: prompt.len(),
            context: ctx,
        });
    }
    let capacity = (prompt.len() + params.max_tokens).min(ctx);
    let mut cache = model.new_cache(capacity);
    let mut sampler = Sampler::new(params.sampling.clone());
    let suppress: Vec<u32> = tok.mask_id().into_iter().collect();
    let eog = tok.eog_ids();
    let mut stream = DecodeStream::with_context(tok, true, prompt)?;
    let mut stop = StopText::new(&params.stop);
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };

    let t0 = Instant::now();
    let mut logits = model.forward(
        &mut cache,
        &Batch {
            tokens: prompt,
            attention: Attention::Causal,
            commit: true,
            logits: Logits::Last,
        },
    )?;
    stats.forward_passes += 1;
    stats.prefill_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut history: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut finish = FinishReason::Length;
    while tokens.len() < params.max_tokens {
        let choice = sampler.sample(&mut logits, &history, &suppress);
        if eog.contains(&choice.token) {
            finish = FinishReason::Stop;
            break;
        }
        tokens.push(choice.token);
        history.push(choice.token);
        let piece = stream.push(choice.token)?;
        let shown = stop.push(&piece);
        if !shown.is_empty() {
            on_text(&shown);
        }
        if stop.stopped() {
            finish = FinishReason::Stop;
            break;
        }
        if tokens.len() == params.max_tokens || cache.len() >= capacity {
            break;
        }
        logits = model.forward(
            &mut cache,
            &Batch {
                tokens: &[choice.token],
                attention: Attention::Causal,
                commit: true,
                logits: Logits::Last,
            },
        )?;
        stats.forward_passes += 1;
    }
    if !stop.stopped() {
        let rest = stream.finish()?;
        let mut shown = stop.push(&rest);
        shown.push_str(&stop.finish());
        if !shown.is_empty() {
            on_text(&shown);
        }
    }
    stats.decode_seconds = t1.elapsed().as_secs_f64();
    stats.generated_tokens = tokens.len();
    Ok(Generation {
        prompt: prompt.to_vec(),
        tokens,
        text: stop.text().to_string(),
        finish_reason: finish,
        stats,
    })
}
