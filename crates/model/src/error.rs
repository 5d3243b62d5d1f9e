//! Load and forward errors.

/// What can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The GGUF is unreadable or lacks a key.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// A weight cannot be used by the kernels.
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
    /// `general.architecture` is not one this engine runs.
    #[error("unsupported architecture `{0}`; this engine runs llama, qwen2, qwen3, bitnet-b1.58, bitnet-25 and bitnet")]
    UnsupportedArch(String),
    /// The hyper-parameters are inconsistent.
    #[error("model config: {0}")]
    Config(String),
    /// A tensor is missing or malformed.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The GGUF tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A forward request is invalid (positions, token ids, context).
    #[error("{0}")]
    Request(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
