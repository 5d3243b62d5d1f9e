//! The trainer's error type: every message names the file, key or tensor at fault.

use std::path::{Path, PathBuf};

/// Anything that can go wrong while loading, training or exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or lacks a key.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The checkpoint does not fit the model (missing, unknown or mis-shaped tensors).
    #[error("{path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },
    /// The configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// The training data cannot be used.
    #[error("data: {0}")]
    Data(String),
    /// One line (1-based) of a data file is malformed.
    #[error("{path}:{line}: {message}")]
    DataLine {
        /// The data file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The tokenizer or chat template failed (loading, encoding, rendering).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed (a shape bug or an unavailable device).
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A JSON error in `path`.
    pub fn json(path: &Path, message: impl Into<String>) -> TrainError {
        TrainError::Json {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// A malformed line `line` (1-based) of the data file `path`.
    pub fn data_line(path: &Path, line: usize, message: impl Into<String>) -> TrainError {
        TrainError::DataLine {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A checkpoint error in `path`.
    pub fn checkpoint(path: &Path, message: impl Into<String>) -> TrainError {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
