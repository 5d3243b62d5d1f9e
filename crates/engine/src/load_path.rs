//! The whole path from a GGUF file to generated tokens in one call, for the fuzz target and the
//! mutation sweep (`tests/load_path_sweep.rs`): open → tokenizer from metadata → chat template →
//! render → tokenize → config and weights → decoding mode → one autoregressive forward → one
//! Fast-dLLM v2 block-diffusion step. Every stage is the production code `dlm generate` and
//! `dlm_server` run ([`load_model_file`], [`ChatTemplate::from_gguf`], [`choose_mode`],
//! [`generate_ar`], [`generate_dlm`]), with the server's defaults, so a hostile file that gets
//! through here gets through them; any failure is an `Err`, never a panic.

use gguf::GgufFile;
use tokenizer::{ChatMessage, ChatTemplate};

use crate::setup::{choose_mode, load_model_file, DecodeMode};
use crate::{generate_ar, generate_dlm, DlmParams, EngineError, GenerateParams};

/// The server's default sub-block size (`--small-block-size`).
const SMALL_BLOCK_SIZE: usize = 8;

/// What one pass through the load path produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPathReport {
    /// `general.architecture`.
    pub arch: String,
    /// Tokens of the tokenizer.
    pub vocab_size: usize,
    /// The rendered chat prompt.
    pub chat_text: String,
    /// Its token ids (the prompt both decoders ran on).
    pub prompt: Vec<u32>,
    /// The decoding mode the server would choose by default.
    pub mode: DecodeMode,
    /// The token of the autoregressive forward (none when it produced an end-of-generation token).
    pub ar_tokens: Vec<u32>,
    /// The tokens of the block-diffusion step (empty in autoregressive mode).
    pub dlm_tokens: Vec<u32>,
}

/// [`load_path`] on the bytes of a GGUF file held in memory.
pub fn load_path_bytes(bytes: Vec<u8>) -> Result<LoadPathReport, EngineError> {
    let name = "<in-memory GGUF>";
    let file = GgufFile::from_bytes(bytes).map_err(|e| EngineError::Load {
        path: name.into(),
        message: model::ModelError::from(e).to_string(),
    })?;
    load_path(file, name)
}

/// Runs an opened GGUF through the whole load path (see the module documentation) and returns
/// what each stage produced; `name` labels load errors. A model with a mask token is decoded by
/// block diffusion with its trained block size (or 32) and sub-blocks of 8, exactly as the server
/// would by default; both decoders generate one token.
pub fn load_path(file: GgufFile, name: &str) -> Result<LoadPathReport, EngineError> {
    let (model, tok) = load_model_file(file, name)?;
    let template =
        ChatTemplate::from_gguf(&model.file().metadata, &tok).map_err(|e| EngineError::Load {
            path: name.to_string(),
            message: format!("chat template: {e}"),
        })?;
    let messages = [
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Once upon a time, the cat said hello."),
    ];
    let chat_text = template.render(&messages, true)?;
    let mut prompt = tok.encode(&chat_text, false)?;
    if prompt.is_empty() {
        // A template that renders nothing: fall back to a completion prompt, as `dlm generate -p`.
        prompt = tok.encode("Once upon a time", tok.add_bos_token())?;
    }
    // The prompt's text must come back out of the detokenizer.
    tok.decode(&prompt, false)?;
    let (mode, _warning) = choose_mode(&model, &tok, None, None, None)?;

    let ar = generate_ar(
        &model,
        &tok,
        &prompt,
        &GenerateParams {
            max_tokens: 1,
            ..Default::default()
        },
        &mut |_| {},
    )?;
    let dlm_tokens = match mode {
        DecodeMode::Ar => Vec::new(),
        DecodeMode::Dlm {
            mask_id,
            block_size,
        } => {
            let small_block_size = SMALL_BLOCK_SIZE.min(block_size);
            if !block_size.is_multiple_of(small_block_size) {
                return Err(EngineError::Params(format!(
                    "the sub-block size {small_block_size} must divide the block size {block_size}"
                )));
            }
            let params = DlmParams {
                block_size,
                small_block_size,
                max_tokens: 1,
                ..Default::default()
            };
            generate_dlm(
                &model,
                &tok,
                &prompt,
                mask_id,
                &params,
                &mut |_| {},
                &mut |_| {},
            )?
            .tokens
        }
    };
    Ok(LoadPathReport {
        arch: model.config.arch.clone(),
        vocab_size: tok.vocab_size(),
        chat_text,
        prompt,
        mode,
        ar_tokens: ar.tokens,
        dlm_tokens,
    })
}
