//! The one error type of this crate.

/// Everything that can go wrong while loading a tokenizer, encoding, decoding or rendering a chat
/// template. Messages name the GGUF key, token id or template involved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A GGUF metadata key is missing or has the wrong type.
    #[error("GGUF tokenizer metadata: {0}")]
    Metadata(#[from] gguf::GgufError),
    /// The GGUF tokenizer keys are present but inconsistent (e.g. an id outside the vocabulary,
    /// a merge naming an unknown token).
    #[error("invalid GGUF tokenizer: {0}")]
    InvalidVocab(String),
    /// The vocabulary kind or pre-tokenizer is one this crate cannot build.
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    /// `tokenizer.huggingface.json` (a Hugging Face `tokenizer.json`) could not be loaded.
    #[error("tokenizer.json could not be loaded: {0}")]
    HfJson(String),
    /// The `tokenizers` library failed to encode the text.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The `tokenizers` library failed to decode the ids.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// A token id is not part of the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownId {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// The chat template does not compile or failed while rendering.
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template called `raise_exception(message)`: the conversation is not one the
    /// template accepts (e.g. roles that do not alternate). The message is the template's own.
    #[error("chat template rejected the conversation: {0}")]
    TemplateException(String),
}

/// Converts an error of the `tokenizers` library (a boxed error) into its message.
pub(crate) fn tk_message(e: tokenizers::Error) -> String {
    e.to_string()
}
