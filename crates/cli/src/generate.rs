//! `dlm generate` and `dlm tokenize`: run a model from the command line.

use std::io::Write;
use std::path::Path;

use std::path::PathBuf;

use engine::{BlockState, DecodeMode, DlmParams, GenerateParams, SamplingParams};
use model::Model;
use serde_json::json;
use server::DecodeArgs;
use tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

/// `dlm generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateCmd {
    /// The GGUF model, a path or `hf://org/repo[:QUANT]` [default: the bundled demo model].
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Raw text prompt (only the model's own BOS rule is applied). Without -p or --chat the
    /// prompt is the BOS token alone.
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// A user message, rendered with the model's chat template.
    #[arg(long)]
    pub chat: Option<String>,
    /// A system message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum new tokens (a hard cap, also in block diffusion).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// RNG seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Mode and block-diffusion settings.
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Print the block after every diffusion step on stderr (masks as ▒).
    #[arg(long)]
    pub visual: bool,
    /// Print prompt ids, generated ids, text and statistics as JSON (one line per sample).
    #[arg(long)]
    pub json: bool,
    /// Generate this many samples from the prompt (seeds --seed, --seed + 1, …), e.g. to make
    /// self-distillation data with --json.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
}

/// Resolves `--mode`/`--mask-token-id`/`--block-size` against the model (warnings on stderr).
pub fn plan(model: &Model, tok: &Tokenizer, flags: &DecodeArgs) -> Result<DecodeMode, String> {
    flags.validate()?;
    let (mode, warning) = engine::choose_mode(
        model,
        tok,
        flags.mode.map(Into::into),
        flags.mask_token_id,
        flags.block_size,
    )
    .map_err(|e| e.to_string())?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Ok(mode)
}

/// Opens a model and its tokenizer.
pub fn load(path: &Path) -> Result<(Model, Tokenizer), String> {
    engine::load_model(path).map_err(|e| e.to_string())
}

/// Runs `dlm generate`.
pub fn generate(cmd: GenerateCmd) -> Result<(), String> {
    let path = cmd.model.clone().unwrap_or_else(server::default_model_path);
    let path = hub::resolve(&path, hub::Need::Gguf).map_err(|e| e.to_string())?;
    let (model, tok) = load(&path)?;
    let plan = plan(&model, &tok, &cmd.decode)?;
    let prompt: Vec<u32> = match (&cmd.prompt, &cmd.chat) {
        (Some(_), Some(_)) => return Err("give either -p/--prompt or --chat, not both".into()),
        (Some(text), None) => tok
            .encode(text, tok.add_bos_token())
            .map_err(|e| e.to_string())?,
        (None, Some(message)) => {
            let template =
                ChatTemplate::from_gguf(&model.file().metadata, &tok).map_err(|e| e.to_string())?;
            let mut messages = Vec::new();
            if let Some(system) = &cmd.system {
                messages.push(ChatMessage {
                    role: "system".into(),
                    content: system.clone(),
                });
            }
            messages.push(ChatMessage {
                role: "user".into(),
                content: message.clone(),
            });
            let text = template
                .render(&messages, true)
                .map_err(|e| e.to_string())?;
            tok.encode(&text, false).map_err(|e| e.to_string())?
        }
        (None, None) => match tok.bos_id() {
            Some(bos) => vec![bos],
            None => {
                return Err("this model has no BOS token: give a prompt with -p or --chat".into())
            }
        },
    };
    for i in 0..cmd.samples.max(1) {
        let seed = cmd.seed.map(|s| s.wrapping_add(i as u64));
        generate_one(&cmd, &model, &tok, &plan, &prompt, seed)?;
    }
    Ok(())
}

/// One generation of `dlm generate` (repeated for `--samples`).
fn generate_one(
    cmd: &GenerateCmd,
    model: &Model,
    tok: &Tokenizer,
    plan: &DecodeMode,
    prompt: &[u32],
    seed: Option<u64>,
) -> Result<(), String> {
    let sampling = SamplingParams {
        temperature: cmd.temperature,
        top_k: cmd.top_k,
        top_p: cmd.top_p,
        min_p: cmd.min_p,
        repetition_penalty: cmd.repeat_penalty,
        seed,
    };
    let stdout = std::io::stdout();
    let json_out = cmd.json;
    let mut on_text = |piece: &str| {
        if !json_out {
            let mut out = stdout.lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    };
    let (generation, mode) = match *plan {
        DecodeMode::Ar => {
            let params = GenerateParams {
                max_tokens: cmd.max_tokens,
                stop: cmd.stop.clone(),
                sampling,
            };
            (
                engine::generate_ar(model, tok, prompt, &params, &mut on_text)
                    .map_err(|e| e.to_string())?,
                "ar",
            )
        }
        DecodeMode::Dlm {
            mask_id,
            block_size,
        } => {
            let params = DlmParams {
                block_size,
                small_block_size: cmd.decode.small_block_size,
                threshold: cmd.decode.threshold,
                max_tokens: cmd.max_tokens,
                stop: cmd.stop.clone(),
                sampling,
                use_block_cache: cmd.decode.use_block_cache,
            };
            let visual = cmd.visual;
            let mut on_step = |state: &BlockState| {
                if visual {
                    eprintln!(
                        "[block {} | forward {}{}] {}",
                        state.block_index,
                        state.forward_passes,
                        if state.is_final { " | final" } else { "" },
                        render_block(tok, state)
                    );
                }
            };
            (
                engine::generate_dlm(
                    model,
                    tok,
                    prompt,
                    mask_id,
                    &params,
                    &mut on_text,
                    &mut on_step,
                )
                .map_err(|e| e.to_string())?,
                "dlm",
            )
        }
    };
    let s = &generation.stats;
    let per_forward = if s.forward_passes > 0 {
        s.generated_tokens as f64 / s.forward_passes as f64
    } else {
        0.0
    };
    if cmd.json {
        let value = json!({
            "mode": mode,
            "prompt_tokens": generation.prompt,
            "tokens": generation.tokens,
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "stats": {
                "prompt_tokens": s.prompt_tokens,
                "generated_tokens": s.generated_tokens,
                "forward_passes": s.forward_passes,
                "tokens_per_forward": per_forward,
                "prefill_seconds": s.prefill_seconds,
                "decode_seconds": s.decode_seconds,
                "prefill_tokens_per_second": s.prefill_tokens_per_second(),
                "decode_tokens_per_second": s.decode_tokens_per_second(),
            },
        });
        println!("{value}");
    } else {
        println!();
    }
    eprintln!(
        "{mode}: prefill {} tokens, {:.1} tokens/s | decode {} tokens, {:.1} tokens/s | {} forward passes, {:.2} tokens/forward | finish: {:?}",
        s.prompt_tokens,
        s.prefill_tokens_per_second(),
        s.generated_tokens,
        s.decode_tokens_per_second(),
        s.forward_passes,
        per_forward,
        generation.finish_reason
    );
    Ok(())
}

/// One block as text, masks as ▒.
fn render_block(tok: &Tokenizer, state: &BlockState) -> String {
    state
        .tokens
        .iter()
        .map(|&t| match tok.token_text(t) {
            _ if t == state.mask_id => "▒".to_string(),
            Some(text) => text
                .replace(['▁', 'Ġ'], " ")
                .replace('Ċ', "⏎")
                .replace("<0x0A>", "⏎"),
            None => "?".to_string(),
        })
        .collect()
}

/// Runs `dlm tokenize`.
pub fn tokenize(path: &Path, text: &str, bos: bool, as_json: bool) -> Result<(), String> {
    let file = gguf::GgufFile::open(path).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&file.metadata).map_err(|e| e.to_string())?;
    let ids = tok.encode(text, bos).map_err(|e| e.to_string())?;
    if as_json {
        let pieces: Vec<Option<&str>> = ids.iter().map(|id| tok.token_text(*id)).collect();
        println!("{}", json!({"ids": ids, "tokens": pieces}));
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
    }
    Ok(())
}
