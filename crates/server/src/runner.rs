//! The loaded model and how a request becomes a decoding sequence.
//!
//! [`Runner::plan`] turns a request's options into engine parameters (checking them against the
//! model and the context) before the request waits for a slot; [`Runner::start`] then runs the
//! autoregressive or block-diffusion loop on a blocking thread through the engine's scheduler and
//! returns a channel of [`Event`]s: final text pieces as they appear (after each diffusion step's
//! record, for traced requests), then the result.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use engine::{
    decode_ar, decode_dlm, BlockState, DecodeMode, DlmParams, EngineError, GenerateParams,
    Generation, SamplingParams, Scheduler, SchedulerConfig,
};
use model::Model;
use tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use tokio::sync::mpsc;

use crate::api::GenOptions;
use crate::config::{ModeArg, ServeArgs};
use crate::error::ApiError;
use crate::trace::{StepRecord, Tracer};

/// A model ready to serve.
pub struct Runner {
    /// The model.
    pub model: Arc<Model>,
    /// Its tokenizer.
    pub tok: Tokenizer,
    /// Its chat template.
    pub template: ChatTemplate,
    /// The scheduler that batches sequences.
    pub scheduler: Scheduler,
    /// The id clients see.
    pub alias: String,
    /// Default decoding mode.
    pub mode: DecodeMode,
    /// The mask token, when the model has one (for per-request `mode: dlm`).
    pub mask_id: Option<u32>,
    /// The model's trained block size, or 32.
    pub block_size: usize,
    /// Default sub-block size.
    pub small_block_size: usize,
    /// Default threshold.
    pub threshold: f32,
    /// Default for Fast-dLLM's sub-block cache.
    pub use_block_cache: bool,
    /// Context per request.
    pub context: usize,
    /// Temperature when a request sends none.
    pub temperature: f32,
}

/// A request's decoding plan, checked.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Autoregressive.
    Ar(GenerateParams),
    /// Block diffusion with this mask token.
    Dlm(DlmParams, u32),
}

impl Plan {
    /// `"ar"` or `"dlm"`.
    pub fn name(&self) -> &'static str {
        match self {
            Plan::Ar(_) => "ar",
            Plan::Dlm(..) => "dlm",
        }
    }
}

/// What a running generation reports.
#[derive(Debug)]
pub enum Event {
    /// Final text (never changes afterwards).
    Text(String),
    /// A block-diffusion step (traced requests only), sent before the text it makes final.
    Step(Box<StepRecord>),
    /// The generation ended.
    Done(Generation),
    /// It failed.
    Failed(EngineError),
}

/// Sets the flag when dropped: the generation stops at its next forward once its client is gone.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The startup log line that says what a block-diffusion step costs here, in decode steps.
fn speed_probe(
    model: &model::Model,
    pool: Option<&rayon::ThreadPool>,
    block_size: usize,
    small_block_size: usize,
) -> String {
    let run = || engine::block_step_cost(model, block_size, small_block_size, 64, 3);
    match pool.map_or_else(run, |p| p.install(run)) {
        Ok(c) => format!(
            "speed: a {}-row block step costs {:.1} decode steps on this CPU ({:.1} ms vs {:.1} ms \
             per 1-row step): block diffusion beats autoregression when the model commits more \
             than {:.1} tokens per forward",
            c.block_rows,
            c.decode_steps(),
            c.block_ms,
            c.decode_ms,
            c.decode_steps()
        ),
        Err(e) => format!("speed: probe failed: {e}"),
    }
}

impl Runner {
    /// Loads the model and starts the scheduler; the returned lines describe the setup for the
    /// startup log.
    pub fn load(
        args: &ServeArgs,
        pool: Option<Arc<rayon::ThreadPool>>,
    ) -> Result<(Runner, Vec<String>), String> {
        let path = hub::resolve(&args.model_path(), hub::Need::Gguf).map_err(|e| e.to_string())?;
        let (model, tok) = engine::load_model(&path).map_err(|e| e.to_string())?;
        let template = ChatTemplate::from_gguf(&model.file().metadata, &tok)
            .map_err(|e| format!("{}: chat template: {e}", path.display()))?;
        let d = &args.decode;
        let mut log = Vec::new();
        let (mode, warning) = engine::choose_mode(
            &model,
            &tok,
            d.mode.map(Into::into),
            d.mask_token_id,
            d.block_size,
        )
        .map_err(|e| e.to_string())?;
        log.extend(warning.map(|w| format!("warning: {w}")));
        // The mask token also serves requests that ask for `mode: dlm` on an `--mode ar` server.
        let mask_id = match mode {
            DecodeMode::Dlm { mask_id, .. } => Some(mask_id),
            DecodeMode::Ar => tok.mask_id(),
        };
        let block_size = match mode {
            DecodeMode::Dlm { block_size, .. } => block_size,
            DecodeMode::Ar => d
                .block_size
                .or(engine::trained_block_size(&model))
                .unwrap_or(32),
        };
        log.push(match mode {
            DecodeMode::Dlm { mask_id, .. } => format!(
                "mode: dlm (Fast-dLLM v2 block diffusion: mask token {mask_id} {:?}, block size {block_size}, sub-block {}, threshold {})",
                tok.token_text(mask_id).unwrap_or("?"),
                d.small_block_size,
                d.threshold
            ),
            DecodeMode::Ar if d.mode.is_some() => "mode: ar (--mode ar)".into(),
            DecodeMode::Ar => {
                "mode: ar (the model has no mask token, so it cannot decode by block diffusion)"
                    .into()
            }
        });
        if !block_size.is_multiple_of(d.small_block_size) {
            return Err(format!(
                "--small-block-size {} must divide the block size {block_size}",
                d.small_block_size
            ));
        }
        let context = match args.ctx_size {
            Some(c) => c.min(model.config.context_length),
            None => model.config.context_length,
        };
        let alias = args.model_alias.clone().unwrap_or_else(|| stem(&path));
        log.insert(
            0,
            format!(
                "model {} ({}, {} layers, hidden {}, vocab {}, context {context}) served as `{alias}`",
                path.display(),
                model.config.arch,
                model.config.n_layers,
                model.config.hidden,
                model.config.vocab,
            ),
        );
        log.push(format!(
            "kernels: {}, {} threads; weights {}",
            quant::kernels::kernel_summary(),
            pool.as_ref()
                .map_or_else(rayon::current_num_threads, |p| p.current_num_threads()),
            match model.file().residency() {
                Some(gguf::Residency::Mapped) =>
                    "mapped from the file (DLM_MMAP is set, or a copy would not leave 1 GiB of memory free)",
                _ => "read into huge pages (set DLM_MMAP=1 to map the file instead)",
            }
        ));
        if mask_id.is_some() && !args.no_speed_probe {
            log.push(speed_probe(
                &model,
                pool.as_deref(),
                block_size,
                d.small_block_size,
            ));
        }
        let model = Arc::new(model);
        let scheduler = Scheduler::start(model.clone(), pool, SchedulerConfig::default());
        Ok((
            Runner {
                model,
                tok,
                template,
                scheduler,
                alias,
                mode,
                mask_id,
                block_size,
                small_block_size: d.small_block_size,
                use_block_cache: d.use_block_cache,
                threshold: d.threshold,
                context,
                temperature: args.temperature,
            },
            log,
        ))
    }

    /// Renders a conversation with the model's chat template and tokenizes it.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
        let text = self.template.render(messages, true).map_err(|e| {
            ApiError::param(
                "messages",
                format!("the chat template refused the messages: {e}"),
            )
        })?;
        self.tok
            .encode(&text, false)
            .map_err(|e| ApiError::param("messages", format!("tokenizing the prompt: {e}")))
    }

    /// Tokenizes a raw completion prompt (the model's own BOS rule applies).
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        let ids = self
            .tok
            .encode(text, self.tok.add_bos_token())
            .map_err(|e| ApiError::param("prompt", format!("tokenizing the prompt: {e}")))?;
        if ids.is_empty() {
            return Err(ApiError::param(
                "prompt",
                "the prompt is empty and the model adds no BOS token",
            ));
        }
        Ok(ids)
    }

    /// Checks a request's options against the model and a prompt of `prompt_len` tokens and
    /// returns the decoding plan.
    pub fn plan(&self, o: &GenOptions, prompt_len: usize) -> Result<Plan, ApiError> {
        if let Some(m) = &o.model {
            if m != &self.alias {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    format!(
                        "The model `{m}` does not exist; this server serves `{}`",
                        self.alias
                    ),
                ));
            }
        }
        if prompt_len >= self.context {
            return Err(ApiError::param(
                "messages",
                format!(
                    "This model's maximum context length is {} tokens, but the prompt has {prompt_len} tokens",
                    self.context
                ),
            )
            .with_code("context_length_exceeded"));
        }
        let room = self.context - prompt_len;
        let max_tokens = match o.max_tokens {
            Some(n) if n > room => {
                return Err(ApiError::param(
                    "max_tokens",
                    format!(
                        "This model's maximum context length is {} tokens; the prompt has {prompt_len} tokens, so max_tokens can be at most {room}, got {n}",
                        self.context
                    ),
                )
                .with_code("context_length_exceeded"))
            }
            Some(n) => n,
            None => room,
        };
        let sampling = SamplingParams {
            temperature: o.temperature.unwrap_or(self.temperature),
            top_k: o.top_k.unwrap_or(0),
            top_p: o.top_p.unwrap_or(1.0),
            min_p: o.min_p.unwrap_or(0.0),
            repetition_penalty: o.repetition_penalty.unwrap_or(1.0),
            seed: o.seed,
        };
        let dlm = match (o.mode, &self.mode) {
            (Some(ModeArg::Ar), _) | (None, DecodeMode::Ar) => None,
            (Some(ModeArg::Dlm), _) | (None, DecodeMode::Dlm { .. }) => match self.mask_id {
                Some(mask) => Some(mask),
                None => {
                    return Err(ApiError::param(
                        "mode",
                        "this model has no mask token, so it cannot decode by block diffusion; use mode \"ar\"",
                    ))
                }
            },
        };
        let Some(mask_id) = dlm else {
            return Ok(Plan::Ar(GenerateParams {
                max_tokens,
                stop: o.stop.clone(),
                sampling,
            }));
        };
        let block_size = o.block_size.unwrap_or(match self.mode {
            DecodeMode::Dlm { block_size, .. } => block_size,
            DecodeMode::Ar => self.block_size,
        });
        let small = o
            .small_block_size
            .unwrap_or(self.small_block_size.min(block_size));
        let params = DlmParams {
            block_size,
            small_block_size: small,
            threshold: o.threshold.unwrap_or(self.threshold),
            max_tokens,
            stop: o.stop.clone(),
            sampling,
            use_block_cache: self.use_block_cache,
        };
        params.validate().map_err(|e| {
            let param = if e.starts_with("small_block_size") {
                "small_block_size"
            } else {
                "block_size"
            };
            ApiError::param(param, e)
        })?;
        Ok(Plan::Dlm(params, mask_id))
    }

    /// Runs `plan` on `prompt` on a blocking thread. `finish` sees the outcome when the
    /// sequence ends (whether or not anyone still listens) and is where the caller's slot is
    /// released. Text and the result arrive on the returned channel; with `trace`, a block-
    /// diffusion plan also sends a [`StepRecord`] per step (an autoregressive one has no steps).
    pub fn start<F>(
        self: &Arc<Self>,
        prompt: Vec<u32>,
        plan: Plan,
        trace: bool,
        cancel: Arc<AtomicBool>,
        finish: F,
    ) -> mpsc::UnboundedReceiver<Event>
    where
        F: FnOnce(&Result<Generation, EngineError>) + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut on_text = |piece: &str| {
                if tx.send(Event::Text(piece.to_string())).is_err() {
                    cancel.store(true, Ordering::SeqCst);
                }
            };
            // Untraced requests pass a callback that does nothing: no record is built.
            let mut tracer = Tracer::new(&runner.tok);
            let mut on_step = |state: &BlockState| {
                if trace
                    && tx
                        .send(Event::Step(Box::new(tracer.record(state))))
                        .is_err()
                {
                    cancel.store(true, Ordering::SeqCst);
                }
            };
            let result = match &plan {
                Plan::Ar(params) => params
                    .capacity(prompt.len(), runner.context)
                    .and_then(|cap| {
                        let mut seq = runner.scheduler.sequence(cap, cancel.clone());
                        decode_ar(&mut seq, &runner.tok, &prompt, params, &mut on_text)
                    }),
                Plan::Dlm(params, mask_id) => params
                    .capacity(prompt.len(), runner.context)
                    .and_then(|cap| {
                        let mut seq = runner.scheduler.sequence(cap, cancel.clone());
                        decode_dlm(
                            &mut seq,
                            &runner.tok,
                            &prompt,
                            *mask_id,
                            params,
                            &mut on_text,
                            &mut on_step,
                        )
                    }),
            };
            finish(&result);
            let _ = tx.send(match result {
                Ok(g) => Event::Done(g),
                Err(e) => Event::Failed(e),
            });
        });
        rx
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}
