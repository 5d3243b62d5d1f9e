//! Everything that can go wrong while converting, each case naming the file, key or tensor at fault.

use std::path::PathBuf;

/// A conversion failure. Every message names what is wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A required file is missing from the checkpoint directory.
    #[error("{dir}: missing {what}")]
    MissingFile {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// `config.json` (or another JSON file) lacks a key or has a value of the wrong kind.
    #[error("{file}: {problem}")]
    Config {
        /// The file involved (e.g. `config.json`).
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// The checkpoint's architecture is not one this converter knows.
    #[error("unsupported architecture `{0}`; supported: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, BitNetForCausalLM, BitnetForCausalLM, Fast_dLLM_QwenForCausalLM")]
    UnsupportedArchitecture(String),
    /// A safetensors file is malformed.
    #[error("{path}: invalid safetensors file: {problem}")]
    Safetensors {
        /// The shard involved.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A tensor is missing, unexpected, or has the wrong shape or dtype.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The Hugging Face tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The tokenizer files are missing, malformed or inconsistent with the model.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A ternary output type was asked for a checkpoint that was not trained ternary.
    #[error("refusing --outtype {outtype}: this {arch} checkpoint was not trained with ternary (BitNet b1.58) weights, so packing it to ternary would destroy the model. Use f32/f16/bf16/q8_0, convert a BitNet checkpoint, or pass --force-ternary to ternarize anyway (absmean rule) if you know what you are doing")]
    NotTernary {
        /// The requested output type.
        outtype: String,
        /// The source architecture.
        arch: String,
    },
    /// The target engine cannot run this combination of model and options.
    #[error("refusing --target {target}: {problem}")]
    Target {
        /// The engine asked for.
        target: crate::target::Target,
        /// Why it cannot run the file, and what to do instead.
        problem: String,
    },
    /// Writing the GGUF failed.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// A format codec refused the data.
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
}

impl ConvertError {
    pub(crate) fn config(file: &str, problem: impl Into<String>) -> Self {
        ConvertError::Config {
            file: file.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn tensor(name: &str, problem: impl Into<String>) -> Self {
        ConvertError::Tensor {
            name: name.to_string(),
            problem: problem.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ConvertError>;
