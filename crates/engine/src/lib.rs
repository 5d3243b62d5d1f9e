//! Decoding on top of the model: sampling, stop rules, streamed text, the autoregressive loop,
//! the Fast-dLLM v2 block-diffusion loop ([`dlm`]), and the [`scheduler`] that lets concurrent
//! sequences share forward passes.

mod ar;
pub mod dlm;
pub mod load_path;
pub mod probe;
pub mod sampling;
pub mod scheduler;
mod setup;
pub mod stop;

use serde::Serialize;

pub use ar::{decode_ar, generate_ar, GenerateParams};
pub use dlm::{
    decode_dlm, generate_dlm, resolve_mask_id, BlockForward, BlockState, Commit, DlmParams,
    ModelSequence,
};
pub use load_path::{load_path, load_path_bytes, LoadPathReport};
pub use probe::{block_step_cost, BlockCost};
pub use sampling::{Choice, Sampler, SamplingParams};
pub use scheduler::{ScheduledSequence, Scheduler, SchedulerConfig, SchedulerStats};
pub use setup::{
    choose_mode, load_model, load_model_file, trained_block_size, DecodeMode, ModeChoice,
};

/// Why generation ended (OpenAI `finish_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// The token cap or the context was reached.
    Length,
}

/// Measurements of one generation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GenerationStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Returned tokens.
    pub generated_tokens: usize,
    /// Model forward calls, prefill included.
    pub forward_passes: usize,
    /// Wall time of the prefill.
    pub prefill_seconds: f64,
    /// Wall time of decoding after the prefill.
    pub decode_seconds: f64,
}

impl GenerationStats {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_seconds)
    }

    /// Generated tokens per second of decoding.
    pub fn decode_tokens_per_second(&self) -> f64 {
        rate(self.generated_tokens, self.decode_seconds)
    }
}

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// A finished generation.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Generated token ids (end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// Generated text (stop string excluded).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Measurements.
    pub stats: GenerationStats,
}

/// Refuses a forward's logits (`rows` rows, concatenated) if one is NaN or +∞, naming the first.
/// −∞ is allowed: it is a probability of exactly 0 (a [`BlockForward`] may use it to rule a token
/// out), and sampling handles it. One branch-free pass (it vectorizes), a small cost beside the
/// forward that made the logits.
fn check_logits(logits: &[f32], rows: usize) -> Result<(), EngineError> {
    let bad = |x: &f32| x.is_nan() | (*x == f32::INFINITY);
    if !logits.iter().fold(false, |any, x| any | bad(x)) {
        return Ok(());
    }
    let i = logits.iter().position(bad).unwrap_or(0);
    let vocab = (logits.len() / rows.max(1)).max(1);
    Err(EngineError::NonFiniteLogits {
        row: i / vocab,
        token: i % vocab,
        value: logits[i],
    })
}

/// A prompt must leave room for at least one generated position in the context.
fn check_prompt_fits(prompt_len: usize, context: usize) -> Result<(), EngineError> {
    if prompt_len >= context {
        return Err(EngineError::PromptTooLong {
            prompt: prompt_len,
            context,
        });
    }
    Ok(())
}

/// Decoding errors.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// Tokenizing or detokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// A parameter is out of range.
    #[error("{0}")]
    Params(String),
    /// The mask token is missing or unusable for block diffusion.
    #[error("{0}")]
    Mask(String),
    /// The caller cancelled the generation (a client went away).
    #[error("the generation was cancelled")]
    Cancelled,
    /// A model file could not be loaded.
    #[error("{path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An internal failure (a bug), reported instead of crashing.
    #[error("internal error: {0}")]
    Internal(String),
    /// The scheduler that runs the forward passes has stopped.
    #[error("the scheduler has stopped")]
    SchedulerStopped,
    /// A forward pass returned a NaN or +∞ logit: the weights or the activations are broken (a
    /// NaN weight, an overflow), and sampling from that row would be garbage.
    #[error(
        "the model produced a non-finite logit ({value}) for token {token} in logit row {row}; \
         its weights or activations are broken (NaN or overflow)"
    )]
    NonFiniteLogits {
        /// The logit row (0 = the first row the forward returned).
        row: usize,
        /// The token id (the column in that row).
        token: usize,
        /// The value: NaN or inf.
        value: f32,
    },
    /// Every logit of a row is NaN or −∞ (e.g. every token suppressed): no token can be chosen.
    #[error("no token can be sampled: every logit is NaN or -inf")]
    NoCandidate,
    /// The prompt does not fit the context.
    #[error("the prompt has {prompt} tokens but the model's context is {context}")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context length.
        context: usize,
    },
}
