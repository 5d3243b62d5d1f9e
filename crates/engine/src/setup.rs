//! Loading a model for decoding and choosing how to decode it, shared by `dlm generate`,
//! `dlm bench` and the server so they agree on every check and default.

use std::path::Path;

use gguf::{GgufFile, Residency};
use model::{Model, ModelError};
use tokenizer::Tokenizer;

use crate::dlm::resolve_mask_id;
use crate::EngineError;

/// Opens a GGUF model and its tokenizer, refusing a tokenizer larger than the embedding. The
/// file is read into huge pages unless `DLM_MMAP` asks for a mapping ([`Residency::from_env`]).
pub fn load_model(path: &Path) -> Result<(Model, Tokenizer), EngineError> {
    let name = path.display().to_string();
    let file = GgufFile::open_as(path, Residency::from_env()).map_err(|e| EngineError::Load {
        path: name.clone(),
        message: ModelError::from(e).to_string(),
    })?;
    load_model_file(file, &name)
}

/// [`load_model`] on an already opened (or in-memory) GGUF; `name` labels its errors.
pub fn load_model_file(file: GgufFile, name: &str) -> Result<(Model, Tokenizer), EngineError> {
    let at = |message: String| EngineError::Load {
        path: name.to_string(),
        message,
    };
    let model = Model::from_file(file).map_err(|e| at(e.to_string()))?;
    let tok = Tokenizer::from_gguf(&model.file().metadata).map_err(|e| at(e.to_string()))?;
    if tok.vocab_size() > model.config.vocab {
        return Err(at(format!(
            "the tokenizer has {} tokens but the model's embedding has {} rows; the file is inconsistent",
            tok.vocab_size(),
            model.config.vocab
        )));
    }
    Ok((model, tok))
}

/// The block size the model was trained with (`dlm.block_size`), if it says.
pub fn trained_block_size(model: &Model) -> Option<usize> {
    model
        .file()
        .metadata
        .opt_u32("dlm.block_size")
        .ok()
        .flatten()
        .map(|b| b as usize)
}

/// A requested decoding mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeChoice {
    /// Block diffusion.
    Dlm,
    /// Autoregressive.
    Ar,
}

/// How to decode, resolved against a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeMode {
    /// Autoregressive.
    Ar,
    /// Block diffusion with this mask token and block size.
    Dlm {
        /// The mask token.
        mask_id: u32,
        /// Positions per block.
        block_size: usize,
    },
}

/// Resolves a mode, an explicit mask token id and block size against the model: block diffusion
/// by default when the model has a mask token (or one is given), autoregression otherwise. The
/// second value is a warning for the user (a block size other than the trained one).
pub fn choose_mode(
    model: &Model,
    tok: &Tokenizer,
    mode: Option<ModeChoice>,
    mask_token_id: Option<u32>,
    block_size: Option<usize>,
) -> Result<(DecodeMode, Option<String>), EngineError> {
    let mode = match mode {
        Some(m) => m,
        None if mask_token_id.is_some() || tok.mask_id().is_some() => ModeChoice::Dlm,
        None => ModeChoice::Ar,
    };
    if mode == ModeChoice::Ar {
        return Ok((DecodeMode::Ar, None));
    }
    let mask_id = resolve_mask_id(tok, mask_token_id)?;
    let trained = trained_block_size(model);
    let block_size = block_size.or(trained).unwrap_or(32);
    let warning = trained.filter(|t| *t != block_size).map(|t| {
        format!(
            "the model was trained with block size {t} but --block-size is {block_size}; quality drops when they differ (the Fast-dLLM v2 paper measured it): change --small-block-size instead"
        )
    });
    Ok((
        DecodeMode::Dlm {
            mask_id,
            block_size,
        },
        warning,
    ))
}
