//! Plain autoregressive decoding: prefill the prompt in one forward, then one token per forward.
//!
//! The loop runs over any [`BlockForward`] with blocks of one position (block-causal attention
//! with block size 1 is causal attention), so the same code decodes alone ([`generate_ar`]) or
//! as one of many sequences sharing forward passes (the scheduler).

use std::time::Instant;

use model::{Logits, Model};
use tokenizer::{DecodeStream, Tokenizer};

use crate::dlm::{BlockForward, ModelSequence};

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
    let capacity = params.capacity(prompt.len(), model.config.context_length)?;
    let mut seq = ModelSequence::new(model, capacity);
    decode_ar(&mut seq, tok, prompt, params, on_text)
}

impl GenerateParams {
    /// Cache positions a prompt of `prompt_len` tokens needs under a context of `context`
    /// (the prompt plus `max_tokens`, at most the context); an error when the prompt leaves no
    /// room.
    pub fn capacity(&self, prompt_len: usize, context: usize) -> Result<usize, EngineError> {
        crate::check_prompt_fits(prompt_len, context)?;
        Ok((prompt_len + self.max_tokens).min(context))
    }
}

/// The autoregressive loop over any [`BlockForward`] (its capacity bounds the output).
pub fn decode_ar(
    fwd: &mut dyn BlockForward,
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
    let capacity = fwd.capacity();
    crate::check_prompt_fits(prompt.len(), capacity)?;
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
    let mut logits = fwd.forward(prompt, 1, true, Logits::Last)?;
    crate::check_logits(&logits, 1)?;
    stats.forward_passes += 1;
    stats.prefill_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut history: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut finish = FinishReason::Length;
    while tokens.len() < params.max_tokens {
        let choice = sampler.sample(&mut logits, &history, &suppress)?;
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
        if tokens.len() == params.max_tokens || fwd.cache_len() >= capacity {
            break;
        }
        logits = fwd.forward(&[choice.token], 1, true, Logits::Last)?;
        crate::check_logits(&logits, 1)?;
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
