//! The decoder: one config-driven forward for the llama family (llama, qwen2, qwen3, BitNet
//! b1.58), over weights that stay memory-mapped in the GGUF.
//!
//! Differences between architectures are flags in [`ModelConfig`]: q/k/v biases (qwen2),
//! per-head q/k RMSNorm (qwen3), sub-norms, squared ReLU and BitLinear int8 inputs (BitNet),
//! interleaved (llama) or NEOX RoPE. [`Model::forward`] runs any run of new tokens after a
//! sequence's [`KvCache`] with causal or block-causal attention — the primitive both the
//! autoregressive and the Fast-dLLM v2 decoders are built on.

mod cache;
pub mod config;
pub mod error;
mod forward;
pub mod weights;

use std::path::Path;

use gguf::GgufFile;

pub use cache::KvCache;
pub use config::{Activation, ModelConfig, RopeStyle};
pub use error::{ModelError, Result};
pub use forward::{Attention, Batch, Logits, SeqBatch};
use weights::Weights;

/// A loaded model: the mapped file, its config and the located tensors.
pub struct Model {
    /// Architecture and shapes.
    pub config: ModelConfig,
    file: GgufFile,
    weights: Weights,
    inv_freq: Vec<f32>,
}

impl Model {
    /// Opens and checks a GGUF model, its bytes where [`gguf::Residency::from_env`] says (huge
    /// pages by default).
    pub fn load(path: &Path) -> Result<Model> {
        Model::from_file(GgufFile::open_as(path, gguf::Residency::from_env())?)
    }

    /// Checks an already opened GGUF and locates every tensor.
    pub fn from_file(file: GgufFile) -> Result<Model> {
        let config = ModelConfig::from_metadata(&file.metadata, |n| file.tensor(n).is_some())?;
        let weights = Weights::load(&file, &config)?;
        let half = config.rope_dims / 2;
        let inv_freq = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_base
                    .powf(2.0 * i as f32 / config.rope_dims as f32)
            })
            .collect();
        Ok(Model {
            config,
            file,
            weights,
            inv_freq,
        })
    }

    /// The GGUF file (its metadata holds the tokenizer and DLM settings).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// A fresh cache for one sequence of up to `capacity` positions (at most the trained context).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.config.n_layers, self.config.kv_dim(), capacity)
    }
}
