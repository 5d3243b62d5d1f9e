//! `dlm generate` and `dlm tokenize`: run a model from the command line.

use std::io::Write;
use std::path::Path;

use engine::{GenerateParams, SamplingParams};
use model::Model;
use serde_json::json;
use tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

/// What `dlm generate` was asked to do.
pub struct GenerateArgs {
    /// Raw text prompt (`-p`).
    pub prompt: Option<String>,
    /// A user message rendered with the chat template (`--chat`).
    pub chat: Option<String>,
    /// Optional system message for `--chat`.
    pub system: Option<String>,
    /// Decoding settings.
    pub params: GenerateParams,
    /// Print JSON instead of streaming text.
    pub json: bool,
}

fn load(path: &Path) -> Result<(Model, Tokenizer), String> {
    let model = Model::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(&model.file().metadata).map_err(|e| format!("{}: {e}", path.display()))?;
    if tok.vocab_size() > model.config.vocab {
        return Err(format!(
            "{}: the tokenizer has {} tokens but the model's embedding has {} rows; the file is inconsistent",
            path.display(),
            tok.vocab_size(),
            model.config.vocab
        ));
    }
    Ok((model, tok))
}

/// Runs `dlm generate`.
pub fn generate(path: &Path, args: GenerateArgs) -> Result<(), String> {
    let (model, tok) = load(path)?;
    let prompt: Vec<u32> = match (&args.prompt, &args.chat) {
        (Some(_), Some(_)) => return Err("give either -p/--prompt or --chat, not both".into()),
        (Some(text), None) => tok.encode(text, tok.add_bos_token()).map_err(|e| e.to_string())?,
        (None, Some(message)) => {
            let template = ChatTemplate::from_gguf(&model.file().metadata, &tok).map_err(|e| e.to_string())?;
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(ChatMessage { role: "system".into(), content: system.clone() });
            }
            messages.push(ChatMessage { role: "user".into(), content: message.clone() });
            let text = template.render(&messages, true).map_err(|e| e.to_string())?;
            tok.encode(&text, false).map_err(|e| e.to_string())?
        }
        (None, None) => match tok.bos_id() {
            Some(bos) => vec![bos],
            None => return Err("this model has no BOS token: give a prompt with -p or --chat".into()),
        },
    };
    let stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        if !args.json {
            let mut out = stdout.lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    };
    let generation = engine::generate_ar(&model, &tok, &prompt, &args.params, &mut on_text).map_err(|e| e.to_string())?;
    let s = &generation.stats;
    if args.json {
        let value = json!({
            "prompt_tokens": generation.prompt,
            "tokens": generation.tokens,
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "stats": {
                "prompt_tokens": s.prompt_tokens,
                "generated_tokens": s.generated_tokens,
                "forward_passes": s.forward_passes,
                "tokens_per_forward": if s.forward_passes > 0 { s.generated_tokens as f64 / s.forward_passes as f64 } else { 0.0 },
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
        "prefill: {} tokens, {:.1} tokens/s | decode: {} tokens, {:.1} tokens/s, {} forward passes | finish: {:?}",
        s.prompt_tokens,
        s.prefill_tokens_per_second(),
        s.generated_tokens,
        s.decode_tokens_per_second(),
        s.forward_passes,
        generation.finish_reason
    );
    Ok(())
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

/// Default sampling values for the CLI.
pub fn sampling(temperature: f32, top_k: usize, top_p: f32, min_p: f32, repeat_penalty: f32, seed: Option<u64>) -> SamplingParams {
    SamplingParams { temperature, top_k, top_p, min_p, repetition_penalty: repeat_penalty, seed }
}
