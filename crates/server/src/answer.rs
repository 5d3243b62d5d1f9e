//! Response shaping: the OpenAI objects (completion, chunk, usage) a generation answers with.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use engine::{EngineError, FinishReason, Generation};
use serde_json::{json, Value};

use crate::error::ApiError;

/// Which API shape a generation answers in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Chat,
    Completion,
}

/// What the answer needs besides the generation.
#[derive(Clone)]
pub(crate) struct Answer {
    pub shape: Shape,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub mode: &'static str,
    pub started: Instant,
}

impl Answer {
    pub(crate) fn new(shape: Shape, model: &str, mode: &'static str) -> Answer {
        let prefix = match shape {
            Shape::Chat => "chatcmpl",
            Shape::Completion => "cmpl",
        };
        Answer {
            shape,
            id: format!("{prefix}-{:024x}", rand::random::<u128>() >> 32),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.to_string(),
            mode,
            started: Instant::now(),
        }
    }

    pub(crate) fn object(&self, chunk: bool) -> &'static str {
        match (self.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Completion, _) => "text_completion",
        }
    }

    pub(crate) fn choice(
        &self,
        index: usize,
        text: &str,
        finish: Option<FinishReason>,
        delta: bool,
    ) -> Value {
        match (self.shape, delta) {
            (Shape::Chat, false) => json!({
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish,
            }),
            (Shape::Chat, true) => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            (Shape::Completion, _) => json!({
                "index": index,
                "text": text,
                "logprobs": null,
                "finish_reason": finish,
            }),
        }
    }

    pub(crate) fn envelope(&self, choices: Vec<Value>, chunk: bool) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            // No `system_fingerprint`: OpenAI's schema types it as a string (not null) and marks
            // it deprecated, so it is left out (python/tests validate against that schema).
            "choices": choices,
        })
    }
}

pub(crate) fn usage(gens: &[&Generation]) -> Value {
    let prompt: usize = gens.iter().map(|g| g.stats.prompt_tokens).sum();
    let completion: usize = gens.iter().map(|g| g.tokens.len()).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// The non-standard `timings` object (as llama.cpp's server): what the decoder did.
pub(crate) fn timings(mode: &str, gens: &[&Generation]) -> Value {
    let forwards: usize = gens.iter().map(|g| g.stats.forward_passes).sum();
    let generated: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let prefill: f64 = gens.iter().map(|g| g.stats.prefill_seconds).sum();
    let decode: f64 = gens.iter().map(|g| g.stats.decode_seconds).sum();
    json!({
        "mode": mode,
        "forward_passes": forwards,
        "tokens_per_forward": if forwards > 0 { generated as f64 / forwards as f64 } else { 0.0 },
        "prompt_ms": prefill * 1e3,
        "predicted_ms": decode * 1e3,
    })
}

pub(crate) fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Params(m) | EngineError::Mask(m) => ApiError::invalid(None, m),
        EngineError::PromptTooLong { .. } => {
            ApiError::invalid(None, e.to_string()).with_code("context_length_exceeded")
        }
        EngineError::Model(model::ModelError::Request(m)) => ApiError::invalid(None, m),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "generation_failed",
            other.to_string(),
        ),
    }
}
